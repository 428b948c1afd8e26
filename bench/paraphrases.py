"""What English smart-home models make of commands phrased with words their spec never uses.

A spec lists the ways its author thought of; people say "switch on the kitchen lamp" or
"boost the heating" anyway. Each model directory gets 40 such paraphrases of the example
spec's intents (examples/en/smart-home.yaml) and 20 out-of-scope questions, classified
exactly as the daemon does (runtime featurizer, Pi interpreter, threshold, required
slots), and the table counts: accepted with the right intent, rejected, accepted wrongly.
Rejecting a paraphrase is safe (the user says it again); accepting it wrongly is not.

    python bench/paraphrases.py models/smart-home-en /tmp/minilm-branch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.classifier import IntentClassifier  # noqa: E402

PARAPHRASES = (
    ("switch on the kitchen lamp", "LightOn"),
    ("turn on the lamp in the bedroom", "LightOn"),
    ("illuminate the office", "LightOn"),
    ("brighten up the hallway", "LightOn"),
    ("switch off the lamp in the garage", "LightOff"),
    ("turn off the bathroom lamps", "LightOff"),
    ("darken the kitchen", "LightOff"),
    ("lamps off in the bedroom", "LightOff"),
    ("open the kitchen drapes", "CoverOpen"),
    ("lift the bedroom blinds", "CoverOpen"),
    ("close the office drapes", "CoverClose"),
    ("drop the garage shutters", "CoverClose"),
    ("heat up the house", "ThermostatUp"),
    ("it is chilly in here", "ThermostatUp"),
    ("i am shivering", "ThermostatUp"),
    ("boost the heating", "ThermostatUp"),
    ("it is boiling in here", "ThermostatDown"),
    ("i am sweating", "ThermostatDown"),
    ("make it cooler in the house", "ThermostatDown"),
    ("cut the heating", "ThermostatDown"),
    ("play a tune", "MediaPlay"),
    ("put on some songs", "MediaPlay"),
    ("play some tunes", "MediaPlay"),
    ("halt the music", "MediaPause"),
    ("stop the tune", "MediaPause"),
    ("mute the song", "MediaPause"),
    ("skip this tune", "MediaNext"),
    ("next tune", "MediaNext"),
    ("i hate this song", "MediaNext"),
    ("make it noisier", "VolumeUp"),
    ("pump up the volume", "VolumeUp"),
    ("boost the sound", "VolumeUp"),
    ("make it softer", "VolumeDown"),
    ("it is too noisy", "VolumeDown"),
    ("lower the sound", "VolumeDown"),
    ("start a countdown for ten minutes", "TimerStart"),
    ("alert me in five minutes", "TimerStart"),
    ("abort the timer", "TimerCancel"),
    ("forget the timer", "TimerCancel"),
    ("scrap my timers", "TimerCancel"),
)
OUT_OF_SCOPE = (
    "what is the weather like",
    "order a pizza",
    "call my mother",
    "how old is the queen",
    "book a flight to paris",
    "what time is it",
    "tell me a joke",
    "send an email to bob",
    "how do i cook rice",
    "who won the game",
    "translate hello into french",
    "is the bank open",
    "add milk to my shopping list",
    "what is the capital of spain",
    "find a restaurant nearby",
    "read me the news",
    "how far is the moon",
    "set up a meeting with john",
    "buy new shoes",
    "what does this word mean",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every miss")
    args = parser.parse_args()
    print(
        f"{len(PARAPHRASES)} paraphrases of examples/en/smart-home.yaml's intents and"
        f" {len(OUT_OF_SCOPE)} out-of-scope questions, classified as the daemon does\n"
    )
    print("| model | paraphrases right | rejected | wrong | out-of-scope rejected |")
    print("|---|---:|---:|---:|---:|")
    misses: list[str] = []
    for directory in args.models:
        classifier = IntentClassifier.load(directory)
        right = rejected = 0
        for text, intent in PARAPHRASES:
            verdict = classifier.classify(text)
            right += verdict.intent == intent
            rejected += verdict.intent is None
            if verdict.intent != intent:
                got = verdict.intent or f"rejected ({verdict.label} {verdict.confidence:.2f})"
                misses.append(f"{directory}: '{text}' ({intent}) -> {got}")
        refused = sum(classifier.classify(text).intent is None for text in OUT_OF_SCOPE)
        wrong = len(PARAPHRASES) - right - rejected
        print(
            f"| {directory} | {right} / {len(PARAPHRASES)} | {rejected} | {wrong} |"
            f" {refused} / {len(OUT_OF_SCOPE)} |"
        )
    if args.verbose:
        print("\n" + "\n".join(misses))


if __name__ == "__main__":
    main()
