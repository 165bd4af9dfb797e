"""Section ``export``: scoring throughput of the exports vs in-process predict, and time to forget in production.

* Throughput at batch 1 and batch 10k: ``model.predict_proba`` (in process), ``cf.Scorer`` on the bundle, and
  the ONNX graph in onnxruntime (one intra-op thread, as the service runs it); each timed back to back in
  this run, median of repeats, reported as rows/s and as a ratio to in-process predict.
* Time to forget in production: a service (``python -m clusterforget.serve``) serves the bundle; from the
  moment ``forget_rows`` returns, the model is exported (``notify=`` the service) and the service is polled
  until it answers with the new version. Also measured with the watcher alone (no notify).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, load_real, log, paired, summary


def _rate(fn, repeats: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _service(export: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "clusterforget.serve", str(export), "--port", str(port),
                             "--poll", "0.05"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_export(cfg: Any) -> dict[str, Any]:
    import httpx

    import clusterforget as cf
    from clusterforget.export.onnx import feeds, session

    ds = load_real("adult")
    rounds = 30 if cfg.quick else 100
    model = cf.ForgetClassifier(grouping=cf.KeyGroups("native-country"), max_group_rows=2000,
                                learner_params={"num_iterations": rounds}, n_jobs=2)
    model.fit(ds.X, ds.y, ids=ds.ids)
    n_members = len(model.groups_)
    log(f"export: adult grouped by native-country, {n_members} members, {rounds} rounds")
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-export-"))
    model.export(tmp / "bundle", format="bundle")
    t_onnx = time.perf_counter()
    model.export(tmp / "model.onnx", format="onnx")
    t_onnx = time.perf_counter() - t_onnx
    scorer = cf.Scorer(tmp / "bundle")
    sess = session(tmp / "model.onnx", n_threads=1)
    schema = model.ensemble_.schema
    test = ds.X_test
    big = test.sample(n=10_000, replace=len(test) < 10_000, random_state=0).reset_index(drop=True)
    out: dict[str, Any] = {"members": n_members, "rounds": rounds, "onnx_export_s": t_onnx,
                           "onnx_bytes": (tmp / "model.onnx").stat().st_size}
    reps = {1: 50 if cfg.quick else 200, 10_000: 3 if cfg.quick else cfg.repeats}
    for batch, data in ((1, test.head(1)), (10_000, big)):
        inproc = _rate(lambda: model.predict_proba(data), reps[batch])
        bundle = _rate(lambda: scorer.predict_proba(data), reps[batch])
        onnx_ = _rate(lambda: sess.run(None, feeds(data, schema)), reps[batch])
        onnx_run = _rate(lambda f=feeds(data, schema): sess.run(None, f), reps[batch])
        res = {"in_process": summary(inproc), "bundle": summary(bundle), "onnx": summary(onnx_),
               "onnx_graph_only": summary(onnx_run)}
        for k in ("bundle", "onnx", "onnx_graph_only"):
            res[f"{k}_speedup"] = paired(inproc, res[k]["samples"])
        out[f"batch_{batch}"] = res
        log(f"export: batch {batch}: in-process {res['in_process']['median'] * 1e3:.2f} ms, bundle "
            f"{res['bundle']['median'] * 1e3:.2f} ms ({res['bundle_speedup']:.2f}x), onnx "
            f"{res['onnx']['median'] * 1e3:.2f} ms ({res['onnx_speedup']:.2f}x; graph only "
            f"{res['onnx_graph_only']['median'] * 1e3:.2f} ms, {res['onnx_graph_only_speedup']:.2f}x)")

    # time to forget in production
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = _service(tmp / "bundle", port)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in test.head(1).to_dict("records")[0].items()}
        rng = np.random.default_rng(0)
        samples: dict[str, list[float]] = {"notify": [], "watch": [], "forget": []}
        for i in range(3 if cfg.quick else cfg.repeats):
            for how in ("notify", "watch"):
                victim = rng.choice(model.ensemble_.all_rows().column("__cf_id__").to_numpy(), 1)
                t0 = time.perf_counter()
                model.forget_rows(victim)
                t1 = time.perf_counter()
                model.export(tmp / "bundle", format="bundle", notify=url if how == "notify" else None)
                while httpx.post(url + "/predict", json={"rows": [row]}, timeout=30).json()["version"] != model.version_:
                    time.sleep(0.005)
                samples[how].append(time.perf_counter() - t1)
                samples["forget"].append(t1 - t0)
        out["time_to_production"] = {k: summary(v) for k, v in samples.items()}
        log(f"export: forget_rows {np.median(samples['forget']) * 1e3:.0f} ms; from its return to the service "
            f"serving the new version: {np.median(samples['notify']) * 1e3:.0f} ms with notify=, "
            f"{np.median(samples['watch']) * 1e3:.0f} ms with the watcher alone")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out
