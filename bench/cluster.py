"""Section ``dask``: the local backend vs a LocalCluster on the same data, measured side by side.

- per-member scheduler overhead: many tiny members (constant members, no tree) through each executor;
- fit at a few sizes with ``HashGroups(16)``: local (threads, from a pandas frame) vs ``backend="dask"`` (2 worker
  processes, one thread each, from 8 Parquet files read on the workers: the rows are canonicalised, shuffled into
  groups and trained on the workers), paired per repeat; the size above which the cluster pays off is the smallest
  measured size from which the median paired ratio exceeds 1 at every larger size;
- what the client holds per row: the local backend's rows vs the dask backend's skeletons (id, hash, label);
- forget one row (one member retrains) on each backend, and the per-member training cost per 1,000 rows
  that the README's capacity plan scales up.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.common import SEED, log, make_scale, paired, summary, timed


def _overhead(client: Any, n_members: int, repeats: int) -> dict[str, Any]:
    """Seconds per member spent outside training: tiny single-class jobs through each executor."""
    from clusterforget.backends.dask import DaskExecutor
    from clusterforget.data import ID, LABEL, WEIGHT, Schema
    from clusterforget.executors import ThreadExecutor, TrainJob
    from clusterforget.members import CLASSIFICATION, make_learner

    schema = Schema(("x",), ("numeric",))
    # the canonical rows layout: every row carries its sample weight
    jobs = [TrainJob(f"g{i}", pa.table({"x": [1.0, 2.0], LABEL: [1, 1], WEIGHT: [1.0, 1.0], ID: [2 * i, 2 * i + 1]}))
            for i in range(n_members)]
    learner = make_learner("lightgbm", None, SEED)
    local, remote = [], []
    for _ in range(repeats):
        local.append(timed(lambda: ThreadExecutor(2).train(learner, schema, CLASSIFICATION, jobs))[0])
        remote.append(timed(lambda: DaskExecutor(client=client).train(learner, schema, CLASSIFICATION, jobs))[0])
    per = [(r - lo) / n_members for r, lo in zip(remote, local)]
    return {"members": n_members, "local_s": summary(local), "dask_s": summary(remote),
            "overhead_per_member_ms": 1000 * statistics.median(per)}


def run_cluster(cfg) -> dict[str, Any]:
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster

    import clusterforget as cf

    sizes = [20_000, 100_000] if cfg.quick else [20_000, 100_000, 400_000]
    repeats = 1 if cfg.quick else 3
    out: dict[str, Any] = {"workers": 2, "threads_per_worker": 1, "grouping": "hash:16", "sizes": {}}
    startup, cluster = timed(lambda: LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                  dashboard_address=None))
    out["cluster_startup_s"] = startup
    with cluster, Client(cluster) as client:
        # warm the workers (imports of lightgbm and clusterforget) so no size pays for them
        warm = make_scale(2_000, 10)
        cf.ForgetClassifier(grouping=cf.HashGroups(2), backend="dask").fit(warm.X, warm.y, warm.ids)
        n_members = 64 if cfg.quick else 256
        out["overhead"] = _overhead(client, n_members, repeats + 1)
        log(f"dask: cluster start {startup:.1f}s; scheduler overhead "
            f"{out['overhead']['overhead_per_member_ms']:.1f} ms per member ({n_members} tiny members)")
        for n in sizes:
            d = make_scale(n, 10)
            names = [f"x{j}" for j in range(d.X.shape[1])]
            frame, test = pd.DataFrame(d.X, columns=names), pd.DataFrame(d.X_test, columns=names)
            # the realistic input: Parquet files the workers read (8 of them, one partition each)
            folder = Path(tempfile.mkdtemp(prefix="cf-bench-dask-"))
            whole = frame.assign(label=d.y, row_id=d.ids)
            for i, part in enumerate(np.array_split(np.arange(n), 8)):
                whole.iloc[part].to_parquet(folder / f"part-{i}.parquet", index=False)
            ddf = dd.read_parquet(str(folder / "*.parquet"))
            local_t, dask_t, forget_l, forget_d = [], [], [], []
            for r in range(repeats):
                lm = cf.ForgetClassifier(grouping=cf.HashGroups(16), random_state=SEED, n_jobs=2)
                dm = cf.ForgetClassifier(grouping=cf.HashGroups(16), random_state=SEED, backend="dask")
                local_t.append(timed(lambda: lm.fit(frame, d.y, d.ids))[0])
                dask_t.append(timed(lambda: dm.fit(ddf, y="label", ids="row_id"))[0])
                row = [int(d.ids[r])]
                forget_l.append(timed(lambda: lm.forget_rows(row))[0])
                forget_d.append(timed(lambda: dm.forget_rows(row))[0])
                if not np.array_equal(lm.predict_proba(test), dm.predict_proba(test)):
                    raise AssertionError(f"dask and local models differ at n={n}")  # the suite checks this too
            shutil.rmtree(folder, ignore_errors=True)
            held = lambda m: sum(g.rows.nbytes for g in m.ensemble_.groups.values()) / m.n_rows_  # noqa: E731
            member_rows = n / 16
            out["sizes"][n] = {
                "fit_local_s": summary(local_t), "fit_dask_s": summary(dask_t),
                "fit_speedup_dask_over_local": paired(local_t, dask_t),
                "forget_one_row_local_s": summary(forget_l), "forget_one_row_dask_s": summary(forget_d),
                # one member retrained per forget: its cost per 1,000 rows, for the capacity plan
                "member_s_per_1k_rows": statistics.median(forget_l) / member_rows * 1000,
                # bytes per row in the client process: every row (local) vs each row's skeleton (dask)
                "client_bytes_per_row_local": held(lm), "client_bytes_per_row_dask": held(dm),
            }
            s = out["sizes"][n]
            log(f"dask: n={n:>7,} fit local {s['fit_local_s']['median']:.2f}s dask {s['fit_dask_s']['median']:.2f}s "
                f"(x{s['fit_speedup_dask_over_local']:.2f}); forget 1 row local "
                f"{s['forget_one_row_local_s']['median']:.3f}s dask {s['forget_one_row_dask_s']['median']:.3f}s; client holds "
                f"{s['client_bytes_per_row_local']:.0f} B/row local, {s['client_bytes_per_row_dask']:.0f} B/row dask")
    # the smallest size from which the cluster wins at every larger measured size too (one noisy win is not it)
    pays: list[int] = []
    for n in sorted(out["sizes"], reverse=True):
        if out["sizes"][n]["fit_speedup_dask_over_local"] <= 1:
            break
        pays.append(n)
    out["pays_off_from_rows"] = min(pays) if pays else None
    log("dask: the cluster pays off from " + (f"{out['pays_off_from_rows']:,} rows" if pays else
                                              f"no measured size (up to {max(sizes):,} rows) on this machine"))
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    """The section's table for latest.md."""
    o = r["overhead"]
    L = ["## Dask: local threads vs a LocalCluster", "",
         f"{r['workers']} worker processes x {r['threads_per_worker']} thread vs the thread backend with 2 threads, "
         f"`{r['grouping']}`; cluster start {r['cluster_startup_s']:.1f} s; scheduler overhead "
         f"{o['overhead_per_member_ms']:.1f} ms per member ({o['members']} tiny members). Pays off from: "
         + (f"{r['pays_off_from_rows']:,} rows" if r["pays_off_from_rows"] else "no measured size") + ".", "",
         "| rows | fit local | fit dask | dask speed vs local | forget 1 row local | forget 1 row dask | member s per 1k rows "
         "| client B/row local | client B/row dask |",
         "|---|---|---|---|---|---|---|---|---|"]
    for n, s in r["sizes"].items():
        L.append(f"| {int(n):,} | {s['fit_local_s']['median']:.2f} s | {s['fit_dask_s']['median']:.2f} s | "
                 f"{s['fit_speedup_dask_over_local']:.2f}x | {s['forget_one_row_local_s']['median']:.3f} s | "
                 f"{s['forget_one_row_dask_s']['median']:.3f} s | {s['member_s_per_1k_rows']:.3f} | "
                 f"{s.get('client_bytes_per_row_local', float('nan')):.0f} | {s.get('client_bytes_per_row_dask', float('nan')):.0f} |")
    return L + [""]
