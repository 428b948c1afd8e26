"""Korean test speech, synthesized at test time with espeak-ng (and sox for other formats).

Nothing is committed: the WAVs are built once per session into a temporary directory. espeak
writes 22050 Hz mono; sox makes the 16 kHz, 44.1 kHz and stereo copies, so the tests prove
that the recognizer takes any rate without resampling.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ESPEAK_RATE = 22050
"""espeak-ng's native output rate."""


@dataclass(frozen=True)
class SpeechWav:
    """One synthesized utterance: what was said and where the WAV is."""

    text: str
    path: Path
    rate: int
    channels: int


def require_tools() -> None:
    """Fail (not skip) when a tool is missing: the offline speech tests are the point here."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing programs {missing}: apt-get install espeak-ng sox", pytrace=False)


def synthesize(
    text: str, directory: Path, rate: int = ESPEAK_RATE, channels: int = 1, voice: str = "ko"
) -> SpeechWav:
    """Speak ``text`` with espeak-ng into ``directory`` at ``rate`` Hz with ``channels``."""
    key = hashlib.sha1(f"{voice}:{text}".encode()).hexdigest()[:12]
    native = directory / f"{key}-{ESPEAK_RATE}-1.wav"
    if not native.exists():
        subprocess.run(
            ["espeak-ng", "-v", voice, "-w", str(native), text],
            check=True,
            capture_output=True,
        )
    if rate == ESPEAK_RATE and channels == 1:
        return SpeechWav(text, native, rate, channels)
    path = directory / f"{key}-{rate}-{channels}.wav"
    if not path.exists():
        # -G guards against clipping in the rate conversion; -b 16 keeps plain 16-bit PCM;
        # -R seeds sox's dither the same every time: with a random dither the same phrase
        # decoded differently from run to run, and Vosk's answers must be repeatable here.
        command = ["sox", "-R", "-G", str(native), "-b", "16", "-r", str(rate)]
        subprocess.run(
            [*command, "-c", str(channels), str(path)],
            check=True,
            capture_output=True,
        )
    return SpeechWav(text, path, rate, channels)


class SpeechFactory:
    """Synthesizes on demand into one session directory, each (text, rate, channels) once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, text: str, rate: int = ESPEAK_RATE, channels: int = 1) -> SpeechWav:
        return synthesize(text, self.directory, rate, channels)


# Named apart from its fixture name so that tests can import it without shadowing warnings.
@pytest.fixture(scope="session", name="korean_speech")
def korean_speech_fixture(tmp_path_factory: pytest.TempPathFactory) -> SpeechFactory:
    """A session-wide factory of Korean speech WAVs (espeak-ng voice ``ko``)."""
    require_tools()
    return SpeechFactory(tmp_path_factory.mktemp("speech"))
