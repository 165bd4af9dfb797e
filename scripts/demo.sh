#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the demo on the bundled adult data.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP workers sleep instead of spinning: spinning starves training on a loaded machine
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bash scripts/setup.sh pandas
.venv/bin/python examples/demo_adult.py
