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

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[runtime,convert,test]"

echo "== ruff"
ruff check agent convert bench tests

echo "== tests/agent (no TensorFlow in this process)"
python -m pytest -q tests/agent "$@"

echo "== tests/convert"
python -m pytest -q tests/convert "$@"
