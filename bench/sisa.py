"""What SISA-style slicing inside one member would gain: an experiment on plain LightGBM, not engine code.

    python -m bench.sisa [--rows 62500] [--slices 1,2,4,8]

A member's rows (in id order) are cut into S slices by id hash (data-independent, so forgetting never moves a
row between slices). Stage i trains ``rounds / S`` trees on slices 1..i, continuing from stage i-1
(``init_model``); every stage bins its own rows, so stage i depends only on slices 1..i and the stages before.
Forgetting a row of slice j keeps the checkpoint after stage j-1 and retrains stages j..S: exact. The expected
cost of a random single-row forget is the mean over j of the time of stages j..S.

Writes ``bench/results/sisa.md`` and ``sisa.json`` (use ``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.common import REPO, SEED, environment, log, make_scale, metrics, monolith_params, summary, timed  # noqa: E402


def train_sisa(X, y, slice_of, S, rounds, params):
    """Stage boosters and per-stage seconds."""
    import lightgbm as lgb

    per = [rounds // S + (1 if i < rounds % S else 0) for i in range(S)]
    booster, times, models = None, [], []
    for i in range(S):
        sel = slice_of <= i
        ds = lgb.Dataset(X[sel], label=y[sel], params=params, free_raw_data=False)
        t, booster = timed(lambda: lgb.train(params, ds, num_boost_round=per[i], init_model=booster,
                                             keep_training_booster=True))
        times.append(t)
        models.append(booster.model_to_string())
    return booster, times, models


def run(rows: int, slices: list[int], repeats: int, n_test: int = 100_000) -> dict:
    ds = make_scale(rows, n_test)
    X, y, Xte, yte = ds.X, ds.y.astype(float), ds.X_test, ds.y_test
    threads = os.cpu_count() or 1
    params, rounds = monolith_params("classification", 2, rows, None, SEED, threads)
    from clusterforget.data import id_hash
    import pyarrow as pa

    h = id_hash(pa.array(np.arange(rows, dtype=np.int64)))
    out = {"rows": rows, "rounds": rounds, "repeats": repeats, "data": ds.source, "by_slices": []}
    for S in slices:
        slice_of = (h % np.uint64(S)).astype(np.int64)
        full, expected, auc = [], [], None
        for r in range(repeats):
            t, (booster, stage_t, _) = timed(lambda: train_sisa(X, y, slice_of, S, rounds, params))
            full.append(t)
            resume = [sum(stage_t[j:]) for j in range(S)]  # forgetting a row of slice j retrains stages j..S
            share = np.bincount(slice_of, minlength=S) / rows
            expected.append(float(np.dot(share, resume)))
            if auc is None:
                p = booster.predict(Xte, num_threads=threads)
                auc = metrics("binary", yte, np.column_stack([1 - p, p]))["auc"]
        row = {"slices": S, "train": summary(full), "expected_forget": summary(expected), "auc": auc}
        out["by_slices"].append(row)
        log(f"sisa: S={S}: train {row['train']['median']:.2f}s, expected forget {row['expected_forget']['median']:.2f}s, "
            f"AUC {auc:.4f}")
    base = out["by_slices"][0]
    for row in out["by_slices"]:
        row["speedup_vs_plain_member"] = base["train"]["median"] / row["expected_forget"]["median"]
        row["auc_loss_vs_plain_member"] = base["auc"] - row["auc"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sisa", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=62_500, help="member size (default: one of 16 groups of 1M rows)")
    ap.add_argument("--slices", default="1,2,4,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args(argv)
    env = environment()
    res = run(a.rows, [int(s) for s in a.slices.split(",")], a.repeats)
    res["environment"] = env
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sisa.json").write_text(json.dumps(res, indent=1) + "\n")
    L = [f"# SISA slicing inside one member: what it would gain ({env['date_utc']}, {env['cpu']}, {env['cores']} cores)",
         "",
         f"One member of {a.rows:,} rows ({res['data']}), LightGBM {res['rounds']} rounds with the member parameters; "
         f"median of {a.repeats}. S = 1 is today's member. Expected forget = mean retrain time of stages j..S over the "
         "slice j of a random row. AUC of the member alone on 100k test rows.",
         "",
         "| slices | full train | expected 1-row forget | speedup vs plain member retrain | AUC | AUC loss |",
         "|---|---|---|---|---|---|"]
    for r in res["by_slices"]:
        L.append(f"| {r['slices']} | {r['train']['median']:.2f} s | {r['expected_forget']['median']:.2f} s | "
                 f"{r['speedup_vs_plain_member']:.2f}x | {r['auc']:.4f} | {r['auc_loss_vs_plain_member']:+.4f} |")
    (out / "sisa.md").write_text("\n".join(L) + "\n")
    log(f"wrote sisa.md and sisa.json in {out.name}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
