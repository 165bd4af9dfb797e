"""Kill harness in CI (issue #11): >= 200 SIGKILLs of store operations, at every write / fsync / rename /
delete step and at random moments; each one leaves the old or the new version, loadable and verified, and
a forget that returned is durable (see tests/faults.py; the long run is ``python tests/faults.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks its children")
def test_kills_leave_the_old_or_the_new_version():
    # a fresh interpreter: the harness forks, and a pytest worker may have run OpenMP threads already
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "faults.py"), "--kills", "200", "--seed", "1"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["kills"] >= 200
    assert result["old"] > 0 and result["new"] > 0  # kills landed before and after the commit point
    # every step of every operation was a kill point
    assert set(result["steps"]) == {"fit", "forget_rows", "forget_group", "relabel", "add_rows", "set_group_weight"}
