"""The systemd unit and its installer: systemd-analyze's verdicts, what install.sh lays down,
and whether the agent's native stack could live under MemoryDenyWriteExecute=yes."""

from __future__ import annotations

import ctypes
import errno
import filecmp
import mmap
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import DEFAULT_TOML

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "voice-agent.service"
INSTALL = ROOT / "systemd" / "install.sh"
EXEC_START = "opt/voice-agent/venv/bin/voice-agent"
MAX_EXPOSURE = 2.5
"""Issue 3 asks for "OK" (below 4.5); a later issue demands 2.5, so hold that line now."""
HOST_UNITS = Path("/usr/lib/systemd/system")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "--no-pager", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_install(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def stage(target: Path, *args: str | Path) -> Path:
    """install.sh --stage into ``target``; the default configuration is read with this Python."""
    result = run_install("--stage", target, "--python", sys.executable, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def with_host_units(root: Path) -> Path:
    """A staged root also needs the targets the unit hangs off (sysinit.target, ...), as a Pi
    has: verify --root resolves every dependency inside the root. Likewise /bin/kill, which
    ExecReload= runs."""
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin" / "kill")
    return root


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# -- systemd-analyze -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real install (venv and pip install from a copy of the checkout) staged in a tmp dir.

    A copy, so the build leaves nothing in the working tree; the ExecStart= binary then
    exists inside the root, where ``verify --root`` looks for it.
    """
    if os.environ.get("VOICE_AGENT_OFFLINE") == "1":
        pytest.skip("VOICE_AGENT_OFFLINE=1: the venv install needs PyPI")
    checkout = tmp_path_factory.mktemp("checkout")
    target = tmp_path_factory.mktemp("installed")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, checkout / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("agent", "convert", "systemd", "models/smart-home-en"):
        shutil.copytree(ROOT / name, checkout / name, ignore=ignore)
    script = checkout / "systemd" / "install.sh"
    result = subprocess.run(
        ["bash", str(script), "--stage", str(target), "--python", sys.executable],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return with_host_units(target)


@needs_analyze
def test_verify_passes_on_the_installed_tree(installed_root: Path) -> None:
    binary = installed_root / EXEC_START
    assert binary.is_file()
    assert os.access(binary, os.X_OK)
    result = analyze("verify", f"--root={installed_root}", "voice-agent.service")
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_installed_program_has_the_run_command_the_unit_starts(installed_root: Path) -> None:
    result = subprocess.run(
        [installed_root / EXEC_START, "run", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


@needs_analyze
def test_verify_catches_a_missing_program(tmp_path: Path) -> None:
    """The check above can fail: without the venv the same tree does not verify."""
    root = with_host_units(stage(tmp_path / "root", "--no-venv"))
    result = analyze("verify", f"--root={root}", "voice-agent.service")
    assert result.returncode != 0
    assert f"/{EXEC_START} is not executable" in result.stderr


@needs_analyze
def test_verify_catches_a_bad_directive(tmp_path: Path) -> None:
    root = with_host_units(stage(tmp_path / "root", "--no-venv"))
    (root / EXEC_START).parent.mkdir(parents=True)
    (root / EXEC_START).write_text("#!/bin/sh\n")
    (root / EXEC_START).chmod(0o755)
    unit = root / "etc/systemd/system/voice-agent.service"
    assert analyze("verify", f"--root={root}", "voice-agent.service").returncode == 0
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    result = analyze("verify", f"--root={root}", "voice-agent.service")
    # systemd ignores a bad line and exits 0: only the output tells, hence the check above
    # that verify prints nothing at all.
    assert "Failed to parse service type, ignoring: notfy" in result.stderr


def exposure(text: str) -> float:
    match = re.search(r"Overall exposure level for voice-agent\.service: (\d+\.\d+)", text)
    assert match, text
    return float(match[1])


@needs_analyze
def test_security_exposure_is_at_most_2_5() -> None:
    result = analyze("security", "--offline=true", UNIT)
    assert result.returncode == 0, result.stderr
    assert exposure(result.stdout) <= MAX_EXPOSURE, result.stdout


@needs_analyze
def test_exposure_parsing_sees_a_weak_unit(tmp_path: Path) -> None:
    """The exposure check can fail: the unit without its sandbox scores far worse."""
    weak = tmp_path / "voice-agent.service"
    keep = ("[", "Type=", "ExecStart=", "User=", "Group=", "Restart")
    lines = UNIT.read_text().splitlines()
    weak.write_text("\n".join(line for line in lines if line.startswith(keep)))
    assert exposure(analyze("security", "--offline=true", weak).stdout) > MAX_EXPOSURE


def test_unit_settings_the_agent_relies_on() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecStart"] == [f"/{EXEC_START} run --config /etc/voice-agent/config.toml"]
    assert settings["StateDirectory"] == ["voice-agent"]
    assert settings["ConfigurationDirectory"] == ["voice-agent"]
    # The agent reads /etc/voice-agent/config.toml through a root-owned directory: a mode
    # that locks out "other" would lock out the agent.
    assert "ConfigurationDirectoryMode" not in settings
    assert settings["User"] == ["voice-agent"]
    assert settings["SupplementaryGroups"] == ["audio"]


# -- install.sh ------------------------------------------------------------------------------


def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_rejects_an_unknown_option(tmp_path: Path) -> None:
    result = run_install("--stage", tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert "unknown option '--frobnicate'" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arch", ["armhf", "armv7l", "armv6l"])
def test_install_refuses_32_bit_arm_in_one_line(tmp_path: Path, arch: str) -> None:
    """32-bit Raspberry Pi OS has no tflite-runtime or vosk wheels: one line, status 2,
    before anything is laid down."""
    root = tmp_path / "root"
    result = run_install("--stage", root, "--no-venv", "--python", sys.executable, "--arch", arch)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"install.sh: 32-bit ARM ({arch}) is not supported: tflite-runtime and vosk have no"
        " 32-bit wheels; install Raspberry Pi OS (64-bit), see docs/install.md"
    ]
    assert not root.exists()


def test_install_takes_64_bit_arm(tmp_path: Path) -> None:
    root = tmp_path / "root"
    args = ("--stage", root, "--no-venv", "--python", sys.executable, "--arch", "arm64")
    result = run_install(*args)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/systemd/system/voice-agent.service").is_file()


def test_install_packages_include_libatomic1_for_vosk_on_arm64() -> None:
    """libvosk.so for aarch64 links libatomic.so.1, which a minimal bookworm lacks."""
    result = run_install("--list-packages", "--arch", "arm64")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python3-venv", "libportaudio2", "libatomic1"]
    with_broker = run_install("--list-packages", "--arch", "arm64", "--with-broker")
    assert with_broker.stdout.split()[-1] == "mosquitto"
    assert "libatomic1" in with_broker.stdout.split()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_staged_install_lays_down_unit_config_and_models(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_install("--stage", root, "--no-venv", "--python", sys.executable)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("==> ") for line in lines), lines  # one line per step
    assert lines[-1] == "==> done"

    unit = root / "etc/systemd/system/voice-agent.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert mode(unit) == 0o644

    config = root / "etc/voice-agent/config.toml"
    assert config.read_text() == DEFAULT_TOML
    assert mode(config) == 0o640  # may hold the MQTT password
    assert mode(config.parent) == 0o755  # the agent must reach it through root's directory

    state = root / "var/lib/voice-agent"
    assert mode(state) == 0o750
    model = state / "models/smart-home-en"
    source = ROOT / "models/smart-home-en"
    comparison = filecmp.dircmp(source, model)
    assert not (comparison.left_only or comparison.right_only or comparison.diff_files)
    assert mode(model / "intent.tflite") == 0o640

    assert not (root / "opt").exists()  # --no-venv


def test_install_again_keeps_config_and_models_and_updates_the_unit(tmp_path: Path) -> None:
    root = stage(tmp_path / "root", "--no-venv")
    config = root / "etc/voice-agent/config.toml"
    model_json = root / "var/lib/voice-agent/models/smart-home-en/model.json"
    unit = root / "etc/systemd/system/voice-agent.service"
    config.write_text('[mqtt]\nhost = "broker.lan"\n')
    model_json.write_text("{}")
    unit.write_text("[Service]\nExecStart=/bin/false\n")

    result = run_install("--stage", root, "--no-venv", "--python", sys.executable)
    assert result.returncode == 0, result.stderr
    assert config.read_text() == '[mqtt]\nhost = "broker.lan"\n'
    assert model_json.read_text() == "{}"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert "exists; left as it is" in result.stdout


def test_a_real_install_needs_root() -> None:
    """As an ordinary user install.sh refuses before it touches anything."""
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        shutil.copy2(INSTALL, copy / "install.sh")
        for path in (copy, copy / "install.sh"):
            path.chmod(0o755)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        result = subprocess.run(
            [*as_nobody, "bash", str(copy / "install.sh")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "run as root" in result.stderr


# -- the sandbox's seccomp rules, applied to the agent's own code ----------------------------

SHM_EXEC = 0o100000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
AF_MAX = 46
"""One past the highest address family Linux knows (include/linux/socket.h)."""

Rule = tuple[str, int, int, int, int]
"""A call refused with an errno when its argument matches: (syscall, arg index, libseccomp
comparison, datum, errno); for SCMP_CMP_MASKED_EQ the datum is both mask and value."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def seccomp(rules: list[Rule]) -> Callable[[], None]:
    """A preexec_fn that loads a seccomp filter refusing the calls ``rules`` describe, the way
    systemd refuses them for a unit. Built in the parent; loaded between fork and exec, and
    kept across exec."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as err:
        pytest.fail(f"libseccomp is needed (apt-get install libseccomp2): {err}")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(SCMP_ACT_ALLOW)
    for name, arg, op, datum, error in rules:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        second = datum if op == SCMP_CMP_MASKED_EQ else 0
        compare = (_ArgCmp * 1)(_ArgCmp(arg, op, datum, second))
        action = SCMP_ACT_ERRNO | error
        assert lib.seccomp_rule_add_array(context, action, number, 1, compare) == 0, name

    def load() -> None:
        if lib.seccomp_load(context) != 0:
            os._exit(99)

    return load


def deny_write_execute() -> Callable[[], None]:
    """MemoryDenyWriteExecute=yes as systemd 252 does it (seccomp_memory_deny_write_execute()):
    mmap() with PROT_WRITE|PROT_EXEC, mprotect()/pkey_mprotect() to PROT_EXEC and shmat()
    with SHM_EXEC fail with EPERM."""
    write_exec = mmap.PROT_WRITE | mmap.PROT_EXEC
    return seccomp([
        ("mmap", 2, SCMP_CMP_MASKED_EQ, write_exec, errno.EPERM),
        ("mprotect", 2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, errno.EPERM),
        ("pkey_mprotect", 2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, errno.EPERM),
        ("shmat", 2, SCMP_CMP_MASKED_EQ, SHM_EXEC, errno.EPERM),
    ])  # fmt: skip


def restrict_address_families(allowed: set[int]) -> Callable[[], None]:
    """RestrictAddressFamilies= with an allow list: socket() of any other family fails with
    EAFNOSUPPORT, as under systemd."""
    refused = [f for f in range(AF_MAX) if f not in allowed]
    return seccomp([("socket", 0, SCMP_CMP_EQ, f, errno.EAFNOSUPPORT) for f in refused])


def python(code: str, home: Path, preexec: Callable[[], None] | None) -> tuple[int, str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, preexec_fn=preexec,
        check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def null_sound_card(tmp_path: Path) -> Path:
    """A HOME whose ~/.asoundrc makes ALSA's default device the null plugin: a microphone that
    records silence, so PortAudio opens a real stream on a machine without a sound card."""
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\n")
    return tmp_path


MICROPHONE = """
from agent.audio import microphone_source
chunk = next(microphone_source(rate=16000, channels=1))
assert chunk.rate == 16000 and len(chunk.pcm) > 0, chunk
"""

EVERYTHING_BUT_THE_MICROPHONE = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    raise SystemExit("the W^X filter is not in force")
import paho.mqtt.client
import vosk
import numpy as np
from agent.classifier import IntentClassifier
from agent.recognizer import packaged_model_dir
for threads in (1, 4):  # XNNPACK's thread pool too
    classifier = IntentClassifier.load("models/smart-home-en", "tflite_runtime", threads)
    assert np.isfinite(classifier.probabilities("lights on")).all()
vosk.SetLogLevel(-1)
recognizer = vosk.KaldiRecognizer(vosk.Model(str(packaged_model_dir())), 16000)
recognizer.AcceptWaveform(bytes(32000))
recognizer.FinalResult()
"""


def test_models_and_mqtt_need_no_writable_executable_memory(tmp_path: Path) -> None:
    """numpy, tflite-runtime (with XNNPACK), Vosk and paho run under the W^X rule."""
    status, output = python(EVERYTHING_BUT_THE_MICROPHONE, tmp_path, deny_write_execute())
    assert status == 0, output


def test_memory_deny_write_execute_matches_what_the_microphone_needs(
    null_sound_card: Path,
) -> None:
    """The unit turns MemoryDenyWriteExecute= on exactly when the agent's microphone works
    under it: today sounddevice's callback stream needs a cffi trampoline in W+X memory."""
    status, output = python(MICROPHONE, null_sound_card, None)
    assert status == 0, f"the microphone does not work even without the filter:\n{output}"
    status, output = python(MICROPHONE, null_sound_card, deny_write_execute())
    works_under_wx = status == 0
    setting = unit_settings()["MemoryDenyWriteExecute"][-1]
    if setting == "yes":
        assert works_under_wx, f"MemoryDenyWriteExecute=yes breaks the microphone:\n{output}"
    else:
        assert not works_under_wx, "the microphone works under W^X now: set it to yes in the unit"
        assert "write+execute memory" in output, output


RESOLVE_AND_CONNECT = """
import socket, sys
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except OSError:
    pass
else:
    raise SystemExit("the address family filter is not in force")
port = int(sys.argv[1])
for family in (socket.AF_UNSPEC, socket.AF_INET):
    assert socket.getaddrinfo("localhost", port, family, socket.SOCK_STREAM)
# What paho does to reach the broker: resolve the name, connect over TCP.
socket.create_connection(("localhost", port), timeout=10).close()
"""


def test_the_address_families_the_unit_allows_reach_the_broker(tmp_path: Path) -> None:
    """glibc's resolver copes without AF_NETLINK (the unit leaves it out) and the agent still
    resolves and connects to a broker by name."""
    families = unit_settings()["RestrictAddressFamilies"][-1].split()
    allowed = {int(getattr(socket, family)) for family in families}
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        status, output = python(
            f"import sys; sys.argv[1:] = [{port}]\n{RESOLVE_AND_CONNECT}",
            tmp_path,
            restrict_address_families(allowed),
        )
    assert status == 0, output
