"""A change whose store commit fails leaves the model as its store is: same predictions, pending members, version.

Every change kind is run against a store whose disk is full (``faults.disk_full``: every new file fails with
ENOSPC); each must raise a ``ClusterForgetError`` and leave the in-memory model equal to the store reloaded.
"""

from __future__ import annotations

import numpy as np
import pytest

import clusterforget as cf
from conftest import FAST, make_table
from faults import disk_full


def _setup_pending(model, ids):
    model.forget_rows(ids[:5], retrain="deferred")


def _setup_override(model, ids):
    model.relabel("a > 1", 0, mode="override")


# name -> (setup committed before the disk fills, the change that fails)
CHANGES = {
    "forget_rows": (None, lambda m, ids, X, y: m.forget_rows(ids[:4])),
    "forget_rows_deferred": (None, lambda m, ids, X, y: m.forget_rows(ids[:4], retrain="deferred")),
    "forget_group": (None, lambda m, ids, X, y: m.forget_group("south")),
    "add_rows": (None, lambda m, ids, X, y: m.add_rows(X.iloc[300:], y[300:], ids=ids[300:])),
    "relabel": (None, lambda m, ids, X, y: m.relabel("a > 0.5", 0)),
    "relabel_override": (None, lambda m, ids, X, y: m.relabel("a > 0.5", 0, mode="override")),
    "remove_rule": (_setup_override, lambda m, ids, X, y: m.remove_rule(m.rules[0]["rule_id"])),
    "set_group_weight": (None, lambda m, ids, X, y: m.set_group_weight("south", 0.25)),
    "retrain_pending": (_setup_pending, lambda m, ids, X, y: m.retrain_pending()),
    "reweight": (None, lambda m, ids, X, y: m.reweight(ids[:6], 2.5)),
    "relabel_ids": (None, lambda m, ids, X, y: m.relabel(ids=ids[:6], label=1 - y[:6])),
}


def _pending(model) -> list[str]:
    return [g["name"] for g in model.groups_ if g["pending"]]


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_failed_commit_leaves_model_equal_to_store(change, tmp_path):
    X, y, ids, X_test = make_table("binary", n=340)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X.iloc[:300], y[:300], ids=ids[:300])
    model.save(tmp_path / "s")
    setup, run = CHANGES[change]
    if setup is not None:
        setup(model, ids)
    before = (model.predict_proba(X_test), _pending(model), model.version_)
    with disk_full():
        with pytest.raises(cf.ClusterForgetError):
            run(model, ids, X, y)
    stored = cf.load(tmp_path / "s", n_jobs=1)
    assert model.version_ == stored.version_ == before[2]
    assert _pending(model) == _pending(stored) == before[1]
    assert np.array_equal(model.predict_proba(X_test), stored.predict_proba(X_test))
    assert np.array_equal(model.predict_proba(X_test), before[0])
    assert model.n_rows_ == stored.n_rows_ and model.rules == stored.rules
    # the model and its store still agree, so the same change now commits
    report = run(model, ids, X, y)
    assert report.version == model.version_ == cf.load(tmp_path / "s", n_jobs=1).version_ == before[2] + 1
