"""Section ``scoring``: the cost of scoring against one LightGBM model on the same rows, measured side by side.

* **Routed** (adult grouped by ``native-country``, one member per country, routed): in-process
  ``predict_proba`` and ``cf.Scorer`` vs one LightGBM model of the same parameters trained on all rows
  (``Booster.predict`` on the pre-encoded float64 matrix, one thread: the tree-work floor), at 10k rows (and
  200k in the full run). Target 1.5x.
* **Sharded keys** (``max_group_rows=2000``): a row of a sharded key goes through every shard of its key, so
  the floor is the mean number of members a row goes through; reported with that floor.
* **Averaged** (``HashGroups(K)``): every member scores every row; target 1.2 x K x one model.
* **One row**: ``cf.Scorer`` on a one-row DataFrame and on a one-row Arrow table vs ``Booster.predict`` on a
  numpy row. Target 4x.
* **Swap**: a new ``cf.Scorer`` of an export in which one member (or every member) changed, built from the
  previous one (unchanged members reused by content address) vs built from nothing.
* **Cold start**: a new process running ``import clusterforget; cf.Scorer(path)``, and whether scikit-learn
  was imported.

Every ratio is the median over repeats of the per-pair ratio (each pair back to back).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, load_real, log, paired, summary


def _pairs(fns: dict[str, Any], repeats: int, warm: bool = True) -> dict[str, list[float]]:
    """Wall seconds of each function per repeat, interleaved; and under ``<name>_cpu`` this process's CPU seconds
    of the same calls, which other jobs loading the machine change far less (for a one-thread call, its work)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {f"{k}_cpu": [] for k in fns}
    for f in fns.values() if warm else ():
        f()  # warm up
    for _ in range(repeats):
        for k, f in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
            cpu[f"{k}_cpu"].append(time.process_time() - c0)
    return {**out, **cpu}


def _one_model(model: Any, X: Any, y: Any, rounds: int) -> Any:
    """One LightGBM member of the same parameters on all rows (what ``HashGroups(1)`` would train)."""
    import pyarrow as pa

    from clusterforget.data import LABEL, WEIGHT, conform
    from clusterforget.members import LightGBMLearner

    schema = model.ensemble_.schema
    table = conform(X, schema).append_column(LABEL, pa.array(np.asarray(y)))
    table = table.append_column(WEIGHT, pa.array(np.ones(table.num_rows)))
    return LightGBMLearner({"num_iterations": rounds}, 0).train(table, schema, "classification", 1)


def _started(url: str, proc: Any) -> None:
    import httpx

    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _latencies(url: str, body: dict[str, Any], clients: int, requests: int, seconds: float,
               kind: str = "httpx") -> list[float]:
    """Per-request seconds of ``requests`` POST /predict in all, from ``clients`` threads with a connection each
    (kept alive, as a real client pool does), stopping early after ``seconds``. ``kind``: ``httpx``, or the
    standard library's ``http.client`` (a quarter of httpx's CPU per request, measured)."""
    import http.client
    import json
    import threading
    from urllib.parse import urlsplit

    import httpx

    out: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    left = [requests]
    raw = json.dumps(body).encode()
    where = urlsplit(url)

    def client() -> None:
        if kind == "httpx":
            c = httpx.Client(base_url=url, timeout=30)

            def post() -> None:
                c.post("/predict", json=body).raise_for_status()
        else:
            c = http.client.HTTPConnection(where.hostname, where.port, timeout=30)

            def post() -> None:
                c.request("POST", "/predict", raw, {"content-type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"POST /predict answered {r.status}")
        try:
            post()  # connection set up: not timed
            while time.perf_counter() < stop:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                post()
                dt = time.perf_counter() - t0
                with lock:
                    out.append(dt)
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _http(model: Any, other: Any, export: Path, row: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The service on loopback: one-row /predict latency with 1 and 8 clients, and forget -> served with
    ``notify=`` when one member changed and when every member changed."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "clusterforget.serve", str(export), "--port", str(port),
                             "--poll", "3600"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = {}
    try:
        _started(url, proc)
        body = {"rows": [row]}
        _latencies(url, body, 1, 50, 30)  # warm up
        for kind, clients in (("httpx", 1), ("httpx", 8), ("stdlib", 1), ("stdlib", 8)):
            cpu0, mine0 = _cpu_seconds(proc.pid), time.process_time()
            got = _latencies(url, body, clients, (300 if cfg.quick else 3000) * (1 if clients == 1 else 2), 120, kind)
            # the service's CPU time per request: what a request costs it, whatever else loads the machine; and the
            # client's (this process: httpx in `clients` threads under one GIL)
            cpu = (_cpu_seconds(proc.pid) - cpu0) / max(len(got), 1)
            client = (time.process_time() - mine0) / max(len(got), 1)
            # with `clients` requests always in flight, the mean latency is clients / throughput (Little's law), and
            # the throughput is bounded by the service's one event loop, the client's one GIL and the cores
            floor = clients * max(cpu, client, (cpu + client) / (os.cpu_count() or 1))
            out[f"clients_{clients}" + ("" if kind == "httpx" else "_stdlib")] = {"requests": len(got), "p50": float(np.percentile(got, 50)),
                                         "p99": float(np.percentile(got, 99)), "mean": float(np.mean(got)),
                                         "server_cpu_per_request": cpu, "client_cpu_per_request": client,
                                         "mean_floor": floor}
        # forget -> served. The service polls rarely here, so the swap is the one notify= asks for; its time is
        # the /reload call's (what export(notify=) waits for), measured apart from writing the export
        ids = model.ensemble_.all_rows().column("__cf_id__").to_numpy()
        rng = np.random.default_rng(0)
        swaps: dict[str, list[tuple[float, float]]] = {"one_member": [], "all_members": []}
        with httpx.Client(base_url=url, timeout=60) as c:
            def swap(which: Any, case: str, t0: float) -> None:
                which.export(export, format="bundle")
                t1 = time.perf_counter()
                answer = c.post("/reload").json()
                t2 = time.perf_counter()
                if not answer["swapped"] or c.post("/predict", json=body).json()["version"] != which.version_:
                    raise RuntimeError(f"the service did not swap in the new export: {answer}")
                swaps[case].append((t2 - t1, t2 - t0))

            for _ in range(3 if cfg.quick else 7):
                t0 = time.perf_counter()
                model.forget_rows(rng.choice(ids, 1, replace=False))
                swap(model, "one_member", t0)
                swap(other, "all_members", time.perf_counter())  # another model: every member file differs
                swap(model, "all_members", time.perf_counter())
        for case, pairs in swaps.items():
            out[f"swap_{case}"] = {"reload": summary([p[0] for p in pairs]),
                                   "forget_to_served": summary([p[1] for p in pairs])}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def _kmeans(cfg: Any, rounds: int, reps: int, table: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """``KMeansGroups(16)`` on make_classification (1M training rows), routed (``predict_proba`` and ``cf.Scorer``)
    and averaged, vs one model on the same rows, at 200k and 1M rows (the quick run: 20k rows, 4 clusters)."""
    import clusterforget as cf
    from bench.common import make_scale

    n_train, sizes, k = (20_000, [20_000], 4) if cfg.quick else (1_000_000, [200_000, 1_000_000], 16)
    ds = make_scale(n_train, 1000)
    params = {"num_iterations": rounds}
    out: dict[str, Any] = {"k": k, "train_rows": n_train, "rows": {}}
    log(f"scoring: KMeansGroups({k}) on {n_train:,} rows, {rounds} rounds")
    fits = {how: cf.ForgetClassifier(grouping=cf.KMeansGroups(k), combine=how, learner_params=params, n_jobs=2)
            .fit(ds.X, ds.y) for how in ("route", "average")}
    one = _one_model(fits["route"], ds.X, ds.y, rounds)
    fits["route"].export(tmp / "kmeans", format="bundle")
    scorer = cf.Scorer(tmp / "kmeans")
    for n in sizes:
        X = ds.X[:n]
        M = np.ascontiguousarray(X, dtype=np.float64)
        # 1M rows: two repeats without a warm-up, routed only (averaging is K one-model times per call; its ratio is
        # measured at the smaller size)
        big = n >= 1_000_000
        fns = {"one": lambda: one.booster.predict(M, num_threads=1), "route": lambda: fits["route"].predict_proba(X),
               "scorer": lambda: scorer.predict_proba(X)}
        if not big:
            fns["average"] = lambda: fits["average"].predict_proba(X)
        got = _pairs(fns, 2 if big else reps, warm=not big)
        res = {name: summary(v) for name, v in got.items()}
        res["route_x"] = 1 / paired(got["one"], got["route"])
        res["scorer_x"] = 1 / paired(got["one"], got["scorer"])
        res["route_cpu_x"] = 1 / paired(got["one_cpu"], got["route_cpu"])
        res["scorer_cpu_x"] = 1 / paired(got["one_cpu"], got["scorer_cpu"])
        res["average_x_per_member"] = 1 / paired(got["one"], got["average"]) / k if not big else None
        res["bitwise"] = bool(np.array_equal(scorer.predict_proba(X[:20_000]), fits["route"].predict_proba(X[:20_000])))
        out["rows"][n] = res
        table.append(_row(f"KMeansGroups({k}) routed predict_proba, {n:,} rows / one model", res["route_x"], 1.5))
        table.append(_row(f"KMeansGroups({k}) routed cf.Scorer, {n:,} rows / one model", res["scorer_x"], 1.5))
        table.append(_row(f"  the same in CPU time: predict_proba / cf.Scorer, {n:,} rows (cf.Scorer's ratio; "
                          f"predict_proba's {res['route_cpu_x']:.2f}x)", res["scorer_cpu_x"], 1.5))
        if not big:
            table.append(_row(f"KMeansGroups({k}) averaged, {n:,} rows / (K x one model)", res["average_x_per_member"],
                              1.2))
        log(f"scoring: KMeansGroups({k}), {n:,} rows: one model {res['one']['median']:.2f} s, routed "
            f"{res['route']['median']:.2f} s ({res['route_x']:.2f}x; CPU {res['route_cpu_x']:.2f}x), Scorer "
            f"{res['scorer']['median']:.2f} s ({res['scorer_x']:.2f}x; CPU {res['scorer_cpu_x']:.2f}x; bitwise "
            f"{res['bitwise']})" + ("" if big else f", averaged {res['average']['median']:.2f} s "
                                   f"({res['average_x_per_member']:.2f}x K)"))
    return out


def _row(figure: str, measured: float, target: float | None, unit: str = "x") -> dict[str, Any]:
    return {"figure": figure, "measured": measured, "target": target, "unit": unit,
            "ok": None if target is None else bool(measured <= target)}


def run_scoring(cfg: Any) -> dict[str, Any]:
    import pyarrow as pa

    import clusterforget as cf
    from clusterforget.data import conform
    from clusterforget.members import encode

    ds = load_real("adult")
    rounds = 30 if cfg.quick else 100
    reps = 5 if cfg.quick else max(cfg.repeats, 7)
    sizes = [10_000] if cfg.quick else [10_000, 200_000]
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-scoring-"))
    out: dict[str, Any] = {"rounds": rounds, "rows": {}, "table": []}
    table = out["table"]
    params = {"num_iterations": rounds}

    routed = cf.ForgetClassifier(grouping="native-country", combine="route", learner_params=params, n_jobs=2)
    routed.fit(ds.X, ds.y, ids=ds.ids)
    one = _one_model(routed, ds.X, ds.y, rounds)
    schema = routed.ensemble_.schema
    routed.export(tmp / "routed", format="bundle")
    scorer = cf.Scorer(tmp / "routed")
    out["members"] = len(routed.groups_)
    log(f"scoring: adult by native-country, {out['members']} members, {rounds} rounds, routed")
    data = {}  # rows -> (the DataFrame, its matrix for the one model), for the exports' rows too
    for n in sizes:
        rows = ds.X_test.sample(n=n, replace=True, random_state=0).reset_index(drop=True)
        M = encode(conform(rows, schema), schema, one.vocab)
        data[n] = (rows, M)
        got = _pairs({"one": lambda: one.booster.predict(M, num_threads=1),
                      "predict_proba": lambda: routed.predict_proba(rows),
                      "scorer": lambda: scorer.predict_proba(rows)}, reps)
        res = {k: summary(v) for k, v in got.items()}
        res["predict_proba_x"] = 1 / paired(got["one"], got["predict_proba"])
        res["scorer_x"] = 1 / paired(got["one"], got["scorer"])
        res["predict_proba_cpu_x"] = 1 / paired(got["one_cpu"], got["predict_proba_cpu"])
        res["scorer_cpu_x"] = 1 / paired(got["one_cpu"], got["scorer_cpu"])
        out["rows"][n] = res
        table.append(_row(f"routed predict_proba, {n:,} rows / one model", res["predict_proba_x"], 1.5))
        table.append(_row(f"routed cf.Scorer, {n:,} rows / one model", res["scorer_x"], 1.5))
        table.append(_row(f"  the same in CPU time: predict_proba, {n:,} rows / one model", res["predict_proba_cpu_x"],
                          1.5))
        table.append(_row(f"  the same in CPU time: cf.Scorer, {n:,} rows / one model", res["scorer_cpu_x"], 1.5))
        log(f"scoring: {n:,} rows: one model {res['one']['median'] * 1e3:.1f} ms, predict_proba "
            f"{res['predict_proba']['median'] * 1e3:.1f} ms ({res['predict_proba_x']:.2f}x), Scorer "
            f"{res['scorer']['median'] * 1e3:.1f} ms ({res['scorer_x']:.2f}x)")

    from bench.scoring_exports import run_exports

    out["exports"] = run_exports(routed, one, ds, rounds, data, tmp, reps, _pairs, _row, table)

    # one row
    row = ds.X_test.head(1)
    arrow_row = conform(row, schema)
    M1 = encode(arrow_row, schema, one.vocab)
    mapping = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.iloc[0].to_dict().items()}
    got = _pairs({"one": lambda: one.booster.predict(M1, num_threads=1),
                  "dict": lambda: scorer.predict_proba(mapping),
                  "frame": lambda: scorer.predict_proba(row),
                  "arrow": lambda: scorer.predict_proba(arrow_row),
                  # the floor under a DataFrame: pandas' own reads of one row's names, dtypes and values
                  "pandas": lambda: (row.columns.tolist(), row.dtypes.tolist(), row.iloc[0].tolist())},
                 200 if cfg.quick else 1000)
    out["one_row"] = {k: summary(v) for k, v in got.items()}
    for k in ("dict", "frame", "arrow", "pandas"):
        out["one_row"][f"{k}_x"] = 1 / paired(got["one"], got[k])
    table.append(_row("cf.Scorer one-row dict / Booster.predict numpy row", out["one_row"]["dict_x"], 4.0))
    table.append(_row("cf.Scorer one-row DataFrame / Booster.predict numpy row", out["one_row"]["frame_x"], 4.0))
    table.append(_row("  of which pandas reading the row (columns, dtypes, iloc[0]) / Booster.predict",
                      out["one_row"]["pandas_x"], None))
    table.append(_row("cf.Scorer one-row Arrow table / Booster.predict numpy row", out["one_row"]["arrow_x"], 4.0))
    o = out["one_row"]
    log(f"scoring: one row: Booster.predict {o['one']['median'] * 1e3:.3f} ms, Scorer dict "
        f"{o['dict']['median'] * 1e3:.3f} ms ({o['dict_x']:.1f}x), DataFrame {o['frame']['median'] * 1e3:.3f} ms "
        f"({o['frame_x']:.1f}x; pandas alone {o['pandas_x']:.1f}x), Arrow {o['arrow']['median'] * 1e3:.3f} ms "
        f"({o['arrow_x']:.1f}x)")

    # swaps: one member changed, every member changed
    swap: dict[str, Any] = {}
    victim = routed.ensemble_.all_rows().column("__cf_id__").to_numpy()[:1]
    before = cf.Scorer(tmp / "routed")
    routed.forget_rows(victim)
    routed.export(tmp / "routed", format="bundle")
    got = _pairs({"reuse": lambda: cf.Scorer(tmp / "routed", previous=before),
                  "full": lambda: cf.Scorer(tmp / "routed")}, reps)
    swap["one_member"] = {k: summary(v) for k, v in got.items()}
    every = cf.ForgetClassifier(grouping="native-country", combine="route",
                                learner_params=params, random_state=1, n_jobs=2).fit(ds.X, ds.y, ids=ds.ids)
    every.export(tmp / "every", format="bundle")
    old = cf.Scorer(tmp / "routed")
    got = _pairs({"reuse": lambda: cf.Scorer(tmp / "every", previous=old),
                  "full": lambda: cf.Scorer(tmp / "every")}, reps)
    swap["all_members"] = {k: summary(v) for k, v in got.items()}
    out["swap"] = swap
    table.append(_row("swap in an export with 1 member changed (ms)", swap["one_member"]["reuse"]["median"] * 1e3,
                      20.0, "ms"))
    table.append(_row("swap in an export with every member changed (ms)",
                      swap["all_members"]["reuse"]["median"] * 1e3, None, "ms"))
    log(f"scoring: swap, 1 member changed: {swap['one_member']['reuse']['median'] * 1e3:.1f} ms reusing the rest "
        f"({swap['one_member']['full']['median'] * 1e3:.1f} ms from nothing); every member changed: "
        f"{swap['all_members']['reuse']['median'] * 1e3:.1f} ms")

    # the service: one-row latency over HTTP, and forget -> served
    routed.export(tmp / "served", format="bundle")
    http = out["http"] = _http(routed, every, tmp / "served", mapping, cfg)
    for kind, clients in (("httpx", 1), ("httpx", 8), ("stdlib", 1), ("stdlib", 8)):
        h = http[f"clients_{clients}" + ("" if kind == "httpx" else "_stdlib")]
        who = f"{clients} {kind if kind == 'httpx' else 'http.client'} client(s)"
        table.append(_row(f"POST /predict one row, {who}, p50 (ms)", h["p50"] * 1e3, 2.0, "ms"))
        table.append(_row(f"POST /predict one row, {who}, p99 (ms)", h["p99"] * 1e3, 10.0, "ms"))
        table.append(_row(f"  service CPU per request, {who} (ms)", h["server_cpu_per_request"] * 1e3, None, "ms"))
        table.append(_row(f"  client CPU per request, {who} (ms)", h["client_cpu_per_request"] * 1e3, None, "ms"))
        if clients > 1:
            table.append(_row(f"  floor of the mean latency from those CPU times, {who} (ms)", h["mean_floor"] * 1e3,
                              None, "ms"))
        log(f"scoring: HTTP one row, {who}: p50 {h['p50'] * 1e3:.2f} ms, p99 {h['p99'] * 1e3:.2f} ms, "
            f"mean {h['mean'] * 1e3:.2f} ms ({h['requests']} requests; CPU per request: the service's "
            f"{h['server_cpu_per_request'] * 1e3:.2f} ms, the client's {h['client_cpu_per_request'] * 1e3:.2f} ms; "
            f"the mean's floor from them {h['mean_floor'] * 1e3:.2f} ms)")
    for case, label in (("one_member", "1 member"), ("all_members", "every member")):
        h = http[f"swap_{case}"]
        table.append(_row(f"service swap after notify=, {label} changed (ms)", h["reload"]["median"] * 1e3,
                          20.0 if case == "one_member" else None, "ms"))
        table.append(_row(f"forget_rows + export + notify= -> served, {label} changed (ms)",
                          h["forget_to_served"]["median"] * 1e3, None, "ms"))
        log(f"scoring: {label} changed: swap {h['reload']['median'] * 1e3:.1f} ms after notify=, forget -> served "
            f"{h['forget_to_served']['median'] * 1e3:.0f} ms")

    # cold start
    code = ("import sys, time; t = time.perf_counter(); import clusterforget as cf; "
            f"s = cf.Scorer({str(tmp / 'routed')!r}); "
            "print(time.perf_counter() - t, int('sklearn' in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cold = []
    for _ in range(1 if cfg.quick else 5):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        wall = time.perf_counter() - t0
        inner, sk = done.stdout.split()
        cold.append((wall, float(inner), bool(int(sk))))
    out["cold_start"] = {"process": summary([c[0] for c in cold]), "import_and_load": summary([c[1] for c in cold]),
                         "sklearn_imported": any(c[2] for c in cold)}
    table.append(_row("new process: import clusterforget + cf.Scorer (s)", out["cold_start"]["process"]["median"],
                      1.5, "s"))
    log(f"scoring: cold start {out['cold_start']['process']['median']:.2f} s (scikit-learn imported: "
        f"{out['cold_start']['sklearn_imported']})")

    # averaged hash shards and sharded keys: the floors
    rows = ds.X_test.sample(n=10_000, replace=True, random_state=0).reset_index(drop=True)
    M = encode(conform(rows, schema), schema, one.vocab)
    k = 4
    avg = cf.ForgetClassifier(grouping=cf.HashGroups(k), combine="average", learner_params=params, n_jobs=2)
    avg.fit(ds.X, ds.y, ids=ds.ids)
    # the floor under averaging: each member's own prediction of the rows on its encoded matrix (its trees, which
    # trained on 1/K of the rows: deeper than one model's on average), with the threads predict uses
    mats = [(sm.member, encode(conform(rows, schema), schema, sm.member.vocab))
            for sm in avg.ensemble_.scoring_spec().members]
    got = _pairs({"one": lambda: one.booster.predict(M, num_threads=1),
                  "average": lambda: avg.predict_proba(rows),
                  "members": lambda: [m.predict_encoded(Mm, schema, avg.ensemble_.threads) for m, Mm in mats]}, reps)
    out["average"] = {"k": k, **{n_: summary(v) for n_, v in got.items()},
                      "x_per_member": 1 / paired(got["one"], got["average"]) / k,
                      "members_x_per_member": 1 / paired(got["one"], got["members"]) / k}
    table.append(_row(f"averaged HashGroups({k}), 10,000 rows / (K x one model)", out["average"]["x_per_member"], 1.2))
    table.append(_row("  of which the members' own predictions (their tree work) / (K x one model)",
                      out["average"]["members_x_per_member"], None))
    if not cfg.quick:
        sharded = cf.ForgetClassifier(grouping="native-country", combine="route", max_group_rows=2000,
                                      learner_params=params, n_jobs=2).fit(ds.X, ds.y, ids=ds.ids)
        spec = sharded.ensemble_.scoring_spec()
        per_key = {key: len(pos) for key, pos in spec.routes().items()}
        keys = conform(rows, schema).column("native-country").to_pylist()
        floor = float(np.mean([per_key.get((v,), len(spec.members)) for v in keys]))
        got = _pairs({"one": lambda: one.booster.predict(M, num_threads=1),
                      "sharded": lambda: sharded.predict_proba(rows)}, reps)
        out["sharded"] = {"members": len(spec.members), "members_per_row": floor,
                          **{n_: summary(v) for n_, v in got.items()}, "x": 1 / paired(got["one"], got["sharded"])}
        table.append(_row(f"routed with max_group_rows=2000 (a row goes through {floor:.1f} members on average), "
                          "10,000 rows / one model", out["sharded"]["x"], 1.5 * floor))
    out["kmeans"] = _kmeans(cfg, rounds, min(reps, 3), table, tmp)  # K one-model times a call
    for r in table:
        log(f"  {'MET   ' if r['ok'] else ('—     ' if r['ok'] is None else 'MISSED')} {r['figure']}: "
            f"{r['measured']:.2f}{r['unit']} (target {r['target']})")
    return out
