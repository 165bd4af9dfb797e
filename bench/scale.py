"""The scale workload: make_classification n x 20, forgetting vs monolith retraining, fit, memory, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import clusterforget as cf

from .common import (REPO, SEED, load_average, log, make_scale, metrics, monolith_fit, monolith_predict, paired,
                     ratio, summary, timed)

# members of fixed rounds, as the monolith they are timed against (early stopping: bench/stopping.py)
FIXED = {"early_stopping": False}


class RowPicker:
    """Random distinct row ids, never the same id twice in a run (every pick is still a row of every model)."""

    def __init__(self, n: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.used: set[int] = set()

    def pick(self, k: int = 1, among: np.ndarray | None = None) -> np.ndarray:
        out: list[int] = []
        pool = among
        while len(out) < k:
            cand = (self.rng.choice(pool, size=k) if pool is not None else self.rng.integers(0, self.n, size=2 * k))
            for c in cand.tolist():
                if c not in self.used:
                    self.used.add(c)
                    out.append(int(c))
                    if len(out) == k:
                        break
        return np.asarray(out, dtype=np.int64)


def _grouping(spec: str):
    kind, k = spec.split(":")
    return cf.HashGroups(int(k)) if kind == "hash" else cf.KMeansGroups(int(k))


def retrain_monolith(X: np.ndarray, yf: np.ndarray, picker: RowPicker) -> float:
    """One monolith retrain on the rows minus one random row (the copy is made outside the timing)."""
    keep = np.ones(len(yf), dtype=bool)
    keep[picker.pick()[0] % len(yf)] = False
    Xm, ym = X[keep], yf[keep]
    t, _ = timed(lambda: monolith_fit(Xm, ym, "classification", 2, []))
    return t


def guarded(res: dict[str, Any], name: str, fn):
    """Run one subsection; a failure is recorded in the results instead of losing the whole run."""
    import traceback

    try:
        res[name] = fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark keeps going and reports what broke
        log(f"scale: {name} FAILED: {exc!r}")
        res.setdefault("errors", {})[name] = traceback.format_exc(limit=6)


def run_scale(cfg) -> dict[str, Any]:
    R = cfg.repeats
    n, n_test = cfg.scale_n, cfg.scale_test
    res: dict[str, Any] = {"n_rows": n, "n_test": n_test, "repeats": R}
    log(f"scale: generating {n:,} + {n_test:,} rows")
    ds = make_scale(n, n_test)
    res["data"] = ds.source
    X, y, Xte, yte = ds.X, ds.y, ds.X_test, ds.y_test
    yf = y.astype(np.float64)
    threads = os.cpu_count() or 1

    # --- sanity: the plain-LightGBM monolith equals the library's one-member model (HashGroups(1))
    m_small = min(n, 20_000)
    b_small = monolith_fit(X[:m_small], yf[:m_small], "classification", 2, [])
    one = cf.ForgetClassifier(grouping=cf.HashGroups(1), random_state=SEED, **FIXED).fit(X[:m_small], y[:m_small])
    diff = float(np.max(np.abs(one.predict_proba(Xte[:5000]) - monolith_predict(b_small, Xte[:5000], "binary"))))
    res["monolith_equals_hashgroups1_max_abs_diff"] = diff
    log(f"scale: plain LightGBM vs HashGroups(1) max |diff| = {diff:.3g}")

    # --- fit every model once (in-process fit times are informational; the fit ratio comes from subprocesses)
    log("scale: fitting the monolith and the grouped models")
    t, booster = timed(lambda: monolith_fit(X, yf, "classification", 2, []))
    fits = {"monolith": t}
    models: dict[str, Any] = {}
    for spec in cfg.scale_groupings:
        t, m = timed(lambda: cf.ForgetClassifier(grouping=_grouping(spec), random_state=SEED, **FIXED).fit(X, y))
        models[spec] = m
        fits[spec] = t
        log(f"scale: fit {spec} {t:.1f}s ({len(m.groups_)} members); monolith {fits['monolith']:.1f}s")
    res["fit_in_process_s"] = fits

    # --- accuracy at scale
    acc = {"monolith": metrics("binary", yte, monolith_predict(booster, Xte, "binary"))}
    for spec, m in models.items():
        ens = m.ensemble_
        combines = ["average", "route"] if ens.grouping.routable else ["average"]
        for comb in combines:
            m.ensemble_ = ens.evolve(combine=comb)  # predict-time setting only; fitting does not depend on it
            acc[f"{spec} {comb}"] = metrics("binary", yte, m.predict_proba(Xte))
        m.ensemble_ = ens.evolve(combine="average")
    res["accuracy"] = {k: {**v, "delta_auc": acc["monolith"]["auc"] - v["auc"]} for k, v in acc.items()}

    picker = RowPicker(n, SEED + 1)

    # --- forget 1 row: retrain now and deferred, side by side with a monolith retrain, per repeat
    log("scale: forget 1 row (now / deferred) vs monolith retrain")
    mono_retrain: list[float] = []
    now: dict[str, list[float]] = {s: [] for s in models}
    deferred: dict[str, list[float]] = {s: [] for s in models}
    catchup: dict[str, list[float]] = {s: [] for s in models}
    details: dict[str, list[dict]] = {s: [] for s in models}
    loads = []
    for r in range(R):
        mono_retrain.append(retrain_monolith(X, yf, picker))
        loads.append(load_average()[:1])
        for spec, m in models.items():
            rid = picker.pick()
            t, rep = timed(lambda: m.forget_rows(rid))
            now[spec].append(t)
            details[spec].append({"mode": "now", "groups_retrained": len(rep.groups_retrained),
                                  "clustering_refit": rep.clustering_refit, "clustering_changed": rep.clustering_changed})
            rid = picker.pick()
            t, rep = timed(lambda: m.forget_rows(rid, retrain="deferred"))
            deferred[spec].append(t)
            details[spec].append({"mode": "deferred", "groups_pending": len(rep.groups_pending),
                                  "clustering_refit": rep.clustering_refit, "clustering_changed": rep.clustering_changed})
            t, _ = timed(m.retrain_pending)
            catchup[spec].append(t)
        log(f"scale: repeat {r + 1}/{R} (load {loads[-1]}): monolith retrain {mono_retrain[-1]:.2f}s; "
            + "; ".join(f"{s} now {now[s][-1]:.3f}s deferred {1000 * deferred[s][-1]:.1f}ms" for s in models))
    mono = summary(mono_retrain)
    res["monolith_retrain"] = mono
    res["load_average_per_repeat"] = loads
    res["forget_1"] = {
        s: {"now": summary(now[s]), "deferred": summary(deferred[s]), "retrain_pending": summary(catchup[s]),
            "speedup_now": paired(mono_retrain, now[s]), "speedup_deferred": paired(mono_retrain, deferred[s]),
            "ratio_of_medians_now": ratio(mono, summary(now[s])),
            "ratio_of_medians_deferred": ratio(mono, summary(deferred[s])),
            "details": details[s]}
        for s in models
    }

    # --- the trade-off at scale: deletion speedup vs AUC loss for every grouping kind and K
    guarded(res, "tradeoff", lambda: tradeoff(cfg, X, y, Xte, yte, models, res, picker))

    # --- a batch of k random rows vs k monolith retrains (estimated as k x the measured single retrain)
    k = cfg.batch_k
    log(f"scale: forget {k} random rows batched")
    batch_now: dict[str, list[float]] = {s: [] for s in cfg.batch_groupings}
    batch_def: dict[str, list[float]] = {s: [] for s in cfg.batch_groupings}
    batch_det: dict[str, list[dict]] = {s: [] for s in cfg.batch_groupings}
    batch_mono: list[float] = []
    for r in range(R):
        batch_mono.append(retrain_monolith(X, yf, picker))
        for spec in cfg.batch_groupings:
            m = models[spec]
            ids = picker.pick(k)
            t, rep = timed(lambda: m.forget_rows(ids))
            batch_now[spec].append(t)
            batch_det[spec].append({"groups_retrained": len(rep.groups_retrained), "groups": len(m.groups_),
                                    "clustering_changed": rep.clustering_changed})
            ids = picker.pick(k)
            t, rep = timed(lambda: m.forget_rows(ids, retrain="deferred"))
            batch_def[spec].append(t)
            m.retrain_pending()
        log(f"scale: batch repeat {r + 1}/{R}: " + "; ".join(f"{s} {batch_now[s][-1]:.2f}s" for s in batch_now))
    bm = summary(batch_mono)
    est = {"median": k * bm["median"], "min": k * bm["min"], "max": k * bm["max"], "n": bm["n"],
           "samples": [k * x for x in batch_mono],
           "estimated_as": f"{k} x the measured single monolith retrain (one retrain per repeat, back to back)"}
    res["forget_batch"] = {
        "k": k, "monolith_estimate": est,
        "by_grouping": {s: {"now": summary(batch_now[s]), "deferred": summary(batch_def[s]),
                            "speedup_now": paired(est["samples"], batch_now[s]),
                            "speedup_deferred": paired(est["samples"], batch_def[s]),
                            "ratio_of_medians_now": est["median"] / summary(batch_now[s])["median"],
                            "details": batch_det[s]} for s in batch_now},
    }

    # --- predict throughput, route / average vs monolith
    log("scale: predict throughput")
    pt: dict[str, list[float]] = {"monolith": []}
    variants = []
    for spec, m in models.items():
        for comb in (["route", "average"] if m.ensemble_.grouping.routable else ["average"]):
            variants.append((f"{spec} {comb}", m, comb))
            pt[f"{spec} {comb}"] = []
    for r in range(R):
        t, _ = timed(lambda: booster.predict(Xte, num_threads=threads))
        pt["monolith"].append(t)
        for name, m, comb in variants:
            m.ensemble_ = m.ensemble_.evolve(combine=comb)
            t, _ = timed(lambda: m.predict_proba(Xte))
            pt[name].append(t)
            m.ensemble_ = m.ensemble_.evolve(combine="average")
    base = summary(pt["monolith"])
    res["predict"] = {name: {**summary(v), "rows_per_s": n_test / summary(v)["median"],
                             "vs_monolith": paired(pt["monolith"], v),  # throughput ratio, per repeat pair
                             "ratio_of_medians": base["median"] / summary(v)["median"]}
                      for name, v in pt.items()}

    # --- the share of groups a batch of k random deletions touches vs 1 - (1 - 1/K)^k
    log("scale: share of groups touched by k random deletions")
    touched: dict[str, Any] = {}
    for spec, m in models.items():
        sizes = np.array([g["rows"] for g in m.groups_], dtype=np.float64)
        K = len(sizes)
        p = sizes / sizes.sum()
        rows = []
        for kk in cfg.touched_ks:
            shares, changed = [], 0
            for r in range(R):
                ids = picker.pick(kk)
                snap = m.ensemble_  # states are immutable: keeping the reference is the undo
                rep = m.forget_rows(ids, retrain="deferred")
                m.ensemble_ = snap
                shares.append(len(rep.groups_pending) / K)
                changed += int(rep.clustering_changed)
            rows.append({"k": kk, "measured": float(np.mean(shares)), "samples": shares,
                         "formula": 1 - (1 - 1 / K) ** kk,
                         "formula_sized": float(np.mean(1 - (1 - p) ** kk)),
                         "clustering_changed": changed})
        touched[spec] = {"K": K, "rows": rows}
    res["touched_share"] = touched

    # --- forget_group: absolute time, 10k .. n rows, and the monolith retrain at each size
    log("scale: forget_group vs size")
    fg_rows = []
    for size in cfg.group_sizes:
        if size > n:
            continue
        Xs, ys = X[:size], y[:size]
        mono_t = []
        m = cf.ForgetClassifier(grouping=cf.HashGroups(16), random_state=SEED, **FIXED).fit(Xs, ys)
        ts = []
        for r in range(R):
            if size != n:  # at n rows the forget section measured the monolith retrain already
                t, _ = timed(lambda: monolith_fit(Xs, ys.astype(float), "classification", 2, []))
                mono_t.append(t)
            else:
                mono_t.append(mono_retrain[r])
            snap = m.ensemble_
            t, rep = timed(lambda: m.forget_group(r % 16))
            m.ensemble_ = snap
            assert not rep.groups_retrained
            ts.append(t)
        km = cf.ForgetClassifier(grouping=cf.KMeansGroups(16), random_state=SEED, **FIXED).fit(Xs, ys)
        kts, kchanged, know = [], 0, []
        keys = [g["key"] for g in km.groups_]
        for r in range(R):
            snap = km.ensemble_
            t, rep = timed(lambda: km.forget_group(keys[r % len(keys)], retrain="deferred"))
            km.ensemble_ = snap
            kts.append(t)
            kchanged += int(rep.clustering_changed)
        row = {"rows": size, "hash16_now": summary(ts), "monolith_retrain": summary(mono_t),
               "speedup": paired(mono_t, ts),
               "kmeans16_deferred": summary(kts), "kmeans16_clustering_changed": kchanged}
        fg_rows.append(row)
        log(f"scale: forget_group at {size:,} rows: hash16 {1000 * row['hash16_now']['median']:.2f} ms, "
            f"kmeans16 deferred {1000 * row['kmeans16_deferred']['median']:.1f} ms ({kchanged}/{R} changed)")
        del m, km
    res["forget_group"] = fg_rows

    # --- the kmeans cascade: how often forgetting one row refits / changes the clustering
    log("scale: kmeans cascade rate")
    guarded(res, "cascade", lambda: [cascade(X[:size], y[:size], size, cfg, models.get("kmeans:16") if size == n else None)
                                     for size in cfg.cascade_sizes if size <= n])

    # --- fit wall time and peak memory: one subprocess per side, alternating, R pairs
    log("scale: fit time and peak memory (subprocesses)")
    guarded(res, "fit_memory", lambda: fit_memory(cfg, X, y))
    res["_models"] = models  # for the profiler; dropped before writing
    res["_booster"] = booster
    res["_data"] = (X, y, Xte)
    return res


def cascade(X, y, size: int, cfg, model=None) -> dict[str, Any]:
    """Single-row forgets from one fitted state (kept by reference, put back after each), deferred so only the partition work counts."""
    from clusterforget.data import id_hash
    import pyarrow as pa

    m = model or cf.ForgetClassifier(grouping=cf.KMeansGroups(16), random_state=SEED, **FIXED).fit(X, y)
    m.retrain_pending()
    ens = m.ensemble_
    thr = np.uint64(ens.state.threshold)
    ids = np.sort(np.concatenate([g.rows.column("__cf_id__").to_numpy() for g in ens.groups.values()]))  # held now
    in_sample = ids[id_hash(pa.array(ids)) <= thr]
    rng = np.random.default_rng(SEED + 2)
    out: dict[str, Any] = {"rows": int(len(ids)), "sample_rows": int(len(in_sample)),
                           "sample_share": len(in_sample) / len(ids)}
    for label, pool, trials in (("random", ids, cfg.cascade_random), ("in_sample", in_sample, cfg.cascade_insample)):
        refit = changed = 0
        secs, moved = [], []
        for rid in rng.choice(pool, size=trials, replace=False).tolist():
            snap = m.ensemble_
            t, rep = timed(lambda: m.forget_rows([rid], retrain="deferred"))
            m.ensemble_ = snap
            refit += int(rep.clustering_refit)
            changed += int(rep.clustering_changed)
            secs.append(t)
            moved.append(rep.rows_moved)
        out[label] = {"trials": trials, "refit": refit, "changed": changed, "refit_rate": refit / trials,
                      "changed_rate": changed / trials, "seconds": summary(secs),
                      "rows_moved_when_changed": [x for x in moved if x]}
    out["changed_rate_expected"] = out["sample_share"] * out["in_sample"]["changed_rate"]
    log(f"scale: cascade at {size:,}: random refit {out['random']['refit_rate']:.1%} changed "
        f"{out['random']['changed_rate']:.1%}; in-sample changed {out['in_sample']['changed_rate']:.1%}")
    return out


def fit_memory(cfg, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    runs: dict[str, list[dict]] = {"mono": [], "grouped": []}
    tmp = REPO / "bench" / "results" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    prefix = tmp / f"scale_{len(y)}"
    np.save(str(prefix) + "_X.npy", np.ascontiguousarray(X))
    np.save(str(prefix) + "_y.npy", y)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for r in range(cfg.repeats):
        for side in ("mono", "grouped"):
            cmd = [sys.executable, "-m", "bench.memchild", "--side", side, "--data", str(prefix),
                   "--grouping", cfg.memory_grouping, "--seed", str(SEED)]
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"memchild failed: {p.stderr[-2000:]}")
            runs[side].append(json.loads(p.stdout.strip().splitlines()[-1]))
        log(f"scale: fit pair {r + 1}/{cfg.repeats}: monolith {runs['mono'][-1]['fit_s']:.1f}s "
            f"{runs['mono'][-1]['rss_peak_mb']:.0f} MiB; grouped {runs['grouped'][-1]['fit_s']:.1f}s "
            f"{runs['grouped'][-1]['rss_peak_mb']:.0f} MiB")
    for suffix in ("_X.npy", "_y.npy"):
        Path(str(prefix) + suffix).unlink(missing_ok=True)
    out: dict[str, Any] = {"grouping": cfg.memory_grouping, "n_rows": len(y),
                           "peak_source": runs["mono"][0].get("peak_source")}
    for side, rs in runs.items():
        out[side] = {"fit_s": summary([x["fit_s"] for x in rs]),
                     "rss_before_mb": summary([x["rss_before_mb"] for x in rs]),
                     "rss_peak_mb": summary([x["rss_peak_mb"] for x in rs]),
                     "fit_increment_mb": summary([x["rss_peak_mb"] - x["rss_before_mb"] for x in rs])}
    out["fit_time_ratio"] = paired([x["fit_s"] for x in runs["grouped"]], [x["fit_s"] for x in runs["mono"]])
    out["fit_time_ratio_of_medians"] = out["grouped"]["fit_s"]["median"] / out["mono"]["fit_s"]["median"]
    out["peak_memory_ratio"] = out["grouped"]["rss_peak_mb"]["median"] / out["mono"]["rss_peak_mb"]["median"]
    out["fit_increment_ratio"] = (out["grouped"]["fit_increment_mb"]["median"]
                                  / max(out["mono"]["fit_increment_mb"]["median"], 1e-9))
    return out


def tradeoff(cfg, X, y, Xte, yte, models, res, picker) -> dict[str, Any]:
    """Settings in the same shape as the real data sets', so the trade-off plot gets a panel for this data."""
    log("scale: trade-off over grouping kinds and K")
    mono = res["monolith_retrain"]
    base = res["accuracy"]["monolith"]
    settings = []
    specs = [f"hash:{k}" for k in cfg.scale_ks] + [f"kmeans:{k}" for k in cfg.scale_ks]
    for spec in specs:
        kind, k = spec.split(":")
        m = models.get(spec)
        fit_s = res["fit_in_process_s"].get(spec)
        if m is None:
            fit_s, m = timed(lambda: cf.ForgetClassifier(grouping=_grouping(spec), random_state=SEED,
                                                         **FIXED).fit(X, y))
        ens = m.ensemble_
        accs = {}
        for comb in (["average", "route"] if ens.grouping.routable else ["average"]):
            m.ensemble_ = ens.evolve(combine=comb)
            accs[comb] = metrics("binary", yte, m.predict_proba(Xte))
        m.ensemble_ = ens.evolve(combine="average")
        if spec in res["forget_1"]:
            fts = res["forget_1"][spec]["now"]
            speedup = res["forget_1"][spec]["speedup_now"]
            refit = sum(d["clustering_refit"] for d in res["forget_1"][spec]["details"] if d["mode"] == "now")
            changed = sum(d["clustering_changed"] for d in res["forget_1"][spec]["details"] if d["mode"] == "now")
        else:
            ft, mt, refit, changed = [], [], 0, 0
            for r in range(cfg.repeats):
                mt.append(retrain_monolith(X, y.astype(np.float64), picker))
                rid = picker.pick()
                t, rep = timed(lambda: m.forget_rows(rid))
                ft.append(t)
                refit += int(rep.clustering_refit)
                changed += int(rep.clustering_changed)
            fts = summary(ft)
            speedup = paired(mt, ft)
        for comb, acc in accs.items():
            settings.append({"grouping": kind, "param": int(k), "label": f"{kind} K={k}", "combine": comb,
                             "groups": len(m.groups_), "metrics": acc, "loss": base["auc"] - acc["auc"],
                             "fit_s": fit_s, "forget_1_now": fts, "speedup_now": speedup,
                             "clustering_refit": refit, "clustering_changed": changed})
        log(f"scale: {spec:<10} " + "  ".join(f"{c} AUC loss {base['auc'] - a['auc']:+.4f}" for c, a in accs.items())
            + f"  forget {fts['median']:.3f}s ({speedup:.1f}x)")
        del m
    return {"name": f"make_classification {res['n_rows']:,}", "task": "binary", "learner": "lightgbm",
            "monolith": base, "settings": settings}
