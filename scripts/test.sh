#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine (with the XGBoost extra as `xgboost-cpu`) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -m pytest -n 2 "$@"
