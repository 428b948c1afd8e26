"""One rule for MQTT topics and the names that go into them, for the build, the model
loader, the runtime and the configuration alike.

MQTT forbids NUL and the wildcards ``+`` and ``#`` in a topic a client publishes to,
reserves topics that start with ``$`` for the broker (``$SYS``) and caps a UTF-8 string
at 65,535 bytes; it advises against control characters, which mosquitto answers by
closing the connection (and a message the broker refuses that way would be resent on
every reconnect). A lone surrogate cannot be encoded as UTF-8 at all. A topic that
breaks the rule is refused where it is written (a spec, a model, a config), never found
at the first command.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "INTENT_NAME_RE",
    "MAX_NAME_CHARS",
    "MAX_TOPIC_BYTES",
    "PLACEHOLDER_RE",
    "SLOT_NAME_RE",
    "filled_topic_problem",
    "level_problem",
    "printable",
    "text_problem",
    "topic_problem",
]

MAX_TOPIC_BYTES: Final = 65_535
"""MQTT's limit on any UTF-8 string, a topic included (a two-byte length prefix)."""
MAX_NAME_CHARS: Final = 256
"""The longest intent or slot name: a name is part of topics (an intent's of
``hermes/intent/<name>``), which must stay within :data:`MAX_TOPIC_BYTES`."""
INTENT_NAME_RE: Final = re.compile(rf"[A-Za-z][A-Za-z0-9_]{{0,{MAX_NAME_CHARS - 1}}}\Z")
"""An intent name: it ends ``hermes/intent/<name>`` and Home Assistant's trigger ids."""
SLOT_NAME_RE: Final = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME_CHARS - 1}}}\Z")
"""A slot name: the ``{slot}`` of a topic or payload template."""
PLACEHOLDER_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``{slot}`` in a topic or payload template."""

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 controls (NUL, line breaks, ESC), DEL and the C1 controls: MQTT's 'SHOULD NOT'."""
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with control characters, line breaks and lone surrogates escaped, so an
    error message that quotes it stays one line and can be written as UTF-8."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def text_problem(text: str, max_bytes: int = MAX_TOPIC_BYTES) -> str | None:
    """Why ``text`` cannot be an MQTT UTF-8 string (None when it can): a NUL or other
    control character, a lone surrogate, or more than ``max_bytes`` bytes of UTF-8."""
    bad = _CONTROL.search(text)
    if bad is not None:
        return f"holds the control character U+{ord(bad.group()):04X}"
    bad = _SURROGATE.search(text)
    if bad is not None:
        return f"holds a lone surrogate (U+{ord(bad.group()):04X}), which is not UTF-8"
    # Each character is at most 4 bytes: most texts never need encoding to be measured.
    if len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
        return f"is longer than {max_bytes} bytes of UTF-8"
    return None


def _published_problem(text: str) -> str | None:
    """What :func:`topic_problem` and :func:`level_problem` share."""
    if not text:
        return "is empty"
    problem = text_problem(text)
    if problem is not None:
        return problem
    for wildcard in "+#":
        if wildcard in text:
            return f"holds the MQTT wildcard '{wildcard}' (not allowed in a published topic)"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (None when it can); ``{slot}`` placeholders
    are plain text here, so a template is checked as written."""
    problem = _published_problem(topic)
    if problem is None and topic.startswith("$"):
        return "starts with '$' (reserved for the broker, like $SYS)"
    return problem


def level_problem(value: str) -> str | None:
    """Why ``value`` cannot fill (part of) one topic level (None when it can): the topic
    rule, and no '/', which would add a level (``first/floor`` in ``home/{room}/set``).
    A leading '$' is left to the check of the whole topic it ends up in."""
    if "/" in value:
        return "holds '/', which would add a topic level"
    return _published_problem(value)


def filled_topic_problem(topic: str, slot: str, value: str) -> str | None:
    """Why ``value`` cannot fill ``{slot}`` in the template ``topic`` (None when it can):
    it breaks a level, or the topic it makes breaks the rule (``$SYS`` first, too long)."""
    problem = level_problem(value)
    if problem is None:
        problem = topic_problem(topic.replace(f"{{{slot}}}", value))
        problem = None if problem is None else f"makes a topic that {problem}"
    return problem
