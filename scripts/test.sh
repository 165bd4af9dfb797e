#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine (with the XGBoost extra as `xgboost-cpu`) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m pytest -n 2 "$@"
