"""How long the fast exact check takes next to one member's retrain and a full fit (side by side, one run).

    python -m bench --only verify [--scale-n 1000000] [--repeats 3]

A model on ``scale_n`` rows (``HashGroups(16)``) forgets 10 rows of one shard; then, each ``repeats`` times:
the fast exact check (``cf.verify(..., checks=("exact",))``: global state re-derived from the stored rows,
the affected member retrained and compared byte for byte, predictions compared) and one retrain of that
member alone. The fit itself is the full refit that ``exact="full"`` would cost.
"""

from __future__ import annotations

import numpy as np

from bench.common import log, make_scale, summary, timed


def run_verify(cfg) -> dict:
    import clusterforget as cf
    from clusterforget.executors import TrainJob

    n = int(cfg.scale_n)
    ds = make_scale(n, 1_000)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(16), n_jobs=-1)
    fit_s, _ = timed(lambda: model.fit(ds.X, ds.y, ids=ds.ids))
    ens = model.ensemble_
    shard = next(iter(ens.groups.values()))
    gone = shard.rows.column("__cf_id__").to_numpy()[:10]
    model.forget_rows(gone)
    g = next(g for g in ens.groups.values() if g.key == shard.key)
    check, member = [], []
    for _ in range(max(1, int(cfg.repeats))):
        t, res = timed(lambda: cf.verify(model, forgotten=gone, checks=("exact",)))
        assert res.ok, str(res)
        check.append(t)
        t, _ = timed(lambda: ens.executor.train(ens.learner, ens.schema, ens.task, [TrainJob(g.name, g.rows)]))
        member.append(t)
    out = {
        "rows": n, "members": len(ens.groups), "member_rows": g.n_rows,
        "fit_s": round(fit_s, 3), "exact_fast_s": summary(check), "one_member_retrain_s": summary(member),
        "exact_fast_vs_one_member": round(float(np.median(check) / np.median(member)), 2),
        "exact_fast_vs_full_fit": round(float(np.median(check) / fit_s), 3),
        "members_retrained_by_check": res.checks["exact"].details["members_retrained"],
    }
    log(f"verify: {n} rows, {len(ens.groups)} members: fast exact check {np.median(check):.2f}s = "
        f"{out['exact_fast_vs_one_member']}x one member's retrain ({np.median(member):.2f}s), "
        f"{out['exact_fast_vs_full_fit']}x a full fit ({fit_s:.1f}s)")
    return out


__all__ = ["run_verify"]


def mia_adult(n_forget: int = 2_000, seed: int = 0, grouping: str = "kmeans:16") -> dict:
    """The membership-inference audit on adult (README figures): train on 60 %, forget ``n_forget`` rows.

    Learned clusters route each row to the one member that trained on it, which is where membership shows
    most; averaged hash shards dilute a row's influence over every member (``--grouping hash:8``).
    """
    import pandas as pd

    import clusterforget as cf
    from bench.common import REPO

    df = pd.read_csv(REPO / "data" / "adult.csv")
    y = (df.pop("class").str.strip().str.rstrip(".") == ">50K").astype(int).to_numpy()
    order = np.random.default_rng(seed).permutation(len(df))
    cut = int(0.6 * len(df))
    tr, ho = order[:cut], order[cut:]
    X_tr, y_tr, ids = df.iloc[tr].reset_index(drop=True), y[tr], tr.astype(np.int64)
    kind, k = grouping.split(":")
    spec = cf.KMeansGroups(int(k)) if kind == "kmeans" else cf.HashGroups(int(k))
    model = cf.ForgetClassifier(grouping=spec, n_jobs=-1).fit(X_tr, y_tr, ids=ids)
    gone = np.random.default_rng(seed + 1).choice(len(tr), size=n_forget, replace=False)
    model.forget_rows(ids[gone])
    res = cf.verify(model, forgotten=ids[gone], checks=("mia",), X_holdout=df.iloc[ho].reset_index(drop=True),
                    y_holdout=y[ho], X_forgotten=X_tr.iloc[gone], y_forgotten=y_tr[gone])
    print(res)
    return res.checks["mia"].details


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.verify", description="the MIA audit on adult")
    ap.add_argument("--grouping", default="kmeans:16", help="kmeans:K or hash:K")
    print(json.dumps(mia_adult(grouping=ap.parse_args().grouping), indent=1))
