#!/usr/bin/env bash
# Install voice-agent as a systemd service on Raspberry Pi OS 64-bit (Bookworm, Python 3.11).
#
# Run as root from a checkout: sudo systemd/install.sh [--with-broker]. Safe to run again:
# it updates the program and the unit, and never overwrites the configuration or models
# that are already there. docs/install.md explains every step.
#
# --stage DIR lays the files out under DIR instead of / without apt-get, useradd or
# systemctl, and without root: that is how tests/agent/test_systemd.py checks the result.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --with-broker   also install the mosquitto MQTT broker on this machine
  --python PATH   the Python that creates the venv (default: python3; 3.11 or newer)
  --no-apt        do not apt-get install anything
  --no-user       do not create the voice-agent user or chown anything to it
  --no-systemctl  do not run systemctl (daemon-reload, enable --now)
  --no-venv       do not create the venv or pip install (config.toml then comes from
                  the checkout, read with --python)
  --stage DIR     lay the files out under DIR instead of /, as --no-apt --no-user
                  --no-systemctl (no root needed): for tests and for looking first
  --list-packages print the Debian packages it would install, and exit
  --arch ARCH     the Debian architecture to assume instead of this machine's
                  (dpkg --print-architecture): for tests
  -h, --help      this text
EOF
}

SERVICE=voice-agent
# Intent models copied into the state directory on first install.
MODELS="smart-home-en"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
PYTHON=python3
WITH_BROKER=0
DO_APT=1
DO_USER=1
DO_SYSTEMCTL=1
DO_VENV=1
LIST_PACKAGES=0
ARCH=""

while [ $# -gt 0 ]; do
    case "$1" in
        --with-broker) WITH_BROKER=1 ;;
        --python) PYTHON=${2:?--python needs a path}; shift ;;
        --no-apt) DO_APT=0 ;;
        --no-user) DO_USER=0 ;;
        --no-systemctl) DO_SYSTEMCTL=0 ;;
        --no-venv) DO_VENV=0 ;;
        --stage) ROOT=${2:?--stage needs a directory}; shift; DO_APT=0; DO_USER=0; DO_SYSTEMCTL=0 ;;
        --list-packages) LIST_PACKAGES=1 ;;
        --arch) ARCH=${2:?--arch needs an architecture}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# The userland's architecture, not uname -m: 32-bit Raspberry Pi OS runs a 64-bit kernel on
# a Pi 4 or 5, where uname -m says aarch64 while Python and every library are armhf.
if [ -z "$ARCH" ]; then
    ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
fi
case "$ARCH" in
    arm64 | aarch64 | amd64 | x86_64) ;;
    armhf | armel | arm | armv*)
        echo "install.sh: 32-bit ARM ($ARCH) is not supported: tflite-runtime and vosk have no" \
            "32-bit wheels; install Raspberry Pi OS (64-bit), see docs/install.md" >&2
        exit 2
        ;;
    *)
        echo "install.sh: $ARCH is not supported: tflite-runtime and vosk have wheels for 64-bit" \
            "ARM (arm64) and x86-64 only, see docs/install.md" >&2
        exit 2
        ;;
esac

# python3-venv for the venv, libportaudio2 for the microphone (sounddevice loads it),
# libatomic1 for Vosk: its aarch64 libvosk.so links libatomic.so.1, which a minimal
# bookworm (a fresh Raspberry Pi OS Lite may be one) does not have.
PACKAGES="python3-venv libportaudio2 libatomic1"
[ $WITH_BROKER = 1 ] && PACKAGES="$PACKAGES mosquitto"
if [ $LIST_PACKAGES = 1 ]; then
    echo "$PACKAGES"
    exit 0
fi

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    if [ "$ROOT" = / ]; then
        echo "install.sh: --stage needs a directory other than /" >&2
        exit 2
    fi
fi
# Where things go; under $ROOT (empty for a real install).
OPT=$ROOT/opt/voice-agent
VENV=$OPT/venv
ETC=$ROOT/etc/voice-agent
STATE=$ROOT/var/lib/voice-agent
UNIT_DIR=$ROOT/etc/systemd/system

step() { echo "==> $*"; }

if [ "$(id -u)" != 0 ] && { [ $DO_APT = 1 ] || [ $DO_USER = 1 ] || [ $DO_SYSTEMCTL = 1 ]; }; then
    echo "install.sh: run as root (sudo $0), or use --stage DIR" >&2
    exit 2
fi

if [ $DO_APT = 1 ]; then
    missing=""
    for package in $PACKAGES; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        step "apt-get install$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    else
        step "Debian packages already installed: $PACKAGES"
    fi
fi

# An absolute path: the default configuration is read from /, not from here.
case "$PYTHON" in
    */*) PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON") ;;
esac
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: $PYTHON is older than Python 3.11" >&2
    exit 2
}
base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
if [ -z "$ROOT" ] && [ $DO_VENV = 1 ]; then
    case "$base/" in
        /home/* | /root/*)
            # The unit's ProtectHome=yes hides it: the service could not start its Python.
            echo "install.sh: $PYTHON lives in $base, which the service cannot see;" \
                "use the system's Python (--python /usr/bin/python3)" >&2
            exit 2
            ;;
    esac
fi

if [ $DO_USER = 1 ]; then
    if getent passwd "$SERVICE" >/dev/null; then
        step "user $SERVICE exists; adding it to group audio"
        usermod --append --groups audio "$SERVICE"
    else
        # A system user without a login; its home is the state directory, where ALSA finds
        # a per-service ~/.asoundrc if one is needed.
        step "useradd --system $SERVICE (groups: $SERVICE, audio)"
        useradd --system --user-group --groups audio --home-dir /var/lib/voice-agent \
            --no-create-home --shell /usr/sbin/nologin "$SERVICE"
    fi
fi

if [ $DO_VENV = 1 ]; then
    if [ -x "$VENV/bin/python" ]; then
        step "venv $VENV exists"
    else
        step "$PYTHON -m venv $VENV"
        mkdir -p "$OPT"
        "$PYTHON" -m venv "$VENV"
    fi
    step "pip install ${REPO}[runtime] into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REPO}[runtime]"
    CONFIG_PYTHON=("$VENV/bin/python")
else
    step "no venv: reading the default configuration from $REPO with $PYTHON"
    CONFIG_PYTHON=(env "PYTHONPATH=$REPO" "$PYTHON")
fi

step "state directory $STATE"
install -d -m 0750 "$STATE" "$STATE/models"
for name in $MODELS; do
    model=$REPO/models/$name
    if [ -e "$STATE/models/$name" ]; then
        step "model $STATE/models/$name exists; left as it is"
    else
        step "copy model $name to $STATE/models/$name"
        rm -rf "$STATE/models/$name.tmp"
        cp -R "$model" "$STATE/models/$name.tmp"
        chmod -R u=rwX,g=rX,o= "$STATE/models/$name.tmp"
        mv "$STATE/models/$name.tmp" "$STATE/models/$name"
    fi
done
if [ $DO_USER = 1 ]; then
    chown -R "$SERVICE:$SERVICE" "$STATE"
fi

# /etc/voice-agent is 0755 root:root so the agent can reach config.toml, which only root
# (writes) and the voice-agent group (reads) may open: it may hold the MQTT password.
install -d -m 0755 "$ETC"
if [ -e "$ETC/config.toml" ]; then
    step "config $ETC/config.toml exists; left as it is"
else
    owner=root:$SERVICE
    [ $DO_USER = 1 ] || owner=$(id -un):$(id -gn)
    step "write default config $ETC/config.toml (0640 $owner)"
    tmp=$(mktemp "$ETC/.config.toml.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    # cd /: import the installed agent, not the checkout in the current directory.
    (cd / && "${CONFIG_PYTHON[@]}" -c \
        'from agent.config import DEFAULT_TOML; print(DEFAULT_TOML, end="")') >"$tmp"
    chmod 0640 "$tmp"
    if [ $DO_USER = 1 ]; then
        chown "root:$SERVICE" "$tmp"
    fi
    mv "$tmp" "$ETC/config.toml"
    trap - EXIT
fi

step "install unit $UNIT_DIR/$SERVICE.service"
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$REPO/systemd/$SERVICE.service" "$UNIT_DIR/$SERVICE.service"

vosk_model=$(sed -n 's/^model = "\(.*\)"$/\1/p' "$ETC/config.toml" | head -n 1)
if [ -n "$vosk_model" ] && [ ! -d "$ROOT$vosk_model" ]; then
    step "note: the Vosk model $vosk_model is missing: unpack one there (docs/install.md)," \
        "or the service will fail and retry every 5 s until it is"
fi

if [ $DO_SYSTEMCTL = 1 ]; then
    was_active=0
    systemctl is-active --quiet "$SERVICE.service" && was_active=1
    step "systemctl daemon-reload"
    systemctl daemon-reload
    step "systemctl enable --now $SERVICE.service"
    systemctl enable --now "$SERVICE.service"
    if [ $was_active = 1 ]; then
        # enable --now leaves a running service alone: restart it onto the new code.
        step "systemctl restart $SERVICE.service"
        systemctl restart "$SERVICE.service"
    fi
fi
step "done"
