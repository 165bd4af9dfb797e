"""Several processes on one store (issue #11): the lock serializes writers, no update is lost, readers only
ever see committed versions, and a lock left by a killed process is recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf

ROOT = Path(__file__).resolve().parents[1]
FAST = {"num_iterations": 3, "num_leaves": 4, "min_data_in_leaf": 2}
BASE = 40

WRITER = """
import sys, numpy as np, clusterforget as cf
path, wid, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for j in range(k):
    while True:  # optimistic: load, change, commit; another writer got in first -> reload and redo
        m = cf.load(path, lock_timeout=120)
        try:
            m.add_rows(np.array([[float(wid), j / 10]]), [wid % 2], ids=[10_000 + 100 * wid + j])
            break
        except cf.StoreError as exc:
            if "another writer" not in str(exc):
                raise
"""

READER = """
import sys, time, numpy as np, clusterforget as cf
path, until, base, last = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
X = np.zeros((3, 2)); seen = {0}
while time.time() < until and max(seen) < last:
    m = cf.load(path, lock_timeout=120)
    # every version adds one row to the saved one: a half-committed state would break this
    assert m.n_rows_ == base + m.version_ - 1, (m.n_rows_, m.version_)
    assert np.isfinite(m.predict_proba(X)).all()
    seen.add(m.version_)
print(len(seen) - 1)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}


def _store(path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(BASE, 2))
    cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST, n_jobs=1).fit(
        X, (X[:, 0] > 0).astype(int)).save(path)


def test_writers_serialize_and_readers_see_committed_versions(tmp_path):
    path = tmp_path / "s"
    _store(path)
    writers, k = 3, 3
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(k)], env=_env(),
                              stderr=subprocess.PIPE) for w in range(writers)]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(time.time() + 120), str(BASE),
                               str(1 + writers * k)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    out, err = reader.communicate(timeout=600)
    assert reader.returncode == 0, err.decode()[-2000:]
    m = cf.load(path)
    ids = {v for g in m.ensemble_.groups.values() for v in g.rows.column("__cf_id__").to_pylist()}
    expected = {10_000 + 100 * w + j for w in range(writers) for j in range(k)}
    assert expected <= ids and m.n_rows_ == BASE + writers * k  # no update lost
    assert m.version_ == 1 + writers * k
    assert [e["operation"] for e in cf.read_ledger(path)] == ["save"] + ["add_rows"] * (writers * k)
    assert int(out.strip()) >= 1


def test_lock_of_a_killed_process_is_recovered(tmp_path):
    path = tmp_path / "s"
    _store(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(600)",
         str(path / ".lock")], env=_env(), stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    try:
        with pytest.raises(cf.LockError):
            cf.load(path, lock_timeout=0.2)  # held: refused, not waited on forever
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    m = cf.load(path, lock_timeout=10)  # the kernel released the dead holder's lock; the lock file stays
    report = m.forget_rows([0])
    assert report.version == 2 and cf.load(path).n_rows_ == BASE - 1
