#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the demo on the bundled adult data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[pandas]"
.venv/bin/python examples/demo_adult.py
