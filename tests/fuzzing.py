"""Hostile inputs for the three parsers, shared by the fuzz tests and ``bench/fuzz.py``.

Each parser has a strategy that draws what a user, a broken disk or an attacker could hand
it (intent specs, configuration files, audio files and streams), and a ``check_*`` function
that feeds one input to the real parser and returns ``"accepted"`` or ``"refused"``. A
refusal must be the documented error type whose ``str()`` is one line naming the input;
anything else (another exception, a multi-line message) propagates as a crash. The
parsers are imported inside the checks, so importing this module pulls in neither
TensorFlow nor the agent.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from hypothesis import strategies as st

ROOT: Final = Path(__file__).resolve().parents[1]
Outcome = Literal["accepted", "refused"]


def fuzz_settings(examples: int) -> Any:
    """Hypothesis settings for a suite fuzz test: ``examples`` inputs, the same ones on every
    run (derandomized, no example database), no per-example deadline."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_one_line(message: str, prefix: str) -> None:
    """The documented error shape: one line (no line break of any kind) starting with ``prefix``."""
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert message.startswith(prefix), f"does not name {prefix!r}: {message!r}"
    assert "Traceback" not in message, message


# -- mutations of text, shared by the spec and config strategies -----------------------------

ODD_TEXT: Final = (
    "\u2028",  # a Unicode line separator: a line break to str.splitlines()
    "\x85",
    "\r",
    "\t",
    "\x00",
    "\x1b[2J",
    "\ufeff",
    "\u202e",  # right-to-left override
    "\U0001f4a1",
    "한국어",
    "\udcff",  # a lone surrogate: not encodable as UTF-8 (written as "?")
)


@dataclass(frozen=True)
class Mutation:
    """One edit of a document's lines: ``kind`` at relative position ``where`` with ``text``."""

    kind: str
    where: float
    text: str = ""

    def apply(self, lines: list[str]) -> None:
        if not lines:
            lines.append(self.text)
            return
        i = min(int(self.where * len(lines)), len(lines) - 1)
        line = lines[i]
        if self.kind == "drop":
            del lines[i]
        elif self.kind == "duplicate":
            lines.insert(i, line)
        elif self.kind == "swap":
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], line
        elif self.kind == "value":
            # Replace what follows the first ':' or '=' (a YAML or TOML value).
            cut = min((p for p in (line.find(": "), line.find(" = ")) if p >= 0), default=-1)
            sep = ": " if cut >= 0 and line[cut] == ":" else " = "
            lines[i] = (line[:cut] + sep + self.text) if cut >= 0 else line + self.text
        elif self.kind == "insert_line":
            lines.insert(i, self.text)
        elif self.kind == "splice":
            j = int(self.where * 7919) % (len(line) + 1)
            lines[i] = line[:j] + self.text + line[j:]
        elif self.kind == "quoted":
            # Inside a quoted string (a template, a topic): the YAML stays valid.
            j = line.find('"') + 1
            lines[i] = line[:j] + self.text + line[j:] if j else line + self.text
        elif self.kind == "indent":
            lines[i] = self.text + line
        elif self.kind == "truncate":
            lines[i] = line[: int(self.where * 7919) % (len(line) + 1)]
        else:  # pragma: no cover - the strategy draws only the kinds above
            raise ValueError(self.kind)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")


@dataclass(frozen=True)
class ByteEdit:
    """A byte-level edit after encoding: a BOM, a non-UTF-8 byte, a cut, a huge line."""

    kind: str
    where: float

    def apply(self, data: bytes) -> bytes:
        at = int(self.where * (len(data) + 1))
        if self.kind == "bom":
            return b"\xef\xbb\xbf" + data
        if self.kind == "double_bom":
            return b"\xef\xbb\xbf\xef\xbb\xbf" + data
        if self.kind == "latin1":
            return data[:at] + b"caf\xe9" + data[at:]
        if self.kind == "invalid_utf8":
            return data[:at] + b"\xff\xfe\xc3(" + data[at:]
        if self.kind == "utf16":
            return "\ufeff".encode("utf-16-le") + data.decode("utf-8", "replace").encode(
                "utf-16-le"
            )
        if self.kind == "cut":
            return data[:at]
        if self.kind == "long_line":
            return data[:at] + b"x" * 200_000 + data[at:]
        if self.kind == "nul":
            return data[:at] + b"\x00" + data[at:]
        raise ValueError(self.kind)  # pragma: no cover


byte_edit = st.builds(
    ByteEdit,
    st.sampled_from(
        ["bom", "double_bom", "latin1", "invalid_utf8", "utf16", "cut", "long_line", "nul"]
    ),
    st.floats(0, 1),
)
byte_edits = st.one_of(st.just([]), st.just([]), st.just([]), st.lists(byte_edit, max_size=2))
"""Most mutated documents stay UTF-8 text; a quarter get byte-level damage as well."""


def _mutate(base: str, mutations: list[Mutation], edits: list[ByteEdit]) -> bytes:
    lines = base.splitlines()
    for mutation in mutations:
        mutation.apply(lines)
    data = _encode("\n".join(lines) + "\n")
    for edit in edits:
        data = edit.apply(data)
    return data


# -- intent specs (convert/spec.py) -------------------------------------------------------------

SPEC_BASES: Final = (
    ROOT / "examples/en/smart-home.yaml",
    ROOT / "examples/ko/smart-home.yaml",
    *sorted((ROOT / "tests/convert/specs").glob("*.yaml")),
)
SPEC_VALUES: Final = (
    "[]", "{}", "~", "null", "1", "-1", "0x10", "1e999", ".nan", ".inf", "true", "no", "on",
    '""', "''", '" "', "x", "[a, [b, [c]]]", "{a: 1}", "&anchor x", "*anchor", "*nothing",
    "!!python/object/apply:os.system [echo hi]", "!!binary aGk=", "!!set {a}", "!!omap [a: 1]",
    "2026-11-29", "|", ">", "- a", "'unclosed", '"unclosed', "{room", "[the", "a: b: c",
    "<<: {a: 1}", '"\\x85\\r\\u2028"', "99999999999999999999999999999",
    "{from: 0, to: 100000000, step: 1}", "{from: 5, to: 1}", "{from: 0, to: 10, step: 0}",
    "{from: 1.5, to: 2}", "{in: [], out: x}", "{in: a}", "{out: x}",
)  # fmt: skip
TEMPLATE_BREAKS: Final = (
    "(", ")", "[", "]", "{", "}", "|", "(|)", "[]", "()", "{}", "{ }", "{nosuch}", "{a-b}",
    "(a|)", "(|a)", "[a|]", "a||b", "{room}{room}", "((((((((((", "]]]]]]]]]]",
    "(" * 40 + "a" + ")" * 40, "[" * 40 + "a" + "]" * 40, "(a|b|c|d) " * 40,
    "[x] " * 60, "{room} " * 50, "x" * 5000, "\\", "->", "-> ->", "a -> ", " | -> b",
)  # fmt: skip
MUTATION_KINDS: Final = (
    "drop", "duplicate", "swap", "value", "insert_line", "splice", "indent", "truncate",
)  # fmt: skip


def _spec_mutation() -> st.SearchStrategy[Mutation]:
    quoted = st.builds(
        Mutation,
        st.just("quoted"),
        st.floats(0, 1),
        st.sampled_from((*TEMPLATE_BREAKS, "{brightness}", "{room}", "'", "\\\\", "x -> y")),
    )
    text = st.one_of(
        st.sampled_from(SPEC_VALUES),
        st.sampled_from(TEMPLATE_BREAKS),
        st.sampled_from(ODD_TEXT),
        st.sampled_from(["  ", "\t", " ", "- ", "    - "]),
        st.sampled_from(
            ["name: again", "intents:", "slots:", "none: []", "  x: 1", "version: [1]"]
        ),
        st.text(max_size=12),
    )
    return quoted | st.builds(Mutation, st.sampled_from(MUTATION_KINDS), st.floats(0, 1), text)


def _spec_base(path: Path) -> str:
    return path.read_text(encoding="utf-8")


mutated_specs = st.builds(
    _mutate,
    st.sampled_from(SPEC_BASES).map(_spec_base),
    st.lists(_spec_mutation(), min_size=1, max_size=5),
    byte_edits,
)
"""A real spec with a few hostile edits: the inputs closest to what parses."""

YAMLISH: Final = st.text(
    st.sampled_from(list("abn: -[]{}()|,'\"\n\t#&*!?%@`>~0123456789.\\\u2028\x85\r")), max_size=80
)
spec_inputs: Final = st.one_of(
    mutated_specs,
    mutated_specs,
    YAMLISH.map(_encode),
    st.text(max_size=120).map(_encode),
    st.binary(max_size=200),
)
"""What ``load_spec`` is fuzzed with: mostly mutated real specs, plus garbage."""


def check_spec(path: Path, data: bytes) -> Outcome:
    """Write ``data`` to ``path`` and load it: a Spec, or a one-line SpecError naming the file."""
    from convert.spec import Spec, SpecError, load_spec

    path.write_bytes(data)
    try:
        spec = load_spec(path)
    except SpecError as err:
        assert_one_line(str(err), f"{path}:")
        return "refused"
    assert isinstance(spec, Spec) and spec.intents
    return "accepted"


# -- configuration (agent/config.py) ------------------------------------------------------------

EN_MODEL: Final = ROOT / "models" / "smart-home-en"
TOML_VALUES: Final = (
    "true", "false", "0", "-1", "1", "2", "3", "65535", "65536", "8000", "192001", "0.5",
    "1.5", "-0.0", "nan", "+nan", "inf", "-inf", "1e400", "9" * 40, "-" + "9" * 30,
    "0x7fffffffffffffff", "0b1", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z",
    '""', '" "', '"auto"', '"wav"', '"stdin"', '"debug"', '"X"', '"/"', '"."', '".."',
    '"/dev/null"', '"/dev/zero"', '"/dev/urandom"', '"/proc/self/environ"', '"/etc/shadow"',
    '"/nonexistent/file"', '"/tmp"', '"a\\u0000b"', '"line\\nbreak"', '"\\u2028"', '"\\r"',
    '"\\u001b[2J"', f'"{"x" * 5000}"', '"' + "/a" * 3000 + '"', '"café"', '"한국어"',
    '"\\ud7ff"', "[]", "[1, 2]", '["a", 1]', "{}", "{a = 1}", "[[1]]", "'literal'",
    '"""multi\nline"""', f'"{EN_MODEL}"', "", "=", '"unterminated',
)  # fmt: skip
TOML_LINES: Final = (
    "[mqt]", "[mqtt.tls]", "[[mqtt]]", "[model]", "[mqtt]", "[]", "[ ]", "a.b.c = 1",
    "mqtt = 5", 'prot = 1884', "password_file = \"/dev/zero\"", 'username = "u"',
    'password = "p"', 'password_env = "NO_SUCH_VAR"', 'password_env = "A=B"', "tls = true",
    'ca_file = "/nonexistent.pem"', 'ca_file = "/tmp"', 'audio = {source = "stdin"}',
    '"quoted key" = 1', "'' = 1", "x = " + "[" * 200 + "]" * 200,
    "y = " + "{a = " * 100 + "1" + "}" * 100,
)  # fmt: skip


def _config_mutation() -> st.SearchStrategy[Mutation]:
    text = st.one_of(
        st.sampled_from(TOML_VALUES),
        st.sampled_from(TOML_LINES),
        st.sampled_from(ODD_TEXT),
        st.text(max_size=10),
    )
    kinds = st.sampled_from((*MUTATION_KINDS, "value", "value", "value", "insert_line"))
    return st.builds(Mutation, kinds, st.floats(0, 1), text)


def _uncomment(text: str) -> str:
    """DEFAULT_TOML with the commented-out keys (port, password) set, so they get mutated too."""
    return text.replace("# port = 1883", "port = 1883").replace('# password = ""', 'password = ""')


def _default_toml() -> str:
    # Read from the source rather than imported, so that importing this module stays cheap.
    from agent.config import DEFAULT_TOML

    return _uncomment(DEFAULT_TOML)


@st.composite
def config_inputs(draw: st.DrawFn) -> tuple[bytes, int]:
    """(file bytes, file mode): DEFAULT_TOML with the model set and hostile edits, or garbage."""
    mode = draw(st.sampled_from([0o600, 0o644, 0o640]))
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "text", "binary"]))
    if kind == "text":
        return _encode(draw(st.text(max_size=80))), mode
    if kind == "binary":
        return draw(st.binary(max_size=80)), mode
    base = _default_toml().replace(
        'path = "/var/lib/voice-agent/models/smart-home-en"', f'path = "{EN_MODEL}"'
    )
    mutations = draw(st.lists(_config_mutation(), min_size=1, max_size=4))
    edits = draw(byte_edits)
    return _mutate(base, mutations, edits), mode


ENVIRON: Final = {"X": "secret", "EMPTY": ""}


def check_config(path: Path, data: bytes, mode: int) -> Outcome:
    """Write ``data`` with ``mode`` to ``path`` and load it: a Config or a one-line ConfigError."""
    from agent.config import Config, ConfigError, load_config

    path.write_bytes(data)
    path.chmod(mode)
    try:
        config = load_config(path, environ=ENVIRON)
    except ConfigError as err:
        assert_one_line(str(err), f"{path}")
        return "refused"
    assert isinstance(config, Config)
    return "accepted"


# -- audio (agent/audio.py) ---------------------------------------------------------------------

RATES: Final = (0, 1, 100, 7999, 8000, 11025, 16000, 22050, 44100, 192000, 192001, 2**31, 2**32 - 1)
CHANNELS: Final = (0, 1, 2, 3, 7, 65535)
BITS: Final = (0, 1, 8, 12, 16, 24, 32, 64, 65535)
TAGS: Final = (1, 1, 1, 0, 2, 3, 6, 7, 0x11, 0x55, 0xFFFE, 0xFFFF)
HUGE: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class WavPlan:
    """A WAV file described field by field, so that any field can lie."""

    tag: int
    channels: int
    rate: int
    bits: int
    frames: int
    fmt_size: int
    data_size_delta: int | None
    """Added to the true data size; None: 0xFFFFFFFF (a stream of unknown length)."""
    riff_size_delta: int
    extra_before: bytes
    extra_after: bytes
    sub_tag: int
    fmt_first: bool
    seed: int

    def render(self) -> bytes:
        width = max(1, (self.bits + 7) // 8)
        block = (self.channels * width) & 0xFFFF
        fmt = struct.pack(
            "<HHIIHH",
            self.tag,
            self.channels & 0xFFFF,
            self.rate & HUGE,
            (self.rate * block) & HUGE,
            block,
            self.bits & 0xFFFF,
        )
        if self.tag == 0xFFFE:
            fmt += (
                struct.pack("<HHI", 22, self.bits & 0xFFFF, 0)
                + struct.pack("<H", self.sub_tag)
                + bytes(14)
            )
        # A size beyond 4 KiB is only declared: the chunk itself stays short (a lie).
        size = self.fmt_size if self.fmt_size <= 4096 else len(fmt)
        fmt = (fmt + bytes(max(0, size - len(fmt))))[:size]
        # Frames of absurd formats (65535 channels of 64 bits) are cut to a few bytes each.
        count = self.frames * min(max(block, 1), 8)
        samples = bytes((self.seed * 7 + i * 31) & 0xFF for i in range(count))
        size = HUGE if self.data_size_delta is None else len(samples) + self.data_size_delta
        pad = b"\0" if len(fmt) & 1 else b""
        fmt_chunk = b"fmt " + struct.pack("<I", self.fmt_size & HUGE) + fmt + pad
        data_chunk = b"data" + struct.pack("<I", max(0, size) & HUGE) + samples
        chunks = (
            [self.extra_before, fmt_chunk, data_chunk]
            if self.fmt_first
            else [self.extra_before, data_chunk, fmt_chunk]
        )
        body = b"WAVE" + b"".join(chunks) + self.extra_after
        # A stream of unknown length leaves both sizes at their maximum.
        riff = (
            HUGE
            if self.data_size_delta is None
            else max(0, len(body) + self.riff_size_delta) & HUGE
        )
        return b"RIFF" + struct.pack("<I", riff) + body


EXTRA_CHUNKS: Final = (
    b"",
    b"LIST\x04\x00\x00\x00INFO",
    b"odd \x03\x00\x00\x00abc\x00",
    b"odd \x03\x00\x00\x00abc",  # no pad byte
    b"junk\xff\xff\xff\xff",
    b"fmt \x02\x00\x00\x00\x01\x00",
    b"data\x00\x00\x00\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
)
HOSTILE_FIELDS: Final = {
    "tag": st.sampled_from(TAGS),
    "channels": st.sampled_from(CHANNELS),
    "rate": st.sampled_from(RATES),
    "bits": st.sampled_from(BITS),
    "fmt_size": st.sampled_from([0, 2, 14, 15, 18, 40, 41, 1000, HUGE]),
    "data_size_delta": st.one_of(st.none(), st.sampled_from([-1, 1, -3, 7, 10**6])),
    "riff_size_delta": st.sampled_from([-1, 1, -100, 10**9]),
    "extra_before": st.sampled_from(EXTRA_CHUNKS),
    "extra_after": st.sampled_from(EXTRA_CHUNKS),
    "fmt_first": st.just(False),
}


@st.composite
def wav_plans(draw: st.DrawFn) -> WavPlan:
    """A valid 16-bit PCM WAV of any rate, with zero to three of its fields made to lie."""
    fields: dict[str, Any] = {
        "tag": 1,
        "channels": draw(st.sampled_from([1, 2])),
        "rate": draw(st.sampled_from([8000, 16000, 22050, 44100, 192000])),
        "bits": 16,
        "frames": draw(st.integers(0, 3000)),
        "fmt_size": 16,
        "data_size_delta": 0,
        "riff_size_delta": 0,
        "extra_before": b"",
        "extra_after": b"",
        "sub_tag": draw(st.sampled_from([1, 1, 3, 0x55])),
        "fmt_first": True,
        "seed": draw(st.integers(0, 255)),
    }
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE_FIELDS)), max_size=3)):
        fields[name] = draw(HOSTILE_FIELDS[name])
    return WavPlan(**fields)


OTHER_FORMATS: Final = (
    b"ID3\x04\x00\x00\x00\x00\x00\x00",  # MP3 with an ID3 tag
    b"\xff\xfb\x90\x64" + bytes(400),  # a bare MP3 frame
    b"fLaC\x00\x00\x00\x22" + bytes(34),
    b"OggS\x00\x02" + bytes(40),
    b"RIFF\x24\x00\x00\x00AVI LIST",
    b"RIFX\x24\x00\x00\x00WAVEfmt ",  # big-endian RIFF
    b"RF64\xff\xff\xff\xffWAVEds64",
    b"\x1a\x45\xdf\xa3",  # Matroska/WebM
    b"#!/bin/sh\nrm -rf /\n",
    "부엌 조명 좀 켜줘\n".encode(),
    b"",
    b"R",
    b"RIFF",
    b"RIFF\x00\x00\x00\x00WAVE",
)


@st.composite
def wav_inputs(draw: st.DrawFn) -> bytes:
    """A WAV file as bytes: field-by-field lies, corrupted or cut valid files, other formats."""
    kind = draw(st.sampled_from(["plan", "plan", "plan", "corrupt", "cut", "other", "random"]))
    if kind == "other":
        head = draw(st.sampled_from(OTHER_FORMATS))
        return head + draw(st.binary(max_size=64))
    if kind == "random":
        return draw(st.binary(max_size=400))
    data = draw(wav_plans()).render()
    if kind == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "corrupt":
        edits = draw(st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4))
        buffer = bytearray(data)
        for at, value in edits:
            if at < len(buffer):
                buffer[at] = value
        return bytes(buffer)
    return data


@dataclass(frozen=True)
class StdinPlan:
    """Raw PCM on stdin: its rate and channels as configured, the bytes, and the read sizes."""

    rate: int
    channels: int
    data: bytes
    reads: tuple[int, ...]
    chunk_frames: int | None


class Trickle(io.RawIOBase):
    """A pipe that returns the given number of bytes per read (cycling), like a slow writer."""

    def __init__(self, data: bytes, reads: tuple[int, ...]) -> None:
        self._data = data
        self._reads = reads or (len(data) or 1,)
        self._n = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        step = self._reads[self._n % len(self._reads)]
        self._n += 1
        limit = step if size < 0 else min(step, size)
        out, self._data = self._data[:limit], self._data[limit:]
        return out


stdin_plans = st.builds(
    StdinPlan,
    rate=st.sampled_from((0, -1, 1, 8000, 16000, 44100, 192000)),
    channels=st.sampled_from((0, 1, 1, 2, 2, 3)),
    data=st.binary(max_size=3000),
    reads=st.lists(st.integers(1, 4001), min_size=1, max_size=4).map(tuple),
    chunk_frames=st.sampled_from([None, None, 1, 7, 4000]),
)


@dataclass(frozen=True)
class AudioCheck:
    """What one audio input gave: the outcome and the chunks it yielded (for Vosk)."""

    outcome: Outcome
    items: tuple[Any, ...]


def _drain(items: Iterable[Any], limit_bytes: int) -> tuple[Any, ...]:
    """The items of a source, checked as they come, up to ``limit_bytes`` of PCM."""
    from agent.audio import AudioChunk, EndOfStream

    out: list[Any] = []
    total = 0
    for item in items:
        assert isinstance(item, AudioChunk | EndOfStream), item
        if isinstance(item, AudioChunk):
            assert len(item.pcm) % 2 == 0, "a chunk holds a partial 16-bit sample"
            assert 8000 <= item.rate <= 192000, f"rate {item.rate} reached the recognizer"
            assert item.channels in (1, 2)
            total += len(item.pcm)
            if total > limit_bytes:
                break
        out.append(item)
    return tuple(out)


def check_wav(path: Path, data: bytes | None = None, limit_bytes: int = 10**7) -> AudioCheck:
    """Read a WAV file through ``wav_source``: well-formed chunks or a one-line AudioError."""
    from agent.audio import AudioError, EndOfStream, wav_source

    if data is not None:
        path.write_bytes(data)
    try:
        items = _drain(wav_source(path), limit_bytes)
    except AudioError as err:
        assert_one_line(str(err), str(path).replace("\n", "\\u000a"))
        return AudioCheck("refused", ())
    assert not items or isinstance(items[-1], EndOfStream) or limit_bytes < 10**7
    return AudioCheck("accepted", items)


def check_wav_folder(folder: Path) -> AudioCheck:
    """Read a folder of WAVs: well-formed chunks, or a one-line AudioError naming a path."""
    from agent.audio import AudioError, wav_folder_source

    items: list[Any] = []
    try:
        for item in wav_folder_source(folder):
            items.append(item)
    except AudioError as err:
        assert_one_line(str(err), "")
        assert str(folder) in str(err) or any(c in str(err) for c in ("\\u", "?")), (
            f"does not name the folder: {err}"
        )
        return AudioCheck("refused", tuple(items))
    _drain(items, 10**9)
    return AudioCheck("accepted", tuple(items))


def check_stdin(plan: StdinPlan) -> AudioCheck:
    """Read raw PCM through ``stdin_source``: every whole frame, or a one-line AudioError."""
    from agent.audio import AudioChunk, AudioError, EndOfStream, stdin_source

    stream = Trickle(plan.data, plan.reads)
    try:
        items = _drain(
            stdin_source(plan.rate, plan.channels, stream=stream, chunk_frames=plan.chunk_frames),
            10**9,
        )
    except AudioError as err:
        assert_one_line(str(err), "<stdin>")
        return AudioCheck("refused", ())
    assert items and items[-1] == EndOfStream("<stdin>")
    frames = sum(len(i.pcm) // 2 for i in items if isinstance(i, AudioChunk))
    assert frames == len(plan.data) // (2 * plan.channels), "whole frames were lost"
    return AudioCheck("accepted", items)


def recognize(recognizer: Any, items: Iterable[Any]) -> list[Any]:
    """Feed a source's items to a real Vosk recognizer; its transcripts (errors propagate)."""
    return list(recognizer.transcribe(iter(items)))


# -- model directories (agent/metadata.py, agent/classifier.py, load_grammar) -------------------

KO_MODEL: Final = ROOT / "models" / "smart-home-ko"
HOSTILE_JSON: Final = (
    None, True, False, 0, -1, 1, 2**31, 10**12, -(10**12), 10**400, 1.5, float("nan"),
    float("inf"), "", " ", "x" * 70_000, "Light#On", "$SYS/x", "a/b", "a+b", "#", "{room}",
    "{nosuch}", "\x00", "\x7f", "\x85", "\u2028", "\ud800", "\udcff x", "한국어", "<none>",
    [], {}, [1, "a"], {"a": 1}, ["LightOn", "LightOn"], [[[[[[[[1]]]]]]]],
    {"topic": "t", "payload": None}, {"value": 1, "synonyms": []},
)  # fmt: skip
"""Values written into a model.json at a random place (``10**400``: a number JSON allows)."""
TOPIC_TEXT: Final = (
    "a/b", "+", "#", "$SYS/x", "$", "\x00", "\x7f", "\x01", "\x9f", "\u2028", "\ud800", "",
    "x" * 65_536, "é" * 40_000, "a//b", "/", " ", "{room}", "{room}/{room}", "한국어", "\U0001f4a1",
)  # fmt: skip
"""Text for topics, slot values and payloads: MQTT's forbidden and discouraged characters."""


def _paths(document: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every place in a JSON document (the keys of objects, the indexes of lists)."""
    out = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            out += _paths(value, (*prefix, index))
    return out


@dataclass(frozen=True)
class ModelPlan:
    """Edits of a copy of the Korean model directory, each of one of its three files."""

    values: tuple[tuple[float, object, str], ...]
    """(where, value, how): a place in model.json (a fraction of its places), what goes
    there, and ``set``, ``delete`` or ``rename`` (the key becomes the value's text)."""
    metadata_bytes: tuple[ByteEdit, ...]
    grammar: str
    """``keep``, ``deep``, ``object``, ``numbers``, ``surrogate``, ``huge``, ``missing``,
    ``fifo`` or ``folder``."""
    tflite: str
    """``keep``, ``truncate``, ``flip``, ``other`` (the English model's, checksum recorded:
    a valid file of another build), ``empty``, ``huge``, ``missing`` or ``folder``."""
    metadata_kind: str = "file"
    """``file``, ``fifo``, ``folder`` or ``missing``."""
    deep: int = 0
    """When not 0, model.json is this many nested lists instead."""
    topic: str | None = None
    """When set, every action's topic: what the sentences of the check then publish to."""
    slot_value: str | None = None
    """When set, every slot value's canonical value (its synonyms stay, so it is heard)."""
    intent_name: str | None = None
    """When set, the new name of every intent (and its label)."""


_model_text = st.one_of(st.sampled_from(TOPIC_TEXT), st.text(max_size=6), st.just("{room}"))
model_plans = st.builds(
    ModelPlan,
    values=st.one_of(
        st.just(()),
        st.lists(
            st.tuples(
                st.floats(0, 1),
                st.sampled_from(HOSTILE_JSON) | st.text(max_size=8),
                st.sampled_from(["set", "set", "set", "delete", "rename"]),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
    ),
    metadata_bytes=st.one_of(
        st.just(()), st.just(()), st.just(()), st.lists(byte_edit, max_size=2).map(tuple)
    ),
    grammar=st.sampled_from(
        ["keep"] * 24 + ["deep", "object", "numbers", "surrogate", "huge", "missing", "fifo"]
    ),
    tflite=st.sampled_from(
        ["keep"] * 24 + ["truncate", "flip", "other", "empty", "huge", "missing", "folder"]
    ),
    metadata_kind=st.sampled_from(["file"] * 30 + ["fifo", "folder", "missing"]),
    deep=st.sampled_from([0] * 20 + [100, 101, 100_000]),
    topic=st.one_of(
        st.none(), st.none(), st.lists(_model_text, min_size=1, max_size=3).map("/".join)
    ),
    slot_value=st.one_of(st.none(), st.none(), _model_text),
    intent_name=st.one_of(st.none(), st.none(), st.none(), _model_text),
)
"""What a model directory is fuzzed with: the Korean model, its files edited."""


def _edit_json(document: Any, where: float, value: object, how: str) -> None:
    paths = [p for p in _paths(document) if p]
    if not paths:
        return
    path = paths[min(int(where * len(paths)), len(paths) - 1)]
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "rename" and isinstance(parent, dict):
        parent[str(value)] = parent.pop(last)
    else:
        parent[last] = copy.deepcopy(value)  # the constants must not be edited in place


def write_model(folder: Path, plan: ModelPlan) -> None:
    """Make ``folder`` the Korean model directory with ``plan``'s edits."""
    import hashlib
    import os
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    document = json.loads((KO_MODEL / "model.json").read_text(encoding="utf-8"))
    tflite = (KO_MODEL / "intent.tflite").read_bytes()
    if plan.tflite == "other":
        tflite = (EN_MODEL / "intent.tflite").read_bytes()
        document["tflite_sha256"] = hashlib.sha256(tflite).hexdigest()
    for info in document["intents"].values():
        for action in info["actions"]:
            action["topic"] = action["topic"] if plan.topic is None else plan.topic
    for values in document["slots"].values():
        for value in values:
            value["value"] = value["value"] if plan.slot_value is None else plan.slot_value
    if plan.intent_name is not None:
        renamed = {
            f"{plan.intent_name}{i}": info for i, info in enumerate(document["intents"].values())
        }
        document["labels"] = [*renamed, "<none>"]
        document["intents"] = renamed
    for where, value, how in plan.values:
        _edit_json(document, where, value, how)
    text = json.dumps(document, ensure_ascii=False)
    if plan.deep:
        text = "[" * plan.deep + "]" * plan.deep
    data = _encode(text)
    for edit in plan.metadata_bytes:
        data = edit.apply(data)
    metadata = folder / "model.json"
    if plan.metadata_kind == "file":
        metadata.write_bytes(data)
    elif plan.metadata_kind == "fifo":
        os.mkfifo(metadata)
    elif plan.metadata_kind == "folder":
        metadata.mkdir()
    grammar = folder / "grammar.json"
    grammars = {
        "keep": (KO_MODEL / "grammar.json").read_bytes(),
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "object": b'{"a": 1}',
        "numbers": b"[1, 2, null]",
        "surrogate": b'["\\ud800"]',
    }
    if plan.grammar in grammars:
        grammar.write_bytes(grammars[plan.grammar])
    elif plan.grammar == "huge":
        with grammar.open("wb") as file:
            file.truncate(17 << 20)  # sparse: costs no memory
    elif plan.grammar == "fifo":
        os.mkfifo(grammar)
    model = folder / "intent.tflite"
    if plan.tflite in ("keep", "other"):
        model.write_bytes(tflite)
    elif plan.tflite == "truncate":
        model.write_bytes(tflite[: len(tflite) // 3])
    elif plan.tflite == "flip":
        model.write_bytes(tflite[:1000] + bytes([tflite[1000] ^ 0xFF]) + tflite[1001:])
    elif plan.tflite == "empty":
        model.write_bytes(b"")
    elif plan.tflite == "huge":
        with model.open("wb") as file:
            file.truncate(65 << 20)
    elif plan.tflite == "folder":
        model.mkdir()


MODEL_SENTENCES: Final = ("거실 불 켜줘", "노래 정지", "부엌 조명 좀 꺼줘", "오늘 날씨 어때", "")


def check_model(folder: Path, plan: ModelPlan) -> Outcome:
    """Load a model directory as the daemon does: refused with one line naming a file of it,
    or accepted, and then every test sentence classified and its messages rendered with
    valid topics (a model that loads must not fail at the first command)."""
    from agent.actions import render_actions
    from agent.classifier import IntentClassifier
    from agent.hermes import intent as hermes_intent
    from agent.metadata import ModelError
    from agent.recognizer import RecognizerError, load_grammar
    from agent.topics import topic_problem

    write_model(folder, plan)
    try:
        classifier = IntentClassifier.load(folder)
        load_grammar(folder)
    except (ModelError, RecognizerError) as err:
        assert_one_line(str(err), str(folder))
        return "refused"
    for sentence in MODEL_SENTENCES:
        verdict = classifier.classify(sentence)
        if verdict.intent is None:
            continue
        info = classifier.info.intents[verdict.intent]
        rendered = render_actions(info, verdict.slots)
        # Only an optional slot that was not said may leave an action out.
        heard = {slot.name for slot in verdict.slots}
        optional = [f"slot '{s}' was not found" for s in info.slots if s not in heard]
        assert all(any(o in why for o in optional) for why in rendered.skipped), rendered
        for message in (hermes_intent(verdict), *rendered.messages):
            assert topic_problem(message.topic) is None, message.topic
            message.topic.encode("utf-8")
            bytes(message.payload)
    return "accepted"


# -- topics, slot values and payloads of a spec (convert/spec.py) -------------------------------

TOPIC_SPEC: Final = """\
name: topics
language: en
slots:
  room:
    - kitchen
    - "living room -> {value}"
intents:
  LightOn:
    sentences:
      - "turn on the {{room}} light"
    action:
      topic: "{topic}"
      payload: {payload}
"""
PAYLOADS: Final = (
    '{"state": "ON"}', "'{\"state\": \"ON\", \"state\": \"OFF\"}'", "'[1, 2]'", "[1, 2]",
    "7", "'ON'", "'{\"room\": \"{room}\"}'", "'{\"n\": {room}}'", "~", "'{room}'", "'{'",
    "{room: x}", "{x: '{room}'}",
)  # fmt: skip


def _yaml_string(text: str) -> str:
    """``text`` inside YAML double quotes: control characters and surrogates as escapes."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif not c.isprintable() or "\ud800" <= c <= "\udfff":
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return "".join(out)


topic_parts = st.one_of(
    st.sampled_from(TOPIC_TEXT), st.text(max_size=6), st.sampled_from(["zigbee2mqtt", "set"])
)
spec_topic_inputs: Final = st.builds(
    lambda topic, value, payload: _encode(
        TOPIC_SPEC.format(
            topic=_yaml_string("/".join(topic)),
            value=_yaml_string("".join(value)),
            payload=payload,
        )
    ),
    st.lists(topic_parts, min_size=1, max_size=4),
    st.lists(topic_parts, min_size=1, max_size=2),
    st.sampled_from(PAYLOADS),
)
"""A spec whose action topic, one slot value and the payload are hostile."""


def check_spec_topics(path: Path, data: bytes) -> Outcome:
    """Load a spec: refused in one line, or every topic and payload its actions make, for
    every slot value, is one the runtime publishes (none skipped, all valid)."""
    from agent.actions import render_actions
    from agent.metadata import IntentInfo
    from agent.slots import Slot
    from agent.topics import topic_problem

    outcome = check_spec(path, data)
    if outcome == "refused":
        return outcome
    from agent.topics import PLACEHOLDER_RE
    from convert.spec import load_spec

    spec = load_spec(path)
    for intent in spec.intents:
        info = IntentInfo(intent.name, intent.slots, intent.required, intent.actions)
        # JSON text is what the build promises to keep JSON (other text is sent as it is).
        json_text = [
            isinstance(a.payload, str)
            and PLACEHOLDER_RE.sub("0", a.payload).strip().startswith(("{", "["))
            for a in intent.actions
        ]
        for name in intent.slots or ("",):
            for value in spec.slots[name].values if name else ():
                slots = tuple(Slot(s, value.value, "x", 0, 1) for s in intent.slots)
                rendered = render_actions(info, slots)
                assert not rendered.skipped, rendered.skipped
                for message, is_json in zip(rendered.messages, json_text, strict=True):
                    assert topic_problem(message.topic) is None, message.topic
                    if is_json:
                        assert isinstance(json.loads(message.payload), dict), message.payload
    return "accepted"


# -- running a strategy outside pytest (bench/fuzz.py) ------------------------------------------


@dataclass
class Tally:
    """Counts of one fuzzing run."""

    tried: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    first_crash: str = ""

    def record(self, run: Callable[[], Outcome]) -> None:
        self.tried += 1
        try:
            outcome = run()
        except Exception as err:  # a crash is anything but the documented refusal
            self.crashes += 1
            if not self.first_crash:
                self.first_crash = f"{type(err).__name__}: {err}"[:300]
            return
        if outcome == "accepted":
            self.accepted += 1
        else:
            self.refused += 1


def run_strategy(
    strategy: st.SearchStrategy[Any], count: int, seed: int, check: Callable[[Any], Outcome]
) -> Tally:
    """Run ``check`` on ``count`` draws from ``strategy`` (reproducible from ``seed``, no
    shrinking) and count the outcomes; a crash is counted, not raised."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    tally = Tally()

    @fixed_seed(seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        tally.record(lambda: check(value))

    run()
    return tally


def dumps(value: object) -> str:
    """A short printable rendering of an input, for crash reports."""
    text = json.dumps(value if isinstance(value, str) else repr(value))
    return text if len(text) < 200 else text[:197] + "..."


__all__ = [
    "ROOT",
    "AudioCheck",
    "ModelPlan",
    "Mutation",
    "Outcome",
    "StdinPlan",
    "Tally",
    "Trickle",
    "WavPlan",
    "assert_one_line",
    "check_config",
    "check_model",
    "check_spec",
    "check_spec_topics",
    "check_stdin",
    "check_wav",
    "check_wav_folder",
    "config_inputs",
    "dumps",
    "fuzz_settings",
    "model_plans",
    "recognize",
    "run_strategy",
    "spec_inputs",
    "spec_topic_inputs",
    "stdin_plans",
    "wav_inputs",
]
