#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the demo on the bundled adult data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh pandas
.venv/bin/python examples/demo_adult.py
