"""``cf.suspects`` against cleanlab on real data with planted label noise.

For each data set, noise kind (uniform, or class-conditional: three quarters of the flips from the positive
class) and rate, the training labels are flipped and both methods rank the training rows:

* clusterforget: ``cf.suspects`` on the ensemble fitted on the noisy labels (hash shards; nothing trained);
* cleanlab: ``find_label_issues`` on 5-fold cross-validated probabilities of LightGBM with the members' exact
  parameters (plain ``lightgbm.train`` on the same encoding); its time includes the cross-validation.

Both rank by the probability of the given label (self-confidence, cleanlab's own ranking). Precision and recall at
k = the number of flips and at k/2, the size and precision of each method's own flagged set, and the time of each,
measured back to back. Then acting: the holdout AUC of the clean model, the noisy one, and the noisy one after
``forget_rows`` / ``relabel(ids=, label=suggested)`` of the top k/2 and k suspects, of the top ``recommended_k``
and of ``per_class()`` (both chosen from the scores alone, without knowing k), and the share of the lost AUC that
acting recovered. Groupings: ``hash:K``, ``auto`` and ``auto:off`` (``auto`` without early stopping, beside it). Where the noise cost less than ``WORTH`` AUC, the table says that acting is not worth it.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

import clusterforget as cf

from .common import SEED, encode_frame, load_real, log, monolith_fit, monolith_predict, timed

WORTH = 0.005  # AUC the noise must cost before acting on suspects can be told apart from noise of the split


def flip(y: np.ndarray, rate: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Positions of the labels to flip: ``rate`` of the rows, uniformly or 3/4 of them from the positive class."""
    n = int(round(rate * len(y)))
    if kind == "uniform":
        return np.sort(rng.choice(len(y), n, replace=False))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(len(pos), int(round(0.75 * n)))
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n - n_pos, replace=False)]))


def precision_recall(ranked: np.ndarray, flipped: np.ndarray, k: int) -> tuple[float, float]:
    hits = int(np.isin(ranked[:k], flipped).sum())
    return hits / max(k, 1), hits / max(len(flipped), 1)


def cleanlab_rank(X, y: np.ndarray, params: dict | None, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Positions ranked by cleanlab's self-confidence on K-fold probabilities, and its flagged positions."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    Xe, _, cats = encode_frame(X)
    P = np.zeros((len(y), 2))
    threads = os.cpu_count() or 1
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(Xe, y):
        booster = monolith_fit(Xe[tr], y[tr], "classification", 2, cats, params, SEED, threads)
        P[te] = monolith_predict(booster, Xe[te], "binary", threads)
    scores = get_label_quality_scores(y, P, method="self_confidence")
    flagged = find_label_issues(y, P)
    return np.argsort(scores, kind="stable"), np.flatnonzero(flagged)


def timed_cpu(fn) -> tuple[float, float, Any]:
    """Wall and CPU seconds (every thread of this process) of ``fn()``, and its result. Under a load that takes
    the cores, wall ratios follow the load; CPU time is the work each method does."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def predict_floor(model) -> tuple[float, float, int]:
    """Seconds of plain ``lightgbm.Booster.predict`` calls, one per member, over every training row the member did
    not train on, with the ensemble's threads (the rows already encoded): the predictions ``cf.suspects`` cannot do
    without when each row is scored by all the members that never saw it. Also their CPU seconds and the number of
    row predictions."""
    import pyarrow as pa

    from clusterforget.scoring import Encoded

    ens = model.ensemble_
    spec = ens.scoring_spec()
    if spec.combine == "route":
        return float("nan"), float("nan"), 0
    jobs = []
    for sm in spec.members:
        if sm.weight <= 0:
            continue
        rows = pa.concat_tables([ens.full_rows(g) for gid, g in ens.groups.items()
                                 if gid != (sm.key, sm.shard) and g.n_rows])
        jobs.append((sm.member.booster, np.ascontiguousarray(Encoded(rows, spec.schema).matrix(sm.member))))
    wall, cpu, _ = timed_cpu(lambda: [booster.predict(M, num_threads=spec.n_threads) for booster, M in jobs])
    return wall, cpu, sum(len(M) for _, M in jobs)


def model_settings(grouping: str) -> dict[str, Any]:
    """``hash:K`` (K hash shards), ``auto``, or ``auto:off`` (``grouping="auto"`` with ``early_stopping=False``:
    beside ``auto``, what early stopping's member training does to the ranking and to acting on it)."""
    if grouping.startswith("hash:"):
        return {"grouping": cf.HashGroups(int(grouping.split(":")[1]))}
    return {"grouping": "auto", "early_stopping": False if grouping == "auto:off" else "auto"}


def _auc(model, X, y) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, model.predict_proba(X)[:, 1]))


def run_case(ds, grouping: str, kind: str, rate: float, params: dict | None, draw: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + int(rate * 1000) + (7 if kind != "uniform" else 0) + 1009 * draw)
    y = ds.y
    flipped = flip(y, rate, kind, rng)
    noisy = y.copy()
    noisy[flipped] = 1 - noisy[flipped]
    make = lambda: cf.ForgetClassifier(**model_settings(grouping), learner_params=params, random_state=SEED)  # noqa: E731
    fit_s, model = timed(lambda: make().fit(ds.X, noisy, ids=ds.ids))
    # ours before and after cleanlab (the mean: a load that drifts during cleanlab's run weighs on both sides)
    before, _, found = timed_cpu(lambda: cf.suspects(model))
    ids_flipped = ds.ids[flipped]
    theirs_s, theirs_cpu, (ranked, their_flagged) = timed_cpu(lambda: cleanlab_rank(ds.X, noisy, params))
    after, ours_cpu, again = timed_cpu(lambda: cf.suspects(model))
    assert np.array_equal(found.ids, again.ids)
    ours_s = (before + after) / 2
    floor_s, floor_cpu, predictions = predict_floor(model)
    k = len(flipped)
    row: dict[str, Any] = {"dataset": ds.name, "grouping": grouping, "members": len(model.groups_),
                           "rounds": [g["rounds"] for g in model.groups_], "noise": kind,
                           "rate": rate, "draw": draw, "rows": len(y), "flips": k, "fit_s": fit_s, "ours_s": ours_s,
                           "ours_s_runs": [before, after], "cleanlab_s": theirs_s, "time_ratio": ours_s / theirs_s,
                           "ours_cpu_s": ours_cpu, "cleanlab_cpu_s": theirs_cpu, "cpu_ratio": ours_cpu / theirs_cpu,
                           "floor_s": floor_s, "floor_predictions": predictions, "floor_ratio": floor_s / theirs_s,
                           "floor_cpu_s": floor_cpu, "floor_cpu_ratio": floor_cpu / theirs_cpu}
    for name, at in (("k", k), ("k2", k // 2)):
        row[f"ours_p_{name}"], row[f"ours_r_{name}"] = precision_recall(found.ids, ids_flipped, at)
        row[f"cleanlab_p_{name}"], row[f"cleanlab_r_{name}"] = precision_recall(ds.ids[ranked], ids_flipped, at)
    ours_flagged = found.ids[found.flagged]
    row["ours_flagged"], row["cleanlab_flagged"] = len(ours_flagged), len(their_flagged)
    row["ours_flagged_precision"] = float(np.isin(ours_flagged, ids_flipped).mean()) if len(ours_flagged) else 0.0
    row["cleanlab_flagged_precision"] = (float(np.isin(their_flagged, flipped).mean()) if len(their_flagged)
                                         else 0.0)

    row["auc_noisy"] = _auc(model, ds.X_test, ds.y_test)
    row["auc_clean"] = _auc(make().fit(ds.X, y, ids=ds.ids), ds.X_test, ds.y_test)
    lost = row["auc_clean"] - row["auc_noisy"]
    row["recommended_k"] = found.recommended_k  # from the scores alone: half the flagged count
    per_class = found.per_class()
    row["per_class"] = len(per_class)
    row["per_class_positive"] = int((found.label[per_class] == 1).sum())
    row["rec_positive"] = int((found.label[:found.recommended_k] == 1).sum())
    row["ours_p_per_class"] = float(np.isin(found.ids[per_class], ids_flipped).mean()) if len(per_class) else 0.0
    row["ours_p_rec"] = float(np.isin(found.ids[:found.recommended_k], ids_flipped).mean()) if found.recommended_k else 0.0
    for name, at in (("k2", np.arange(k // 2)), ("k", np.arange(k)), ("rec", np.arange(max(1, found.recommended_k))),
                     ("cls", per_class if len(per_class) else np.arange(1))):  # at least one row, as rec
        forgot = make().fit(ds.X, noisy, ids=ds.ids)
        forgot.forget_rows(found.ids[at], request_id="bench-suspects")
        relabeled = make().fit(ds.X, noisy, ids=ds.ids)
        relabeled.relabel(ids=found.ids[at], label=found.suggested[at], request_id="bench-suspects")
        for act, m in (("forget", forgot), ("relabel", relabeled)):
            auc = _auc(m, ds.X_test, ds.y_test)
            row[f"auc_{act}_{name}"] = auc
            row[f"recovered_{act}_{name}"] = (auc - row["auc_noisy"]) / lost if lost > 0 else float("nan")
    row["worth_acting"] = lost >= WORTH
    best = max(row[f"recovered_{a}_{n}"] for a, n in ACTIONS)
    log(f"suspects {ds.name} {grouping} {kind} {rate:.0%} (draw {draw}): P@k {row['ours_p_k']:.3f} vs cleanlab "
        f"{row['cleanlab_p_k']:.3f}; {ours_s:.2f} s vs {theirs_s:.2f} s ({row['time_ratio']:.2f}x); AUC clean "
        f"{row['auc_clean']:.4f} noisy {row['auc_noisy']:.4f}, best action recovers {best:.0%} of the lost AUC")
    return row


def run_suspects(cfg) -> dict[str, Any]:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        log("suspects: skipped (pip install 'clusterforget[bench]' installs cleanlab, the anchor)")
        return {}
    rows = []
    for name in cfg.suspects_datasets:
        ds = load_real(name)
        if cfg.suspects_rows and len(ds.y) > cfg.suspects_rows:  # --quick: a stratified head of the training rows
            keep = np.sort(np.random.default_rng(SEED).choice(len(ds.y), cfg.suspects_rows, replace=False))
            ds.X, ds.y, ds.ids = ds.X.iloc[keep].reset_index(drop=True), ds.y[keep], ds.ids[keep]
        if ds.y.dtype.kind not in "biu":  # adult's class is text: >50K is the positive class
            ds.y = np.array([str(v).strip().rstrip(".") == ">50K" for v in ds.y], dtype=np.int64)
            ds.y_test = np.array([str(v).strip().rstrip(".") == ">50K" for v in ds.y_test], dtype=np.int64)
        for grouping in cfg.suspects_groupings:
            for kind in cfg.suspects_noise:
                for rate in cfg.suspects_rates:
                    # the goal's case gets more draws of the flips: one draw's AUC changes are within split noise
                    goal = name == "adult" and kind == "uniform" and rate == 0.1
                    for draw in range(max(1, cfg.suspects_draws) if goal else 1):
                        rows.append(run_case(ds, grouping, kind, rate, cfg.suspects_params, draw))
    return {"rows": rows, "worth": WORTH, "median_time_ratio": statistics.median(r["time_ratio"] for r in rows),
            "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows),
            "recovery": recovery(rows)}


# rec: the top Suspects.recommended_k; cls: Suspects.per_class() (half of each given label's flagged rows)
ACTIONS = [(a, n) for a in ("forget", "relabel") for n in ("k2", "k", "rec", "cls")]


def recovery(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case (draws pooled): each action's mean share of the lost AUC won back, and the best action by that mean
    (choosing the best of four after averaging, not per draw, so the headline is not the luckiest draw)."""
    cases: dict[tuple, list] = {}
    for r in rows:
        cases.setdefault((r["dataset"], r["grouping"], r["noise"], r["rate"]), []).append(r)
    out = []
    for (name, grouping, kind, rate), rs in cases.items():
        means = {f"{a}_{n}": statistics.mean(r[f"recovered_{a}_{n}"] for r in rs) for a, n in ACTIONS}
        best = max(means, key=means.get)
        out.append({"dataset": name, "grouping": grouping, "noise": kind, "rate": rate, "draws": len(rs),
                    "mean_recovered": means, "best": best, "best_mean": means[best],
                    "best_per_draw": [r[f"recovered_{best}"] for r in rs],
                    "auc_noisy": statistics.mean(r["auc_noisy"] for r in rs),
                    "auc_clean": statistics.mean(r["auc_clean"] for r in rs)})
    return out


def headline_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    rows = res.get("rows", [])
    if not rows:
        return out
    worst = min(rows, key=lambda r: r["ours_p_k"] - r["cleanlab_p_k"])
    gap = worst["ours_p_k"] - worst["cleanlab_p_k"]
    out.append({"figure": "suspects precision at k vs cleanlab (worst case)",
                "baseline": f"cleanlab {worst['cleanlab_p_k']:.3f} ({worst['dataset']} {worst['noise']} {worst['rate']:.0%})",
                "target": ">= -0.02", "measured": f"{worst['ours_p_k']:.3f} ({gap:+.3f})", "value": gap,
                "ok": gap >= -0.02})
    slowest = max(rows, key=lambda r: r["time_ratio"])
    out.append({"figure": "suspects time / cleanlab's (5-fold CV + find_label_issues), slowest case",
                "baseline": f"cleanlab {slowest['cleanlab_s']:.2f} s", "target": "<= 0.2x",
                "measured": f"{slowest['time_ratio']:.2f}x ({slowest['ours_s']:.2f} s)", "value": slowest["time_ratio"],
                "ok": slowest["time_ratio"] <= 0.2})
    slowest = max(rows, key=lambda r: r["cpu_ratio"])
    out.append({"figure": "suspects CPU time / cleanlab's (every thread of the process), slowest case",
                "baseline": f"cleanlab {slowest['cleanlab_cpu_s']:.2f} CPU s", "target": "<= 0.2x",
                "measured": f"{slowest['cpu_ratio']:.2f}x ({slowest['ours_cpu_s']:.2f} CPU s; {slowest['dataset']} "
                            f"{slowest['grouping']})", "value": slowest["cpu_ratio"], "ok": slowest["cpu_ratio"] <= 0.2})
    floors = [r for r in rows if r["floor_cpu_ratio"] == r["floor_cpu_ratio"]]
    if floors:
        slowest = max(floors, key=lambda r: r["floor_cpu_ratio"])
        out.append({"figure": "floor: CPU time of plain Booster.predict of every member's out-of-member rows / "
                              "cleanlab's, slowest case (above 0.2x no change inside cf.suspects reaches the goal)",
                    "baseline": f"cleanlab {slowest['cleanlab_cpu_s']:.2f} CPU s", "target": "<= 0.2x",
                    "measured": f"{slowest['floor_cpu_ratio']:.2f}x ({slowest['floor_cpu_s']:.2f} CPU s for "
                                f"{slowest['floor_predictions']:,} row predictions; {slowest['dataset']} "
                                f"{slowest['grouping']})", "value": slowest["floor_cpu_ratio"],
                    "ok": slowest["floor_cpu_ratio"] <= 0.2})
    for c in res.get("recovery", []):
        if c["dataset"] == "adult" and c["rate"] == 0.1:
            per = ", ".join(f"{v:.0%}" for v in c["best_per_draw"])
            out.append({"figure": f"adult 10% {c['noise']} flips ({c['grouping']}): lost AUC recovered by acting",
                        "baseline": f"noisy {c['auc_noisy']:.4f}, clean {c['auc_clean']:.4f}", "target": ">= 50%",
                        "measured": f"{c['best_mean']:.0%} ({c['best'].replace('_k2', ' top k/2').replace('_k', ' top k').replace('_rec', ' top recommended_k').replace('_cls', ' per_class()')}, "
                                    f"mean of {c['draws']} draw(s): {per})",
                        "value": c["best_mean"], "ok": c["best_mean"] >= 0.5})
            rec = c["mean_recovered"]["relabel_rec"]  # the action chosen from the scores alone, not the best of six
            out.append({"figure": f"adult 10% {c['noise']} flips ({c['grouping']}): recovered by relabeling the top "
                                  "recommended_k", "baseline": f"noisy {c['auc_noisy']:.4f}", "target": ">= 50%",
                        "measured": f"{rec:.0%} (mean of {c['draws']} draw(s))", "value": rec, "ok": rec >= 0.5})
    return out


def markdown(res: dict[str, Any]) -> list[str]:
    rows = res.get("rows", [])
    if not rows:
        return []
    L = ["## Finding what to forget: cf.suspects vs cleanlab", "",
         "Labels of the training rows flipped (uniform, or class-conditional: 3/4 of the flips from the positive "
         "class); k = number of flips. clusterforget ranks with `cf.suspects` on the fitted noisy model (nothing "
         "trained); cleanlab ranks by self-confidence on 5-fold cross-validated LightGBM probabilities with the "
         "members' parameters, and its time includes the cross-validation. *flagged*: each method's own estimate of "
         "the wrong rows (our confident-joint count; `find_label_issues`), with its precision.", "",
         "*time ours*: the mean of two runs of `cf.suspects`, just before and just after cleanlab's; *CPU*: CPU "
         "seconds of every thread of the process (the work, whatever the load); *floor*: plain "
         "`lightgbm.Booster.predict` calls, one per member over every training row it did not train on (rows "
         "already encoded), timed in the same run, over cleanlab's time: the predictions `cf.suspects` cannot do "
         "without (wall and CPU ratios).", "",
         "| data | grouping | noise | rate | draw | P@k ours / cleanlab | P@k/2 ours / cleanlab | R@k/2 ours / cleanlab | "
         "flagged (precision) ours / cleanlab | time ours / cleanlab | ratio | CPU ratio | floor | floor CPU |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['dataset']} | {r['grouping']} ({r['members']}) | {r['noise']} | {r['rate']:.0%} | {r['draw']} | "
                 f"{r['ours_p_k']:.3f} / {r['cleanlab_p_k']:.3f} | {r['ours_p_k2']:.3f} / {r['cleanlab_p_k2']:.3f} | "
                 f"{r['ours_r_k2']:.3f} / {r['cleanlab_r_k2']:.3f} | {r['ours_flagged']:,} ({r['ours_flagged_precision']:.2f}) / "
                 f"{r['cleanlab_flagged']:,} ({r['cleanlab_flagged_precision']:.2f}) | {r['ours_s']:.2f} s / "
                 f"{r['cleanlab_s']:.2f} s | {r['time_ratio']:.2f}x | {r['cpu_ratio']:.2f}x | {r['floor_ratio']:.2f}x | "
                 f"{r['floor_cpu_ratio']:.2f}x |")
    L += ["", "Acting on the top suspects (holdout AUC; recovered = share of the AUC the noise cost that acting won "
          f"back; below {res['worth']} AUC lost, acting is not worth it: the gain cannot be told from noise):", "",
          "| data | grouping | noise | rate | draw | members' rounds | clean | noisy | recommended k: positive, "
          "precision | per class: rows, positive, precision | forget k/2 | forget k | forget rec. k | forget per class | "
          "relabel k/2 | relabel k | relabel rec. k | relabel per class | worth acting? |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda a, n: f"{r[f'auc_{a}_{n}']:.4f} ({r[f'recovered_{a}_{n}']:+.0%})"  # noqa: E731
        L.append(f"| {r['dataset']} | {r['grouping']} | {r['noise']} | {r['rate']:.0%} | {r['draw']} | "
                 f"{', '.join(map(str, r['rounds']))} | {r['auc_clean']:.4f} | "
                 f"{r['auc_noisy']:.4f} | {r['recommended_k']:,}: {r['rec_positive']:,}, {r['ours_p_rec']:.3f} | "
                 f"{r['per_class']:,}, {r['per_class_positive']:,}, {r['ours_p_per_class']:.3f} | "
                 + " | ".join(cell(a, n) for a, n in ACTIONS) + " | "
                 f"{'yes' if r['worth_acting'] else 'no: the noise cost ' + format(r['auc_clean'] - r['auc_noisy'], '.4f') + ' AUC'} |")
    L += ["", "Mean share of the lost AUC won back per action, draws of the flips pooled:", "",
          "| data | grouping | noise | rate | draws | forget k/2 | forget k | forget rec. k | forget per class | "
          "relabel k/2 | relabel k | relabel rec. k | relabel per class |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res.get("recovery", []):
        m = c["mean_recovered"]
        L.append(f"| {c['dataset']} | {c['grouping']} | {c['noise']} | {c['rate']:.0%} | {c['draws']} | "
                 + " | ".join(f"{m[f'{a}_{n}']:+.0%}" for a, n in ACTIONS) + " |")
    L.append("")
    return L
