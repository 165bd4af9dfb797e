"""Writes the stores in tests/legacy/: saved by clusterforget 0.1.0 (commit 3ab33ce), before the architecture change.

Kept so that ``tests/test_legacy_stores.py`` can check that stores saved by an older version still load and
predict bitwise what they predicted when they were written (``expected.parquet`` beside each store). Do not
re-run it on a newer version: the point is that these files come from the old code.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0]))

import clusterforget as cf  # noqa: E402
from conftest import FAST, make_table  # noqa: E402

CONFIGS = {
    "lgb-binary-key-route": ("binary", "lightgbm", dict(grouping="region", combine="route")),
    "lgb-multiclass-kmeans": ("multiclass", "lightgbm", dict(grouping=cf.KMeansGroups(3, ["a", "b"]))),
    "xgb-regression-hash": ("regression", "xgboost", dict(grouping=cf.HashGroups(3))),
    "xgb-binary-key-shards": ("binary", "xgboost", dict(grouping="region", max_group_rows=60)),
}


def main() -> None:
    for name, (task, learner, kw) in CONFIGS.items():
        X, y, ids, test = make_table(task, n=240, seed=3)
        est = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
        model = est(learner=learner, learner_params=FAST[learner], n_jobs=1, **kw).fit(X, y, ids=ids)
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        model.save(out / "store")
        model.forget_rows(ids[:4])
        if task != "regression":
            label = model.classes_.tolist()[0]
            model.relabel("a > 1.5", label=label, mode="override")
        model.forget_rows(ids[10:12], retrain="deferred")
        pred = model.predict_proba(test) if task != "regression" else model.predict(test).reshape(-1, 1)
        pq.write_table(pa.table({f"p{j}": pred[:, j] for j in range(pred.shape[1])}), out / "expected.parquet")
        test.to_parquet(out / "probe.parquet", index=False)
        (out / "store" / ".lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
