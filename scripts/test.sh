#!/usr/bin/env bash
# The project's test command (README, .ci/run): sets up what a fresh machine lacks, then
# runs the linter and the two test suites.
#
# The suites run in two processes on purpose: tflite-runtime (the Pi's interpreter) cannot
# load in a process that has imported TensorFlow, so tests/agent never imports TensorFlow
# and tests/convert (which trains models) runs apart.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Programs the tests run for real: a broker, a speech synthesizer, audio tools, PortAudio,
# an audio server (PulseAudio with the ALSA plugin) and systemd-analyze.
APT_PACKAGES="mosquitto espeak-ng sox libportaudio2 openssl pulseaudio pulseaudio-utils libasound2-plugins systemd"
missing=""
for package in $APT_PACKAGES; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== apt-get install$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
        exit 2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[runtime,convert,test]"

echo "== ruff"
ruff check agent convert bench tests
ruff format --check agent convert bench tests

echo "== tests/agent (no TensorFlow in this process)"
python -m pytest -q tests/agent "$@"

echo "== tests/convert"
python -m pytest -q tests/convert "$@"

# The Raspberry Pi's architecture: systemd/install.sh and the agent in an arm64 Debian
# bookworm root under qemu (scripts/pi-proof.sh says what it proves). The root is cached in
# /var/cache/voice-agent-pi, so only the first run builds it: on 2 idle cores about 10 min
# the first time and 4 min after (11 min with the cores shared by busy neighbours). Without
# root or binfmt_misc it says so in one line and passes, unless PI_PROOF_STRICT=1 (CI sets
# it); PI_PROOF=0 skips it.
echo "== the Pi's architecture (scripts/pi-proof.sh)"
if [ "${PI_PROOF:-1}" = 0 ]; then
    echo "skipped (PI_PROOF=0)"
else
    HOST_PYTHON=$(command -v python) bash scripts/pi-proof.sh
fi
