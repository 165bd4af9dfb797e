#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine (with the XGBoost extra as `xgboost-cpu`) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP workers sleep instead of spinning: spinning starves training on a loaded machine
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bash scripts/setup.sh dev
.venv/bin/python -m pytest -n 2 "$@"
