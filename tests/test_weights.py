"""Sample weights: validated at every entry, stored with the rows, persisted, in the ledger by keyed hash only.

Exactness through every change (reweight, forget, relabel, add) is in tests/test_contract.py's matrix.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest

import clusterforget as cf
from clusterforget.cli import main
from clusterforget.verify import fresh_fit
from conftest import FAST


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
    return X, y, rng.uniform(0.0, 2.0, n).round(3)


def model():
    return cf.ForgetClassifier(grouping=cf.HashGroups(3), learner_params=FAST["lightgbm"], n_jobs=1)


@pytest.mark.parametrize("bad, match", [
    (np.full(300, np.nan), "nan at position 0"),
    (np.r_[np.ones(299), np.inf], "inf at position 299"),
    (np.r_[np.ones(10), -1.0, np.ones(289)], "-1.0 at position 10"),
    (np.ones(299), "got 299 sample_weight for 300 rows"),
    (np.ones((300, 1)), "1-dimensional"),
    (np.ones(300, dtype=bool), "booleans"),
    (["a"] * 300, "must be numbers"),
    (np.full(300, 1e13), "10000000000000.0 at position 0"),
])
def test_bad_weights_are_refused_with_the_value(bad, match):
    X, y, _ = data()
    with pytest.raises(cf.InputError, match=match):
        model().fit(X, y, sample_weight=bad)


def test_bad_weights_in_changes_change_nothing():
    X, y, w = data()
    m = model().fit(X, y, sample_weight=w)
    before = m.predict_proba(X)
    with pytest.raises(cf.InputError, match="nan at position 1"):
        m.reweight([1, 2], [1.0, np.nan])
    with pytest.raises(cf.InputError, match="got 3 weights for 2 rows"):
        m.reweight([1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(cf.UnknownIdError, match="999"):
        m.reweight([1, 999], 2.0)
    with pytest.raises(cf.InputError, match="-2.0 at position 0"):
        m.add_rows(X[:2], y[:2], ids=[1000, 1001], sample_weight=[-2.0, 1.0])
    assert m.version_ == 1 and np.array_equal(m.predict_proba(X), before)


def test_unit_weights_are_bitwise_the_unweighted_model():
    X, y, _ = data()
    a = model().fit(X, y)
    b = model().fit(X, y, sample_weight=np.ones(len(y)))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))


def test_weights_change_the_members_and_the_group_weights():
    X, y, w = data()
    plain, weighted = model().fit(X, y), model().fit(X, y, sample_weight=w)
    assert not np.array_equal(plain.predict_proba(X), weighted.predict_proba(X))
    # a group's ensemble weight is the sum of its rows' sample weights
    sums = [sum(w[i] for i in range(len(y)) if i in set(g.rows.column("__cf_id__").to_pylist()))
            for g in weighted.ensemble_.groups.values()]
    assert np.allclose([g["weight"] for g in weighted.groups_], np.array(sums) / sum(sums))


def test_weights_persist_and_reweight_is_in_the_ledger_without_ids(tmp_path):
    X, y, w = data()
    ids = np.arange(7000, 7300)
    m = model().fit(X, y, ids=ids, sample_weight=w)
    m.save(tmp_path / "s")
    report = m.reweight(ids[[4, 5, 6]], [0.0, 3.0, 0.25], request_id="imp-7")
    assert report.rows_reweighted == 3 and not report.is_deletion and "NOT a deletion" in report.note
    line = cf.read_ledger(tmp_path / "s")[-1]
    assert line["operation"] == "reweight" and line["request_id"] == "imp-7" and line["is_deletion"] is False
    assert line["rows_reweighted"] == 3 and line["reweighted"]["count"] == 3
    assert all(re.fullmatch("[0-9a-f]{64}", d) for d in line["reweighted"]["hmac_sha256"])
    text = (tmp_path / "s" / "ledger.jsonl").read_text()
    assert not any(re.search(rf"(?<![0-9a-f]){v}(?![0-9a-f])", text) for v in ids[[4, 5, 6]])
    loaded = cf.load(tmp_path / "s")
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))
    assert np.array_equal(loaded.predict_proba(X), fresh_fit(loaded).predict_proba(X))
    # the rows files hold each row's current weight
    held = {}
    for f in (tmp_path / "s").rglob("*.parquet"):
        t = pq.read_table(f)
        if "__cf_weight__" in t.column_names:
            held.update(zip(t.column("__cf_id__").to_pylist(), t.column("__cf_weight__").to_pylist()))
    assert held[int(ids[4])] == 0.0 and held[int(ids[5])] == 3.0 and held[int(ids[7])] == w[7]
    assert cf.verify(loaded).ok


def test_cli_reweight(tmp_path, capsys):
    X, y, w = data()
    m = model().fit(X, y, sample_weight=w)
    m.save(tmp_path / "s")
    assert main(["reweight", str(tmp_path / "s"), "--ids", "3 4", "--weight", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "rows to reweight" in out and "dry run: nothing was changed" in out
    assert cf.load(tmp_path / "s").version_ == 1
    assert main(["reweight", str(tmp_path / "s"), "3", "4", "--weight", "0", "--weight", "2.5", "--yes",
                 "--request-id", "r-1"]) == 0
    out = capsys.readouterr().out
    assert "reweight: 2 row(s) reweighted" in out and "NOT a deletion" in out and "[" not in out.split("(")[0]
    loaded = cf.load(tmp_path / "s")
    w2 = w.copy()
    w2[[3, 4]] = [0.0, 2.5]
    assert np.array_equal(loaded.predict_proba(X), model().fit(X, y, sample_weight=w2).predict_proba(X))
    assert main(["reweight", str(tmp_path / "s"), "3", "--weight", "abc", "--yes"]) != 0
    assert "a weight must be a number" in capsys.readouterr().err


@pytest.mark.parametrize("class_weight", ["balanced", {0: 1.0, 1: 4.0}])
@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
def test_class_weight_is_per_group_and_exact(class_weight, learner, tmp_path):
    X, y, w = data(360, seed=3)
    kw = dict(grouping=cf.HashGroups(3), learner=learner, learner_params=FAST[learner], n_jobs=1,
              class_weight=class_weight)
    m = cf.ForgetClassifier(**kw).fit(X, y, sample_weight=w)
    assert not np.array_equal(m.predict_proba(X), cf.ForgetClassifier(**{**kw, "class_weight": None}).fit(
        X, y, sample_weight=w).predict_proba(X))
    report = m.forget_rows([5])
    assert len(report.groups_retrained) == 1  # "balanced" counts each group's classes: only its member retrains
    m.reweight([6, 7], 0.0)
    keep = np.ones(len(y), dtype=bool)
    keep[5] = False
    w2 = w.copy()
    w2[[6, 7]] = 0.0
    fresh = cf.ForgetClassifier(**kw).fit(X[keep], y[keep], ids=np.flatnonzero(keep), sample_weight=w2[keep])
    assert np.array_equal(m.predict_proba(X), fresh.predict_proba(X))
    m.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert loaded.get_params()["class_weight"] == class_weight
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))


@pytest.mark.parametrize("bad", ["balanced_subsample", {0: -1.0}, {1: float("nan")}, {0: True}, [1, 2]])
def test_bad_class_weight_is_refused(bad):
    X, y, _ = data()
    with pytest.raises(cf.ParameterError):
        cf.ForgetClassifier(class_weight=bad, n_jobs=1).fit(X, y)


def test_a_change_leaving_every_weight_zero_is_refused_as_a_fresh_fit_is():
    X, y, _ = data()
    w = np.zeros(len(y))
    w[:2] = 1.0
    with pytest.raises(cf.InputError, match="sample weight zero"):
        model().fit(X, y, sample_weight=np.zeros(len(y)))
    m = model().fit(X, y, sample_weight=w)
    for change in (lambda: m.reweight([0, 1], 0.0), lambda: m.forget_rows([0, 1])):
        with pytest.raises(cf.InputError, match="sample weight zero"):
            change()
        assert m.version_ == 1


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_group_of_weight_zero_is_a_member_that_never_scores(learner, task):
    """A group whose rows all weigh 0 (fitted so, or reweighted to 0) gets a constant member with weight 0: a
    fresh fit gives the same, routing sends its key's rows to the average of the others, as for an unknown key."""
    from conftest import make_table

    X, y, ids, test = make_table(task)
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier

    def build():
        return cls(grouping="region", combine="route", learner=learner, learner_params=FAST[learner], n_jobs=1)

    south = np.flatnonzero(X["region"].to_numpy() == "south")
    w = np.ones(len(y))
    w[south] = 0.0
    fitted = build().fit(X, y, ids=ids, sample_weight=w)  # raised in XGBoost ("base_score must be in (0,1)")
    m = build().fit(X, y, ids=ids)
    report = m.reweight(ids[south], 0.0)
    assert report.groups_retrained == ["south"]
    order = np.random.default_rng(1).permutation(len(y))
    fresh = build().fit(X.iloc[order], y[order], ids=ids[order], sample_weight=w[order])
    out = (lambda model, d: model.predict_proba(d)) if task != "regression" else (lambda model, d: model.predict(d))
    for a in (m, fitted):
        assert np.array_equal(out(a, X), out(fresh, X)) and np.array_equal(out(a, test), out(fresh, test))
        assert [(g["name"], g["weight"]) for g in a.groups_] == [(g["name"], g["weight"]) for g in fresh.groups_]
    zero = [g for g in m.ensemble_.groups.values() if g.key == ("south",)][0]
    assert zero.member.learner == "constant" and zero.member.feature_importance("gain", 4).sum() == 0
    assert [g["weight"] for g in m.groups_ if g["name"] == "south"] == [0.0]
    # a row of the weightless group scores as a row of an unknown group: the average of every member that scores
    rows = X.iloc[south[:5]]
    unknown = rows.assign(region="nowhere")
    assert np.array_equal(out(m, rows), out(m, unknown))
    # a member with weight 0 adds nothing to the average either: the model scores as one without those rows
    def averaged():
        return cls(grouping="region", combine="average", learner=learner, learner_params=FAST[learner], n_jobs=1)

    keep = np.flatnonzero(X["region"].to_numpy() != "south")
    with_zero = averaged().fit(X, y, ids=ids, sample_weight=w)
    without = averaged().fit(X.iloc[keep], y[keep], ids=ids[keep])
    assert [sm.weight for sm in with_zero.ensemble_.scoring_spec().members if sm.key == ("south",)] == [0.0]
    if task == "regression" or np.array_equal(with_zero.classes_, without.classes_):
        assert np.array_equal(out(with_zero, test), out(without, test))
