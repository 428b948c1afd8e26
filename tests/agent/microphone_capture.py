"""Capture from a microphone and print what the Korean Vosk model hears: a helper process.

PortAudio reads the sound server's environment (PULSE_SERVER, ALSA config) once per process,
so test_microphone.py runs this script with the environment of its own PulseAudio daemon.
Protocol on stdout, one line each: ``ready <device name> <rate> <channels>`` once audio flows,
then one JSON transcript (``{"text": ...}``) per utterance; exit status 0 after
``--utterances`` non-empty transcripts, 3 when ``--seconds`` pass first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.audio import find_input_device, microphone_source  # noqa: E402
from agent.recognizer import (  # noqa: E402
    Recognizer,
    RecognizerSettings,
    load_grammar,
    packaged_model_dir,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None, help="input device index or name")
    parser.add_argument("--grammar", type=Path, required=True, help="intent model directory")
    parser.add_argument("--utterances", type=int, default=1, help="stop after this many")
    parser.add_argument("--seconds", type=float, default=30.0, help="give up after this long")
    args = parser.parse_args()

    recognizer = Recognizer(RecognizerSettings(packaged_model_dir(), load_grammar(args.grammar)))
    info = find_input_device(args.device)
    deadline = time.monotonic() + args.seconds
    ready = False
    heard = 0
    for chunk in microphone_source(args.device):
        if not ready:
            # Only now is the stream really open: the test starts playing after this line.
            print(f"ready {info.name} {chunk.rate} {chunk.channels}", flush=True)
            ready = True
        transcript = recognizer.feed(chunk)
        if transcript is not None:
            print(json.dumps({"text": transcript.text}, ensure_ascii=False), flush=True)
            heard += bool(transcript.text)
            if heard == args.utterances:
                return 0
        if time.monotonic() > deadline:
            final = recognizer.finish()
            if final is not None:
                print(json.dumps({"text": final.text}, ensure_ascii=False), flush=True)
            return 3
    return 3


if __name__ == "__main__":
    sys.exit(main())
