"""Time to no influence: a single-row deferred forget at scale, zero-copy removal vs copying the group's rows.

The reference is DaRE-RF's median single-row deletion, 3.5 ms on adult (the best exact deleter of tree models we
measured; the issue's must), and the goal is under 1 ms. Both removals run side by side on the same fitted
model, alternating, each on a fresh random row: ``ensemble.MAX_SLICED = 0`` makes a removal copy the group's
rows (a filter), as before zero-copy removal.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

import clusterforget as cf
from clusterforget import ensemble

from .common import SEED, log, make_scale, timed

DARE_MS = 3.5  # DaRE-RF, median single-row deletion on adult (bench/findings.md)


def run_deferred(cfg) -> dict[str, Any]:
    ds = make_scale(cfg.deferred_n, 1_000)
    # members do not matter to the deferred path (it trains nothing): few rounds keep the fit short
    m = cf.ForgetClassifier(grouping=cf.HashGroups(16), learner_params={"num_iterations": 10}, random_state=SEED)
    m.fit(ds.X, ds.y, ids=ds.ids)
    rng = np.random.default_rng(SEED + 11)
    victims = rng.choice(ds.ids, 2 * cfg.deferred_repeats, replace=False).tolist()
    zero, copy = [], []
    default = ensemble.MAX_SLICED
    try:
        for i in range(cfg.deferred_repeats):
            ensemble.MAX_SLICED = default
            zero.append(timed(lambda: m.forget_rows([victims[2 * i]], retrain="deferred"))[0])
            ensemble.MAX_SLICED = 0
            copy.append(timed(lambda: m.forget_rows([victims[2 * i + 1]], retrain="deferred"))[0])
    finally:
        ensemble.MAX_SLICED = default
    med_zero, med_copy = statistics.median(zero) * 1000, statistics.median(copy) * 1000
    ratios = [c / z for z, c in zip(zero, copy)]
    res = {"rows": cfg.deferred_n, "grouping": "hash:16", "repeats": cfg.deferred_repeats,
           "zero_copy_ms": {"median": med_zero, "min": min(zero) * 1000, "max": max(zero) * 1000},
           "copy_ms": {"median": med_copy, "min": min(copy) * 1000, "max": max(copy) * 1000},
           "speedup_median_of_pairs": statistics.median(ratios), "dare_ms": DARE_MS,
           "vs_dare": DARE_MS / med_zero}
    log(f"deferred at {cfg.deferred_n:,} rows: zero-copy {med_zero:.2f} ms median ({min(zero) * 1000:.2f}-"
        f"{max(zero) * 1000:.2f}), copying {med_copy:.2f} ms; pairs x{res['speedup_median_of_pairs']:.1f}; "
        f"DaRE {DARE_MS} ms = x{res['vs_dare']:.1f}")
    return res
