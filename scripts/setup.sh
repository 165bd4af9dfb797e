#!/usr/bin/env bash
# Create .venv (if missing) and install clusterforget into it with the extras given, e.g. `setup.sh dev,bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${1:-pandas}]"
