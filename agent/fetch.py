"""Download and install a Vosk speech model: ``voice-agent models fetch``.

Only over HTTPS (redirects included) or from a local file. The archive is checked (length,
sha256 when given or pinned, size caps, zip CRCs, safe member names, Vosk layout) and
extracted in a temporary directory beside the target, then swapped in with one rename, so a
failure at any point leaves the previously installed model as it was and nothing behind
(the temporary directory of a fetch that was killed is removed by the next one).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, TextIO

from agent import __version__
from agent.errors import UsageError
from agent.recognizer import RecognizerError, check_model_dir

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "PINNED_SHA256",
    "FetchError",
    "Limits",
    "fetch_model",
    "register",
    "resolve_source",
]

MODELS_URL: Final = "https://alphacephei.com/vosk/models/"
KNOWN_MODELS: Final = {
    name: f"{MODELS_URL}{name}.zip"
    for name in (
        "vosk-model-small-en-us-0.15",
        "vosk-model-small-de-0.15",
        "vosk-model-small-fr-0.22",
        "vosk-model-small-es-0.42",
        "vosk-model-small-ko-0.22",
    )
}
"""Small Vosk models (40-80 MB, fit for a Pi) by name, as listed on alphacephei.com."""
PINNED_SHA256: Final = {
    KNOWN_MODELS["vosk-model-small-en-us-0.15"]: (
        "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498"
    ),
}
"""The sha256 a known model's archive must have when no ``--sha256`` is given. A known
model without one here rests on HTTPS alone: alphacephei.com publishes no checksums, and
a hash is added only once a download has been checked against it."""
DEFAULT_MODEL: Final = "vosk-model-small-en-us-0.15"
DEFAULT_DIR: Final = Path("/var/lib/voice-agent/vosk")
USER_DIR: Final = Path.home() / ".cache" / "voice-agent" / "vosk"
"""Where a user's own downloads go when the service's folder is not theirs (the demo)."""
DEFAULT_TIMEOUT: Final = 30.0
"""Seconds to wait for the server (connect, or the next block of data), not for the download."""
TEMP_PREFIX: Final = ".voice-agent-fetch-"
"""Prefix of the work directory made inside the target directory while fetching."""
_BLOCK: Final = 1 << 16
_RENAME_EXCHANGE: Final = 2  # linux/fs.h
_AT_FDCWD: Final = -100

Progress = Callable[[int, int | None], None]
"""Called with (bytes received, total bytes or None) as the download goes."""


@dataclass(frozen=True)
class Limits:
    """What an archive may cost before it is refused: a zip bomb (2 MB that unpacks to
    2 GB), an archive of thousands of members, or a server that never stops sending."""

    download: int = 4 << 30
    """Bytes downloaded. The small models are 40-80 MB; the largest Vosk models ~2.3 GB."""
    unpacked: int = 8 << 30
    """Bytes once extracted (the largest Vosk models unpack to ~4 GB)."""
    ratio: float = 20.0
    """Unpacked bytes per archive byte, beyond :data:`RATIO_FLOOR`: a model's files are
    binary and compress to half at best; a bomb reaches a thousand."""
    members: int = 1000
    """Files and folders in the archive; a Vosk model has 20 to 100."""


RATIO_FLOOR: Final = 64 << 20
"""Archives that unpack to less than this are not held to ``Limits.ratio``: a few
well-compressed text files are no threat."""


class FetchError(UsageError):
    """A model could not be fetched; ``str()`` is one line naming the URL or file and the cause."""


def resolve_source(name_or_url: str) -> str:
    """The URL to fetch for a known model name, a URL, or a local ``.zip`` path."""
    if name_or_url in KNOWN_MODELS:
        return KNOWN_MODELS[name_or_url]
    if "://" in name_or_url:
        return name_or_url
    path = Path(name_or_url)
    if path.suffix == ".zip" or "/" in name_or_url:
        if not path.is_file():
            raise FetchError(f"{path}: no such archive")
        return path.resolve().as_uri()
    known = ", ".join(KNOWN_MODELS)
    raise FetchError(f"{name_or_url}: unknown model name (known: {known}; or give a URL)")


def fetch_model(
    url: str,
    directory: str | Path,
    *,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    limits: Limits = Limits(),
) -> Path:
    """Download the Vosk model archive at ``url`` and install it as ``directory/<its folder>``.

    ``url`` is https (so is every redirect) or a local ``file:`` URL; ``sha256`` defaults
    to the pinned one of a known model. An existing model of that name is replaced only
    once the new one is complete and valid. Raises :class:`FetchError` (one line) for any
    failure, leaving ``directory`` as it was.
    """
    _check_scheme(url, url)
    expected = _check_sha256(sha256) or PINNED_SHA256.get(url)
    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise FetchError(f"{directory}: cannot create: {err.strerror or err}") from None
    work: Path | None = None
    try:
        # One fetch per directory at a time: any work directory found now was left by a
        # fetch that was killed, and is removed before it fills the disk a second time.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FetchError(f"{directory}: another fetch is installing here") from None
        _remove_stale(directory)
        try:
            work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=directory))
        except OSError as err:
            raise FetchError(f"{directory}: cannot create: {err.strerror or err}") from None
        archive = work / "archive.zip"
        digest = _download(url, archive, timeout, progress, limits.download)
        if expected is not None and digest != expected:
            raise FetchError(f"{url}: sha256 mismatch: expected {expected}, got {digest}")
        new = _extract(url, archive, work / "new", limits)
        archive.unlink()
        return _install(new, directory / new.name, work)
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty: a failed fetch leaves no trace
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)


def _remove_stale(directory: Path) -> None:
    """Remove the work directories of earlier fetches (the caller holds the lock)."""
    for entry in directory.glob(f"{TEMP_PREFIX}*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _check_scheme(url: str, shown: str) -> None:
    """Refuse anything but https (and a local file named directly, never by a redirect)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "file" and url == shown):
        return
    if url != shown:
        raise FetchError(f"{shown}: refused a redirect to {url}: only https is followed")
    raise FetchError(f"{shown}: only https:// URLs are fetched (or a local .zip file)")


class _HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another https URL: an https->http one would hand the
    download to anyone on the path."""

    def __init__(self, url: str) -> None:
        self.url = url

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str):  # type: ignore[no-untyped-def]
        _check_scheme(urllib.parse.urljoin(req.full_url, newurl), self.url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise FetchError(f"--sha256: expected 64 hex digits, got {sha256!r}")
    return sha256.lower()


def _download(url: str, dest: Path, timeout: float, progress: Progress | None, most: int) -> str:
    """Write the body at ``url`` (at most ``most`` bytes) to ``dest``; return its sha256.
    Every failure is one line."""
    received, total = 0, None
    digest = hashlib.sha256()
    too_big = f"{url}: refused: the archive is larger than {most / 1e6:.0f} MB"
    try:
        headers = {"User-Agent": f"voice-agent/{__version__}"}
        request = urllib.request.Request(url, headers=headers)
        opener = urllib.request.build_opener(_HttpsRedirects(url))
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > most:
                raise FetchError(too_big)
            with _open_output(dest) as out:
                while block := response.read(_BLOCK):
                    received += len(block)
                    if received > most:
                        raise FetchError(too_big)
                    digest.update(block)
                    _write(out, block, dest)
                    if progress is not None:
                        progress(received, total)
    except urllib.error.HTTPError as err:
        err.close()
        raise FetchError(f"{url}: HTTP error {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise FetchError(f"{url}: {_describe(err.reason, url, timeout)}") from None
    except http.client.IncompleteRead:
        raise FetchError(f"{url}: download cut short ({_bytes(received, total)})") from None
    except (http.client.HTTPException, OSError) as err:
        raise FetchError(f"{url}: {_describe(err, url, timeout)}") from None
    except ValueError as err:  # Request's "unknown url type" (no scheme at all)
        raise FetchError(f"{url}: not a valid URL ({err})") from None
    if total is not None and received != total:
        raise FetchError(f"{url}: download cut short ({_bytes(received, total)})")
    return digest.hexdigest()


# Local write errors (a full disk) name the install directory, not the URL or the work dir.
def _open_output(dest: Path) -> Any:
    try:
        return dest.open("xb")
    except OSError as err:
        raise FetchError(f"{dest.parent.parent}: cannot write: {err.strerror or err}") from None


def _write(out: Any, block: bytes, dest: Path) -> None:
    try:
        out.write(block)
    except OSError as err:
        raise FetchError(f"{dest.parent.parent}: cannot write: {err.strerror or err}") from None


def _bytes(received: int, total: int | None) -> str:
    return f"{received} of {total} bytes" if total is not None else f"{received} bytes"


def _describe(reason: object, url: str, timeout: float) -> str:
    """The cause of a network failure in a few words (urllib nests it in URLError.reason)."""
    parts = urllib.parse.urlsplit(url)
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host {parts.hostname!r} ({reason.strerror})"
    if isinstance(reason, TimeoutError):
        return f"no response within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {parts.netloc}"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({reason.reason or reason})"
    if isinstance(reason, FileNotFoundError):
        return "no such file"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(reason, OSError):
        return str(reason.strerror or reason)
    return str(reason)


@dataclass(frozen=True)
class _Listing:
    """The members of an archive, checked before anything is written."""

    top: str
    """The one top-level folder: the model's name."""
    members: list[zipfile.ZipInfo]
    size: int
    """Bytes once extracted."""


def _check_size(url: str, infos: list[zipfile.ZipInfo], packed: int, limits: Limits) -> int:
    """The unpacked size, after refusing an archive over any of ``limits`` (the sizes are
    the declared ones, which zipfile holds the extraction to)."""
    if len(infos) > limits.members:
        raise FetchError(
            f"{url}: refused: {len(infos)} members (at most {limits.members}; a Vosk model"
            " has fewer than 100)"
        )
    size = sum(info.file_size for info in infos)
    if size > limits.unpacked:
        raise FetchError(
            f"{url}: refused: unpacks to {size / 1e6:.0f} MB (at most"
            f" {limits.unpacked / 1e6:.0f} MB)"
        )
    if size > RATIO_FLOOR and size > limits.ratio * max(packed, 1):
        raise FetchError(
            f"{url}: refused: unpacks to {size / 1e6:.0f} MB from {packed / 1e6:.1f} MB"
            f" (more than {limits.ratio:g} times its size: a zip bomb?)"
        )
    return size


def _check_members(url: str, infos: list[zipfile.ZipInfo]) -> _Listing:
    """Refuse unsafe names, links and special files, and any layout but one top-level folder."""
    tops: dict[str, None] = {}
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"[A-Za-z]:", name):
            raise FetchError(f"{url}: unsafe archive: absolute path {name!r}")
        if "\\" in name:  # a Windows separator: a traversal in disguise for some unzippers
            raise FetchError(f"{url}: unsafe archive: backslash in {name!r}")
        if ".." in parts:
            raise FetchError(f"{url}: unsafe archive: path traversal {name!r}")
        # Unix archivers keep the file type in the high bits; 0 means "not recorded".
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if kind == stat.S_IFLNK:
            raise FetchError(f"{url}: unsafe archive: symbolic link {name!r}")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise FetchError(f"{url}: unsafe archive: special file {name!r}")
        if info.flag_bits & 0x1:
            raise FetchError(f"{url}: encrypted archive member {name!r}")
        if len(parts) == 1 and not info.is_dir():
            tops[f"{parts[0]} (a file)"] = None
        elif parts:
            tops[parts[0]] = None
    if len(tops) != 1 or next(iter(tops)).endswith("(a file)"):
        found = ", ".join(list(tops)[:5]) + (", ..." if len(tops) > 5 else "") or "nothing"
        raise FetchError(
            f"{url}: expected one top-level folder holding the model, found {len(tops)}"
            f" entries: {found}"
        )
    return _Listing(next(iter(tops)), infos, sum(i.file_size for i in infos))


def _extract(url: str, archive: Path, into: Path, limits: Limits) -> Path:
    """Check and extract ``archive`` into ``into``; return the model folder, checked."""
    directory = archive.parent.parent
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise FetchError(f"{url}: not a valid zip archive ({err})") from None
    with zf:
        _check_size(url, zf.infolist(), archive.stat().st_size, limits)
        listing = _check_members(url, zf.infolist())
        free = shutil.disk_usage(directory).free
        if listing.size > free:
            raise FetchError(
                f"{directory}: not enough space: the model needs {listing.size / 1e6:.1f} MB,"
                f" {free / 1e6:.1f} MB free"
            )
        try:
            for info in listing.members:
                _extract_member(zf, info, into)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise FetchError(f"{url}: corrupt archive ({err})") from None
        except OSError as err:
            raise FetchError(f"{directory}: cannot extract: {err.strerror or err}") from None
    model = into / listing.top
    try:
        check_model_dir(model)
    except RecognizerError as err:
        cause = str(err).removeprefix(f"{model}: ")
        raise FetchError(f"{url}: {listing.top}/: {cause}") from None
    return model


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, into: Path) -> None:
    """Write one checked member; reading it to the end makes zipfile verify its CRC-32."""
    target = into / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = target.open("xb")
    except FileExistsError:
        raise zipfile.BadZipFile(f"duplicate entry {info.filename!r}") from None
    with zf.open(info) as src, out:
        shutil.copyfileobj(src, out, 1 << 20)
        # Flushed before the rename, so a power cut cannot leave a half-written model installed.
        os.fsync(out.fileno())


def _install(new: Path, target: Path, work: Path) -> Path:
    """Move ``new`` to ``target``, swapping out any model there in one step when possible."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FetchError(f"{target}: exists and is not a directory; not replacing it")
    try:
        if not target.exists():
            os.rename(new, target)
        elif not _exchange(new, target):
            # No atomic exchange here: move the old model aside, and back if the move fails.
            old = work / "old"
            os.rename(target, old)
            try:
                os.rename(new, target)
            except OSError:
                os.rename(old, target)
                raise
        _fsync_dir(target.parent)
    except OSError as err:
        raise FetchError(f"{target}: cannot install: {err.strerror or err}") from None
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Meter:
    """Download progress on one terminal line, redrawn at most ten times a second."""

    def __init__(self, url: str, stream: TextIO) -> None:
        self.name = url.rsplit("/", 1)[-1] or url
        self.stream = stream
        self.shown = 0.0

    def __call__(self, received: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.shown < 0.1 and received != total:
            return
        self.shown = now
        text = f"{received / 1e6:.1f} MB"
        if total:
            text += f" of {total / 1e6:.1f} MB ({100 * received // total}%)"
        self.stream.write(f"\r{self.name}: {text}\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _fetch_command(args: argparse.Namespace) -> int:
    url = resolve_source(args.model)
    meter = _Meter(url, sys.stderr) if sys.stderr.isatty() else None
    try:
        path = fetch_model(url, args.dir, sha256=args.sha256, timeout=args.timeout, progress=meter)
    finally:
        if meter is not None:
            meter.done()
    print(path)
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def register(commands: Any) -> None:
    """Add ``voice-agent models fetch`` to the ``voice-agent`` parser."""
    models = commands.add_parser(
        "models",
        help="manage Vosk speech models",
        description="Manage the Vosk speech models the agent transcribes with.",
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download and install a Vosk model",
        description="Download a Vosk model archive (a known name, a URL or a local .zip),"
        " check it and install it as DIR/<model folder>, replacing an older copy only once"
        f" the new one is complete. Known names: {', '.join(KNOWN_MODELS)}.",
    )
    fetch.add_argument(
        "model",
        metavar="NAME_OR_URL",
        nargs="?",
        default=DEFAULT_MODEL,
        help="model name, URL or .zip path (default: %(default)s)",
    )
    fetch.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="directory to install into (default: %(default)s)",
    )
    fetch.add_argument("--sha256", metavar="HEX", help="refuse the archive unless it has this hash")
    fetch.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up when the server is silent this long (default: %(default)g)",
    )
    fetch.set_defaults(func=_fetch_command)
