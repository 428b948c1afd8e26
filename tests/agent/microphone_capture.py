"""Capture from a microphone and print what the Korean Vosk model hears: a helper process.

PortAudio reads the sound server's environment (PULSE_SERVER, ALSA config) once per process,
so test_microphone.py runs this script with the environment of its own PulseAudio daemon.
Protocol on stdout, one line each: ``ready <device name> <rate> <channels>`` once audio flows,
then one JSON transcript (``{"text": ...}``) per utterance; exit status 0 after
``--utterances`` non-empty transcripts, 3 when ``--seconds`` pass first. With ``--levels`` it
also prints ``level <rms>`` for every chunk louder than silence, and ``gap`` for each
end-of-stream the source yields while no audio flows (a device unplugged, for instance).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.audio import AudioChunk, find_input_device, microphone_source  # noqa: E402
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
    parser.add_argument("--stall-timeout", type=float, default=10.0, help="reopen after this")
    parser.add_argument("--levels", action="store_true", help="print loud chunks and gaps")
    args = parser.parse_args()
    # The source's warnings and infos (device lost, device back) go to stderr for the test.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    recognizer = Recognizer(RecognizerSettings(packaged_model_dir(), load_grammar(args.grammar)))
    info = find_input_device(args.device)
    deadline = time.monotonic() + args.seconds
    ready = False
    heard = 0
    for chunk in microphone_source(args.device, stall_timeout=args.stall_timeout):
        if not isinstance(chunk, AudioChunk):  # the stream paused: finish the utterance
            if args.levels:
                print("gap", flush=True)
            transcript = recognizer.finish()
        else:
            if not ready:
                # Only now is the stream really open: the test starts playing after this line.
                print(f"ready {info.name} {chunk.rate} {chunk.channels}", flush=True)
                ready = True
            if args.levels:
                samples = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32)
                level = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
                if level > 100:
                    print(f"level {level:.0f}", flush=True)
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
