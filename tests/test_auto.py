"""grouping="auto": K hash shards as a pure function of the rows, and exact regrouping across a threshold."""

from __future__ import annotations

import numpy as np
import pytest

import clusterforget as cf
from clusterforget.grouping import AutoGroups
from conftest import FAST, make_table

# thresholds scaled down so that the 360-row test table sits just above a threshold: K=2 at >= 200 rows
SMALL = dict(min_shard_rows={"classification": 100, "regression": 100}, min_minority_rows=20)


def _model(task: str, learner: str = "lightgbm"):
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    return cls(grouping=AutoGroups(**SMALL), learner=learner, learner_params=FAST[learner], n_jobs=2)


def _assert_same(model, fresh, X) -> None:
    out = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    a, b = getattr(model, out)(X), getattr(fresh, out)(X)
    assert a.shape == b.shape and np.array_equal(a, b)
    assert [(g["name"], g["rows"]) for g in model.groups_] == [(g["name"], g["rows"]) for g in fresh.groups_]


def test_rule_is_a_function_of_rows_task_and_class_balance():
    auto = AutoGroups()
    assert auto.choose_k(300, "classification", [150, 150]) == 1  # scikit-learn check sizes: one member
    assert auto.choose_k(26_048, "classification", [19_775, 6_273]) == 2  # adult
    assert auto.choose_k(1_000_000, "classification", [500_000, 500_000]) == 64
    assert auto.choose_k(1_000_000, "classification", [990_000, 10_000]) == 8  # the rare class bounds K
    assert auto.choose_k(1_000_000, "regression", None) == 16
    assert auto.choose_k(10**9, "classification", [10**8] * 10) == 128  # max_k
    with pytest.raises(cf.InputError, match="min_shard_rows"):
        AutoGroups(min_shard_rows={"classification": 0, "regression": 5})


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_forget_across_a_threshold_regroups_exactly(task):
    X, y, ids, test = make_table(task)
    model = _model(task).fit(X, y, ids=ids)
    assert len(model.groups_) == 2
    # 360 -> 199 rows: K drops from 2 to 1, a full regroup, equal to a fresh fit on the rest
    gone = ids[:161]
    report = model.forget_rows(gone)
    assert report.regrouped and "HashGroups(1)" in report.note
    keep = ~np.isin(ids, gone)
    order = np.random.default_rng(1).permutation(np.flatnonzero(keep))
    fresh = _model(task).fit(X.iloc[order], y[order], ids=ids[order])
    assert len(model.groups_) == 1
    _assert_same(model, fresh, test)
    # below the threshold, a forget is the usual single-member retrain
    assert not model.forget_rows(ids[161:163]).regrouped


def test_add_rows_across_a_threshold_regroups_exactly_and_deferred_too():
    X, y, ids, test = make_table("binary")
    first = 190
    model = _model("binary").fit(X.iloc[:first], y[:first], ids=ids[:first])
    assert len(model.groups_) == 1
    report = model.add_rows(X.iloc[first:], y[first:], ids=ids[first:])
    assert report.regrouped and len(model.groups_) == 2
    fresh = _model("binary").fit(X.iloc[::-1], y[::-1], ids=ids[::-1])
    _assert_same(model, fresh, test)
    # deferred: the regroup leaves every member pending, and retrain_pending gives the fresh fit
    report = model.forget_rows(ids[:170], retrain="deferred")
    assert report.regrouped and report.groups_pending
    model.retrain_pending()
    fresh = _model("binary").fit(X.iloc[170:], y[170:], ids=ids[170:])
    _assert_same(model, fresh, test)


def test_class_balance_crossing_regroups():
    """Forgetting rows of the rare class alone can lower K: the rule reads the class counts."""
    X, y, ids, test = make_table("binary")
    spec = dict(min_shard_rows={"classification": 50, "regression": 50}, min_minority_rows=40)
    minority = int(min(np.bincount(y)))
    model = cf.ForgetClassifier(grouping=AutoGroups(**spec), learner_params=FAST["lightgbm"], n_jobs=2).fit(X, y, ids=ids)
    k0 = len(model.groups_)
    assert k0 == AutoGroups(**spec).choose_k(len(y), "classification", np.bincount(y).tolist()) > 1
    rare = np.flatnonzero(y == np.argmin(np.bincount(y)))
    drop = ids[rare[: minority - (40 * k0 - 1)]]  # the rare class falls just below 40 rows per shard
    report = model.forget_rows(drop)
    assert report.regrouped and len(model.groups_) == k0 // 2
    keep = ~np.isin(ids, drop)
    fresh = cf.ForgetClassifier(grouping=AutoGroups(**spec), learner_params=FAST["lightgbm"], n_jobs=2).fit(
        X[keep], y[keep], ids=ids[keep])
    _assert_same(model, fresh, test)


def test_auto_is_the_default_and_round_trips(tmp_path):
    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    assert model.grouping == "auto" and isinstance(model.ensemble_.grouping, AutoGroups)
    assert len(model.groups_) == 1  # 360 rows: one member
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert isinstance(loaded.ensemble_.grouping, AutoGroups)
    assert np.array_equal(loaded.predict_proba(test), model.predict_proba(test))
    loaded.forget_rows(ids[:5])
    assert cf.verify(loaded, ids[:5], test).ok


def test_regroup_is_committed_and_in_the_ledger(tmp_path):
    X, y, ids, test = make_table("binary")
    model = _model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    assert model.forget_rows(ids[:161]).regrouped
    assert cf.read_ledger(tmp_path / "s")[-1]["regrouped"] is True
    loaded = cf.load(tmp_path / "s")
    assert len(loaded.groups_) == 1 and np.array_equal(loaded.predict_proba(test), model.predict_proba(test))
