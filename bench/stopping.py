"""Issue 21's measurements: ``combine="auto"`` chosen on held-out slices, and early stopping per member.

``combine``: adult (80/20 split, default settings), grouped by each key of the issue's table; holdout AUC loss
against one model (``HashGroups(1)``, the same defaults) for ``combine="average"``, ``"route"`` and ``"auto"``,
fitted side by side, with what ``auto`` chose and whether it is within 0.002 of the better fixed choice.

``stopping``: adult, credit_default and generated rows with the default grouping, ``early_stopping=False`` against
``True``: holdout score, the members' chosen rounds, fit time and single-row forget time (median of repeats, one
model after the other on the same rows).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import clusterforget as cf

from .common import PRIMARY, SEED, load_real, log, make_scale, metrics

ADULT_KEYS = ["relationship", "marital-status", "native-country", "race"]
TOLERANCE = 0.002  # AUC: auto within this of the better of route and average (issue 21)


def _model(ds, **kw: Any):
    cls = cf.ForgetRegressor if ds.task == "regression" else cf.ForgetClassifier
    return cls(random_state=SEED, n_jobs=2, **kw)


def _score(ds, model) -> float:
    out = model.predict(ds.X_test).reshape(-1, 1) if ds.task == "regression" else model.predict_proba(ds.X_test)
    return metrics(ds.task, ds.y_test, out, None if ds.task == "regression" else np.unique(ds.y))[PRIMARY[ds.task]]


def run_combine(cfg) -> list[dict[str, Any]]:
    """Rows: key, groups, AUC loss vs one model for average, route and auto, auto's choice, within tolerance."""
    ds = load_real("adult")
    base = _score(ds, _model(ds, grouping=cf.HashGroups(1)).fit(ds.X, ds.y, ids=ds.ids))
    rows = []
    for key in cfg.combine_keys:
        got: dict[str, float] = {}
        for combine in ("average", "route", "auto"):
            model = _model(ds, grouping=key, combine=combine).fit(ds.X, ds.y, ids=ds.ids)
            got[combine] = _score(ds, model) - base
            if combine == "auto":
                choice = model.ensemble_.combine_choice
                groups = len(model.ensemble_.groups)
        best = max(got["average"], got["route"])
        row = {"key": key, "groups": groups, "one_model_auc": base, **got, "chose": choice[0],
               "slice_route": choice[1], "slice_average": choice[2], "within": best - got["auto"] <= TOLERANCE}
        rows.append(row)
        log(f"combine: adult by {key}: average {got['average']:+.4f}, route {got['route']:+.4f}, "
            f"auto {got['auto']:+.4f} (chose {choice[0]}); within {TOLERANCE}: {row['within']}")
    print(combine_table(rows))
    return rows


def combine_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| key | groups | average | route | auto | auto chose (held-out AUC route / average) | within 0.002 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['key']} | {r['groups']} | {r['average']:+.4f} | {r['route']:+.4f} | {r['auto']:+.4f} | "
                     f"{r['chose']} ({r['slice_route']:.4f} / {r['slice_average']:.4f}) | "
                     f"{'yes' if r['within'] else 'NO'} |")
    return "\n".join(lines)


def run_stopping(cfg) -> list[dict[str, Any]]:
    """Rows: data set, early_stopping, members, holdout score, mean / min rounds, fit s, single-row forget s (and its
    ratio to the fixed-round model's, paired: each repeat forgets the same row from both models back to back)."""
    sets = [load_real(n) for n in cfg.stopping_datasets]
    if cfg.stopping_scale_n:
        sets.append(make_scale(cfg.stopping_scale_n, 100_000))
    rows = []
    for ds in sets:
        models, fits = {}, {}
        for stop in (False, True):
            t0 = time.perf_counter()
            models[stop] = _model(ds, early_stopping=stop).fit(ds.X, ds.y, ids=ds.ids)
            fits[stop] = time.perf_counter() - t0
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(cfg.repeats):
            victim = [ds.ids[i * 7919 % len(ds.ids)]]
            for stop in (False, True):
                t0 = time.perf_counter()
                models[stop].forget_rows(victim)
                times[stop].append(time.perf_counter() - t0)
        ratio = float(np.median(np.array(times[True]) / np.array(times[False])))
        for stop in (False, True):
            rounds = [g["rounds"] for g in models[stop].groups_]
            row = {"dataset": ds.name, "rows": len(ds.y), "early_stopping": stop, "members": len(rounds),
                   "metric": PRIMARY[ds.task], "score": _score(ds, models[stop]),
                   "rounds_mean": float(np.mean(rounds)), "rounds_min": int(min(rounds)), "fit_s": fits[stop],
                   "forget_s": float(np.median(times[stop])), "forget_ratio": ratio if stop else 1.0}
            rows.append(row)
            log(f"stopping: {ds.name} early_stopping={stop}: {row['metric']} {row['score']:.4f}, "
                f"{len(rounds)} member(s), rounds mean {row['rounds_mean']:.0f} (min {row['rounds_min']}), "
                f"fit {fits[stop]:.1f} s, single-row forget {row['forget_s']:.2f} s (x{row['forget_ratio']:.2f})")
    print(stopping_table(rows))
    return rows


def stopping_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | rows | early_stopping | members | holdout score | rounds (mean / min) | fit s | "
             "single-row forget s | forget vs fixed rounds (paired) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['rows']:,} | {r['early_stopping']} | {r['members']} | "
                     f"{r['score']:.4f} {r['metric']} | {r['rounds_mean']:.0f} / {r['rounds_min']} | "
                     f"{r['fit_s']:.1f} | {r['forget_s']:.2f} | x{r.get('forget_ratio', 1.0):.2f} |")
    return "\n".join(lines)
