"""bench/listening.py's pieces on a few seconds of real audio: the chatter corpus and its
synthesis, babble at a measured SNR, the command segments, false-activation counting through
the real daemon (Vosk, the Korean intent model) and the worker's CPU and memory figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agent.recognizer import Transcript, Word, load_grammar
from bench.chatter import PAUSE, RATE, Voice, chatter_wav, sentences, speak, wav_seconds
from bench.listening import (
    LEAD,
    MODEL,
    TAIL,
    ChatterRun,
    Condition,
    Setup,
    Unavailable,
    command_segments,
    command_table,
    config_text,
    cpu_table,
    detects,
    engine_config,
    false_activation_table,
    listen_chatter,
    micro_missing,
    new_daemon,
    padded,
    right,
    run_worker,
    spec_commands,
)
from bench.mixing import TALKERS, add, babble, power, scaled, trim
from tests.agent.speech import require_tools

COMMAND = "노래 틀어"
"""A command that espeak-ng says and Vosk decodes exactly (MusicPlay)."""


@pytest.fixture(autouse=True)
def bench_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Synthesized audio goes to a fresh folder, not the user's cache."""
    require_tools()
    folder = tmp_path / "cache"
    monkeypatch.setenv("VOICE_AGENT_BENCH_CACHE", str(folder))
    return folder


def test_the_chatter_holds_no_sentence_of_the_spec() -> None:
    texts = sentences()
    assert len(texts) >= 900 and len(set(texts)) == len(texts)
    said = [" " + " ".join(re.sub(r"[^\w\s]", " ", text).split()) + " " for text in texts]
    # Commands and the spec's own out-of-scope examples, each as whole words.
    inside = [(spec, text) for spec in load_grammar(MODEL) for text in said if f" {spec} " in text]
    assert inside == []


def test_chatter_is_the_sentences_with_seeded_pauses(bench_cache: Path) -> None:
    texts = sentences()[:3]
    path = chatter_wav(Voice("ko"), texts=texts, seed=1)
    speech = sum(len(speak(text)) for text in texts) / RATE
    pauses = wav_seconds(path) - speech
    assert len(texts) * PAUSE[0] <= pauses <= len(texts) * PAUSE[1]
    assert path.parent == bench_cache
    assert chatter_wav(Voice("ko"), texts=texts, seed=1) == path  # cached
    assert wav_seconds(chatter_wav(Voice("ko"), texts=texts, seed=2)) != wav_seconds(path)


@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0])
def test_babble_sits_the_asked_decibels_below_the_voiced_speech(snr: float) -> None:
    speech = padded(speak(COMMAND), 0.5, 0.5)
    noise = babble(len(speech) / RATE, talkers=TALKERS[:2])
    babbled = scaled(speech, noise, snr)
    mixed = add(speech, babbled.samples)
    # Measured afresh from the mix itself: what was added, against the voiced speech.
    added = mixed.astype(np.float64) - speech
    assert 10 * np.log10(power(trim(speech)) / power(added)) == pytest.approx(snr, abs=0.1)
    assert babbled.snr == pytest.approx(snr, abs=0.01)


def test_the_command_has_the_same_babble_alone_and_after_the_wake_word() -> None:
    command, wake = speak(COMMAND), speak("okay nabu", Voice("en-us"))
    noise = babble(10.0, talkers=TALKERS[:2])
    clean = command_segments([command], wake, noise, None)
    assert np.array_equal(clean.alone[0], padded(command, LEAD, TAIL))
    noisy = command_segments([command], wake, noise, 10.0)
    assert noisy.measured == pytest.approx(10.0, abs=0.01)
    tail = len(command) + int(TAIL * RATE)
    assert np.array_equal(noisy.alone[0][-tail:], noisy.woken[0][-tail:])
    assert not np.array_equal(noisy.alone[0], clean.alone[0])


def test_every_command_of_the_spec_is_in_the_model_grammar() -> None:
    commands = spec_commands()
    assert len(commands) == len({c.text for c in commands}) > 100
    assert {c.intent for c in commands} == {"LightOn", "LightOff", "MusicPlay", "MusicStop"}


def test_a_command_naming_no_room_is_right_when_it_acts_on_the_bench_room() -> None:
    daemon, _ = new_daemon(engine_config("none", Setup()))
    words = tuple(Word(word, 0.0, 0.0, 1.0) for word in ["불", "켜", "줘"])
    outcome = daemon.handle(Transcript.from_words(words, 1.0, 0.0, 0.0))
    example = next(e for e in spec_commands() if e.text == "불 켜 줘")
    assert outcome.decision.accepted
    assert right(outcome, example, daemon.classifier.fill)
    # Without the Pi's room the acted-on room is a slot nobody said: not "as said".
    assert not right(outcome, example)


def chatter_with(*texts: str) -> Path:
    """A chatter WAV of ``texts`` (in the test's cache folder)."""
    return chatter_wav(Voice("ko"), texts=list(texts))


def test_a_command_inside_chatter_counts_as_an_activation() -> None:
    wav = chatter_with("오늘따라 유난히 하늘이 파랗고 높아 보여요.", COMMAND)
    run = listen_chatter("none", [wav], Setup())
    assert run.accepted >= 1 and run.actions >= 1
    assert any(intent == "MusicPlay" for _, intent, _ in run.heard)
    assert run.audio_seconds == pytest.approx(wav_seconds(wav))


def test_the_worker_reports_its_own_cpu_time_and_memory() -> None:
    wav = chatter_with("창가에 둔 화분에서 작은 꽃이 피었어요.")
    run = run_worker("none", [wav], Setup())
    assert run.engine == "none" and run.audio_seconds == pytest.approx(wav_seconds(wav))
    assert 0 < run.cpu_seconds < run.audio_seconds  # Vosk decodes faster than real time
    assert run.rss_mb > 100  # the Vosk model is loaded in the worker, not here
    with pytest.raises(Unavailable, match="unknown engine 'ears'"):
        run_worker("ears", [wav], Setup())


def test_the_micro_path_says_one_line_without_a_wake_word_engine() -> None:
    reason = micro_missing()
    if reason is not None:
        with pytest.raises(Unavailable) as caught:
            config_text("micro", Setup())
        assert "\n" not in str(caught.value) and "micro" in str(caught.value)
        return
    from agent.wakeword import WakeWordDetector  # type: ignore[import-not-found, unused-ignore]

    detector = WakeWordDetector(("okay_nabu",))
    assert detects(detector, padded(speak("okay nabu", Voice("en-us", 160, 50)), LEAD, 1.0))
    assert not detects(detector, padded(speak(sentences()[0]), LEAD, 1.0))


def run(engine: str, hours: float, accepted: int, cpu: float = 1.0) -> ChatterRun:
    return ChatterRun(engine, hours * 3600, 0, accepted, accepted, accepted, cpu, 100.0)


def test_verdicts_follow_the_targets() -> None:
    def mark(line: str) -> str:
        return line.rstrip(" |").rsplit("|", 1)[-1].strip()

    lines = false_activation_table(
        [run("micro", 1.5, 0), run("micro", 2.5, 0), run("micro", 3, 1), run("none", 1, 2)], {}
    )
    assert [mark(line) for line in lines[2:6]] == ["needs ≥ 2 h", "met", "**missed**", "met"]
    assert mark(false_activation_table([run("none", 1, 3)], {})[2]) == "**missed**"
    cpu = cpu_table([run("micro", 1, 0, cpu=90.0), run("none", 1, 0, cpu=360.0)])
    assert mark(cpu[2]) == "met" and "0.25×" in cpu[2]
    assert mark(cpu_table([run("micro", 1, 0, cpu=91.0), run("none", 1, 0, cpu=360.0)])[2]) == (
        "**missed**"
    )


def test_the_command_target_is_judged_on_what_the_daemon_heard() -> None:
    def row(heard: int, accepted_of_heard: int) -> Condition:
        return Condition("none", None, 100, 30, 40, 25, 0, 0, None, heard, accepted_of_heard)

    def mark(line: str) -> str:
        return line.rstrip(" |").rsplit("|", 1)[-1].strip()

    lines = command_table([row(20, 19), row(20, 18), row(0, 0)], {})
    assert [mark(line) for line in lines[2:5]] == ["met", "**missed**", "none heard exactly"]
    assert "| 20 | 95.0 % (19) |" in lines[2]
