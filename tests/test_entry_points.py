"""Entry points exit cleanly under CPU load (defect 6) and make OpenMP workers sleep, not spin (defect 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf
from clusterforget._compat import passive_openmp

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("OMP_WAIT_POLICY", None)  # the entry point must set it itself
    return env


def test_cli_exits_cleanly_under_cpu_load(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    cf.ForgetClassifier(grouping=cf.HashGroups(3), learner_params={"num_iterations": 5}, n_jobs=1).fit(
        X, (X[:, 0] > 0).astype(int)).save(tmp_path / "s")
    info = [sys.executable, "-m", "clusterforget", "info", str(tmp_path / "s"), "--json"]
    codes, outs = [], []

    def wait(procs, seconds):
        deadline = time.monotonic() + seconds
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail(f"`clusterforget info` did not exit within {seconds:.0f} s (20x one run alone here)")
            codes.append(p.returncode)
            outs.append((out, err))

    # the time limit is set by this machine's speed now: one run alone, timed, so a loaded machine (every run
    # slower) gives a longer limit and a hang still ends the test; the abort is what it exists for
    t0 = time.monotonic()
    wait([subprocess.Popen(info, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)], 600)
    limit = min(900.0, max(60.0, 20 * (time.monotonic() - t0)))
    # a busy process beside the runs: the abort at exit showed in about a third of runs on a loaded machine
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(2):  # 2 rounds of 2 runs side by side: 4 runs that read Parquet and load LightGBM
            wait([subprocess.Popen(info, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                  for _ in range(2)], limit)
    finally:
        busy.kill()
        busy.wait()
    assert codes == [0] * 5, [e.decode()[-500:] for _, e in outs]  # 134: Arrow's thread pool aborted at exit
    assert all(b'"rows": 200' in o for o, _ in outs)
    assert all(b"terminate called" not in e for _, e in outs)


def test_entry_points_set_passive_openmp(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice is kept
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    # the command line's entry point, without OMP_WAIT_POLICY in its environment, on an error
    probe = ("import os, sys; sys.argv = ['clusterforget', 'info', 'no-such-store']; import clusterforget.__main__ "
             "as m; m.exit_now = lambda c: print(os.environ.get('OMP_WAIT_POLICY'), c) or os._exit(c); m.run()")
    r = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, timeout=60)
    assert r.stdout.split() == [b"PASSIVE", b"3"] and b"error:" in r.stderr and r.returncode == 3  # 3: a store problem
    for script in (".ci/run", "scripts/test.sh"):
        assert 'export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"' in (ROOT / script).read_text()
    assert 'os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")' in (ROOT / "bench" / "__main__.py").read_text()


def test_bench_partial_run_leaves_the_committed_results(tmp_path, monkeypatch, capsys):
    """`python -m bench --only X` writes bench/results/partial/; only `--merge` puts X into latest.* (the rest kept)."""
    import json

    import bench.planning
    import bench.report
    import bench.run

    monkeypatch.setattr(bench.run, "RESULTS", tmp_path)
    monkeypatch.setattr(bench.planning, "run_planning", lambda cfg: [])
    env = {"cpu": "cpu", "cores": 2, "memory_gib": 1, "versions": {}, "seed": 0, "os": "os", "python": "3",
           "git_commit": "abc1234", "date_utc": "2026-12-01 12:00 UTC", "load_average_at_start": [1.0, 1.0, 1.0]}
    monkeypatch.setattr(bench.run, "environment", lambda: env)  # the real one imports every library (~9 s)
    monkeypatch.setattr(bench.report, "write_plots", lambda results, out: [])  # pyplot's import: seconds
    committed = {"quick": False, "command": "python -m bench", "config": {"repeats": 5}, "wall_s": 60.0,
                 "environment": env, "auto": [], "plan": ["the full run's"]}
    (tmp_path / "latest.json").write_text(json.dumps(committed))
    (tmp_path / "latest.md").write_text("the full run's")
    assert bench.run.main(["--only", "plan"]) == 0
    assert json.loads((tmp_path / "latest.json").read_text()) == committed
    assert (tmp_path / "latest.md").read_text() == "the full run's"
    part = json.loads((tmp_path / "partial" / "latest.json").read_text())
    assert part["plan"] == [] and part["command"] == "python -m bench --only plan"
    assert f"wrote {(tmp_path / 'partial').resolve()}" in capsys.readouterr().out
    assert bench.run.main(["--only", "plan", "--merge"]) == 0
    merged = json.loads((tmp_path / "latest.json").read_text())
    assert merged["plan"] == [] and merged["auto"] == [] and merged["command"] == "python -m bench"
    assert [m["sections"] for m in merged["merged"]] == [["plan"]]
    assert "Merged since: plan from `python -m bench --only plan --merge`" in (tmp_path / "latest.md").read_text()
    for bad in (["--merge"], ["--only", "plan", "--merge", "--quick"]):
        with pytest.raises(SystemExit):
            bench.run.main(bad)
