"""The measurement behind ``grouping="auto"``: accuracy loss of hash shards against rows per shard.

For each bundled data set (and a synthetic 200k-row set) it fits ``HashGroups(K)`` for K = 1, 2, 4, ... and
reports the holdout loss vs one model (K=1) next to the rows (and minority-class rows) per shard, so the
auto rule's thresholds (``clusterforget.grouping.AutoGroups``) can be read off the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import clusterforget as cf
from clusterforget.grouping import AutoGroups

from .common import PRIMARY, SEED, load_real, log, loss_vs, make_scale, metrics


def _fit_eval(ds, k: int) -> dict[str, float]:
    cls = cf.ForgetRegressor if ds.task == "regression" else cf.ForgetClassifier
    # fixed rounds at every K (early stopping would start at K=1 and not at K=4: bench/stopping.py measures it)
    m = cls(grouping=cf.HashGroups(k), random_state=SEED, n_jobs=2, early_stopping=False).fit(ds.X, ds.y, ids=ds.ids)
    out = m.predict(ds.X_test).reshape(-1, 1) if ds.task == "regression" else m.predict_proba(ds.X_test)
    return metrics(ds.task, ds.y_test, out, None if ds.task == "regression" else np.unique(ds.y))


def run_auto(cfg) -> list[dict[str, Any]]:
    """Rows: dataset, task, K, rows per shard, minority rows per shard, loss vs K=1, and the K auto picks."""
    sets = [load_real(n) for n in cfg.auto_datasets]
    if cfg.auto_scale_n:
        sets.append(make_scale(cfg.auto_scale_n, 20_000))
    rows: list[dict[str, Any]] = []
    for ds in sets:
        n = len(ds.y)
        task = "regression" if ds.task == "regression" else "classification"
        counts = None if task == "regression" else np.unique(ds.y, return_counts=True)[1]
        minority = None if counts is None else int(counts.min())
        auto_k = AutoGroups().choose_k(n, task, counts)
        base = _fit_eval(ds, 1)
        for k in cfg.auto_ks:
            if n // k < 200:
                break
            res = base if k == 1 else _fit_eval(ds, k)
            loss = loss_vs(ds.task, base, res)
            rows.append({"dataset": ds.name, "task": ds.task, "k": k, "rows_per_shard": n // k,
                         "minority_per_shard": None if minority is None else minority // k,
                         "metric": PRIMARY[ds.task], "loss": loss, "auto_k": auto_k})
            log(f"auto: {ds.name} K={k}: {n // k:,} rows/shard, loss {loss:+.4f} ({PRIMARY[ds.task]}); auto K={auto_k}")
    return rows
