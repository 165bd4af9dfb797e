"""Real data sets: accuracy per grouping and K vs the monolith, and the deletion speedup of each setting."""

from __future__ import annotations

from typing import Any

import numpy as np

import clusterforget as cf

from .common import (PRIMARY, SEED, encode_frame, label_codes, load_real, log, loss_vs, metrics, monolith_fit,
                     monolith_predict, paired, summary, timed)


def _estimator(task: str, **kw):
    # members of fixed rounds, as the timing monolith (plain lightgbm.train, 100 rounds): early stopping is measured
    # on its own (bench/stopping.py)
    kw.setdefault("early_stopping", False)
    return cf.ForgetRegressor(**kw) if task == "regression" else cf.ForgetClassifier(**kw)


def _out(m, X, task) -> np.ndarray:
    return m.predict(X).reshape(-1, 1) if task == "regression" else m.predict_proba(X)


def run_dataset(name: str, cfg, learner: str = "lightgbm", groupings: list | None = None) -> dict[str, Any]:
    R = cfg.repeats
    ds = load_real(name)
    task = ds.task
    classes = None if task == "regression" else np.unique(ds.y)
    res: dict[str, Any] = {"name": name, "task": task, "source": ds.source, "rows_train": len(ds.y),
                           "rows_test": len(ds.y_test), "learner": learner, "primary_metric": PRIMARY[task]}
    log(f"{name}: {len(ds.y):,} train / {len(ds.y_test):,} test rows, {task}, learner {learner}")

    # the monolith: one member on all rows (accuracy) and plain LightGBM on the same encoding (timing)
    one = _estimator(task, grouping=cf.HashGroups(1), learner=learner, random_state=SEED).fit(ds.X, ds.y, ids=ds.ids)
    base = metrics(task, ds.y_test, _out(one, ds.X_test, task), classes)
    res["monolith"] = base
    rng = np.random.default_rng(SEED + 3)
    mono_t: list[float] = []
    if learner == "lightgbm":
        Xtr, Xte, cats = encode_frame(ds.X, ds.X_test)
        yc, ncls = label_codes(ds.y, task)
        cf_task = "regression" if task == "regression" else "classification"
        booster = monolith_fit(Xtr, yc, cf_task, ncls, cats)
        res["monolith_equals_hashgroups1_max_abs_diff"] = float(
            np.max(np.abs(monolith_predict(booster, Xte, task) - _out(one, ds.X_test, task))))
        res["monolith_retrain_baseline"] = "plain lightgbm.train, same parameters and encoding"

        def retrain_without(pos: int) -> float:
            keep = np.ones(len(yc), dtype=bool)
            keep[pos] = False
            Xm, ym = Xtr[keep], yc[keep]
            t, _ = timed(lambda: monolith_fit(Xm, ym, cf_task, ncls, cats))
            mono_t.append(t)
            return t
    else:
        res["monolith_retrain_baseline"] = "HashGroups(1) (one member on all rows) refit"

        def retrain_without(pos: int) -> float:
            keep = np.ones(len(ds.y), dtype=bool)
            keep[pos] = False
            t, _ = timed(lambda: _estimator(task, grouping=cf.HashGroups(1), learner=learner, random_state=SEED)
                         .fit(ds.X[keep], ds.y[keep], ids=ds.ids[keep]))
            mono_t.append(t)
            return t

    for r in range(R):
        retrain_without(int(rng.integers(len(ds.y))))
    mono = summary(mono_t)
    log(f"{name}: monolith {PRIMARY[task]} {base[PRIMARY[task]]:.4f}, retrain {mono['median']:.2f}s")
    res["monolith_retrain"] = mono  # updated below with every paired retrain

    if groupings is None:
        groupings = [("hash", K) for K in cfg.ks] + [("kmeans", K) for K in cfg.ks_kmeans]
        groupings += [("key", c) for c in ds.keys[: cfg.n_keys]]
    rows = []
    order = rng.permutation(len(ds.ids))  # positions of the rows to forget, in order; never one twice
    next_id = 0
    for kind, param in groupings:
        grouping = cf.HashGroups(param) if kind == "hash" else cf.KMeansGroups(param) if kind == "kmeans" else param
        t_fit, m = timed(lambda: _estimator(task, grouping=grouping, learner=learner, random_state=SEED)
                         .fit(ds.X, ds.y, ids=ds.ids))
        ens = m.ensemble_
        n_groups = len(m.groups_)
        combines = ["average", "route"] if ens.grouping.routable else ["average"]
        accs = {}
        for comb in combines:
            m.ensemble_ = ens.evolve(combine=comb)  # a predict-time setting; fitting does not depend on it
            accs[comb] = metrics(task, ds.y_test, _out(m, ds.X_test, task), classes)
        m.ensemble_ = ens.evolve(combine="average")
        # forget one random row, retrain now, R times (the model keeps forgetting: each is a real deletion)
        ft, mt, refits, changed = [], [], 0, 0
        for r in range(R):
            pos = int(order[next_id])
            next_id += 1
            rid = ds.ids[pos]
            mt.append(retrain_without(pos))  # the monolith retrain without the same row, back to back
            t, rep = timed(lambda: m.forget_rows([rid]))
            ft.append(t)
            refits += int(rep.clustering_refit)
            changed += int(rep.clustering_changed)
        fts = summary(ft)
        speedup = paired(mt, ft)
        # forget_group (from the fitted state each time, kept by reference), deferred retrain of nothing
        gts = []
        keys = [g["key"] for g in m.groups_]
        for r in range(R):
            snap = m.ensemble_  # states are immutable: keeping the reference is the undo
            t, _ = timed(lambda: m.forget_group(keys[r % len(keys)], retrain="deferred"))
            m.ensemble_ = snap
            gts.append(t)
        label = f"{kind} K={param}" if kind != "key" else f"key {param}"
        for comb, acc in accs.items():
            rows.append({
                "grouping": kind, "param": param, "label": label, "combine": comb, "groups": n_groups,
                "metrics": acc, "loss": loss_vs(task, base, acc), "fit_s": t_fit,
                "forget_1_now": fts, "speedup_now": speedup, "monolith_retrain_paired": summary(mt),
                "forget_group_deferred": summary(gts),
                "clustering_refit": refits, "clustering_changed": changed,
            })
        log(f"{name}: {label:<28} groups {n_groups:>3}  "
            + "  ".join(f"{c} loss {loss_vs(task, base, a):+.4f}" for c, a in accs.items())
            + f"  forget {fts['median']:.3f}s ({speedup:.1f}x)")
    res["settings"] = rows
    res["monolith_retrain"] = summary(mono_t)
    return res


def run_real(cfg) -> list[dict[str, Any]]:
    import traceback

    out = []
    for name in cfg.datasets:
        try:
            out.append(run_dataset(name, cfg))
        except Exception as exc:  # noqa: BLE001 - keep the other data sets
            log(f"{name} FAILED: {exc!r}\n{traceback.format_exc(limit=6)}")
    if cfg.xgboost:
        try:
            import xgboost  # noqa: F401
        except ImportError:
            log("xgboost not installed: skipping the xgboost comparison")
            return out
        for name in cfg.xgb_datasets:
            ds_keys = {"adult": "race", "credit_default": "EDUCATION", "california_housing": "ocean_proximity"}
            gl = [("hash", 16), ("kmeans", 16)] + ([("key", ds_keys[name])] if name in ds_keys else [])
            out.append(run_dataset(name, cfg, learner="xgboost", groupings=gl))
    return out
