"""Pickling cannot smuggle rows: a fitted model pickles as what scoring reads, and scikit-learn's tools still work.

``_ForgetBase.__getstate__`` keeps the bundle export (manifest and members, in memory); an unpickled model scores
bitwise as the model and raises ``ScoringOnlyError`` when asked to change. Unfitted models pickle as usual, which
is what ``clone`` and ``GridSearchCV(n_jobs>1)`` (loky pickles the estimators it sends) need.
"""

from __future__ import annotations

import io
import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate

import clusterforget as cf
from clusterforget._compat import available
from clusterforget.estimators import ensemble_of
from clusterforget.members import LightGBMMember, neutral_feature_infos
from conftest import FAST, make_table, row_leaks

PLANTED = 1234.5678901234567  # a value no model file holds by chance: row 5's feature "a", inside the range


def planted(task: str):
    X, y, ids, test = make_table(task, n=240, str_ids=True)
    X["a"] = X["a"] * 2000.0
    X.loc[5, "a"] = PLANTED
    return X, y, ids, test


def dumps(model, how: str) -> bytes:
    if how == "pickle":
        return pickle.dumps(model)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


@pytest.mark.parametrize("task, how", [("binary", "pickle"), ("multiclass", "joblib"), ("regression", "pickle")])
def test_a_pickle_holds_no_training_row_and_scores_bitwise(task, how):
    X, y, ids, test = planted(task)
    est = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    model = est(grouping=cf.HashGroups(3), learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    data = dumps(model, how)
    assert row_leaks(data, ids, X["a"]) == []
    assert repr(PLANTED).encode() not in data and b"user-" not in data
    back = joblib.load(io.BytesIO(data)) if how == "joblib" else pickle.loads(data)
    assert type(back) is type(model) and repr(back.get_params()) == repr(model.get_params())
    for method in ("predict", "predict_proba") if task != "regression" else ("predict",):
        assert np.array_equal(getattr(back, method)(test), getattr(model, method)(test))
    assert np.array_equal(back.predict(test, raw_score=True), model.predict(test, raw_score=True))
    assert np.array_equal(back.feature_importances_, model.feature_importances_)
    assert back.version_ == model.version_ and back.n_features_in_ == model.n_features_in_
    if task != "regression":
        assert back.classes_.dtype == model.classes_.dtype and np.array_equal(back.classes_, model.classes_)
    again = pickle.loads(pickle.dumps(back))  # a scoring-only model pickles as itself
    assert np.array_equal(again.predict(test), model.predict(test))


def test_an_unpickled_model_says_it_scores_only_and_where_changes_go(tmp_path):
    X, y, ids, test = planted("binary")
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.save(tmp_path / "store")
    back = pickle.loads(pickle.dumps(model))
    changes = [lambda m: m.forget_rows(ids[:2]), lambda m: m.relabel(ids=ids[:2], label=1),
               lambda m: m.add_rows(X.head(2), y[:2], ids=["new-1", "new-2"]), lambda m: m.forget_group("north"),
               lambda m: m.save(tmp_path / "other"), lambda m: m.groups_, lambda m: m.n_rows_]
    for change in changes:
        with pytest.raises(cf.ScoringOnlyError, match=r"cf\.load\(path\).*model\.save\(path\)"):
            change(back)
    assert not (tmp_path / "other").exists()
    assert np.array_equal(back.predict_proba(test), model.predict_proba(test))  # routing kept (unseen key too)
    refit = back.fit(X.iloc[5:], y[5:], ids=ids[5:])  # fitting it again makes a full model
    model.forget_rows(ids[:5])
    assert np.array_equal(refit.predict_proba(test), model.predict_proba(test))
    assert refit.forget_rows(ids[5:7]).rows_removed == 2
    loaded = cf.load(tmp_path / "store")  # the way to change it: the store has the rows
    assert loaded.forget_rows(ids[5:7]).rows_removed == 2
    assert isinstance(cf.ScoringOnlyError("x"), cf.ClusterForgetError)


def test_clone_grid_search_with_workers_and_cross_val_score_work():
    X, y, ids, _ = make_table("binary", n=240)
    base = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1)
    model = clone(base).fit(X, y)
    fresh = clone(model)
    assert "ensemble_" not in fresh.__dict__ and repr(fresh.get_params()) == repr(model.get_params())
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"learner_params": [FAST["lightgbm"], {**FAST["lightgbm"], "num_leaves": 3}]}
    search = GridSearchCV(base, grid, cv=cv, n_jobs=2, scoring="roc_auc").fit(X, y)  # loky: pickled estimators
    serial = GridSearchCV(base, grid, cv=cv, n_jobs=1, scoring="roc_auc").fit(X, y)
    assert np.array_equal(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    best = search.best_estimator_  # refit in this process: a full model
    assert np.array_equal(best.predict_proba(X), clone(base).set_params(**search.best_params_).fit(X, y).predict_proba(X))
    assert best.forget_rows([0, 1]).rows_removed == 2
    scores = cross_val_score(base, X, y, cv=cv, n_jobs=2)
    assert np.array_equal(scores, cross_val_score(base, X, y, cv=cv, n_jobs=1))
    out = cross_validate(base, X, y, cv=cv, n_jobs=2, return_estimator=True)  # fitted models sent back pickled
    train, _ = next(iter(cv.split(X)))
    there = out["estimator"][0]
    here = clone(base).fit(X.iloc[train], y[train])
    assert np.array_equal(there.predict_proba(X), here.predict_proba(X))
    with pytest.raises(cf.ScoringOnlyError):
        there.forget_rows([0])


def test_exports_keep_no_training_range_and_score_bitwise(tmp_path):
    """LightGBM's ``feature_infos`` (each feature's [min:max] over a member's rows) becomes ``none`` in an export;
    the member loads and predicts, raw scores and contributions included, bitwise as the original."""
    X, y, ids, test = planted("binary")
    X.loc[7, "a"] = PLANTED * 10  # the largest value of "a": a member's range ends on it
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp_path / "bundle")
    files = [p.read_bytes() for p in (tmp_path / "bundle").rglob("*") if p.is_file()]
    assert all(row_leaks(data, ids, X["a"]) == [] for data in files)
    infos = [line for data in files for line in data.splitlines() if line.startswith(b"feature_infos=")]
    assert len(infos) == 2 and all(b"[" not in line for line in infos)
    scorer = cf.Scorer(tmp_path / "bundle")
    assert np.array_equal(scorer.predict_proba(test), model.predict_proba(test))
    assert np.array_equal(scorer.predict(test, pred_contrib=True), model.predict(test, pred_contrib=True))
    member = ensemble_of(model).scoring_spec().members[0].member
    original = member.model_bytes()
    assert b"[" in next(line for line in original.splitlines() if line.startswith(b"feature_infos="))  # the store's
    neutral = LightGBMMember.from_bytes(member.meta(), neutral_feature_infos(original))
    M = np.random.default_rng(1).normal(size=(50, 4)) * 1000
    assert np.array_equal(neutral.booster.predict(M, raw_score=True), member.booster.predict(M, raw_score=True))
    assert np.array_equal(neutral.booster.predict(M, pred_contrib=True), member.booster.predict(M, pred_contrib=True))


def test_a_preprocessed_model_s_export_and_pickle_keep_no_training_range(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    X, y, ids, test = planted("binary")
    scale = ColumnTransformer([("s", StandardScaler(), ["a"])])
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), preprocessor=scale, learner_params=FAST["lightgbm"],
                                n_jobs=1).fit(X[["a", "b"]], y, ids=ids)
    model.export(tmp_path / "bundle")
    infos = [line for p in (tmp_path / "bundle").rglob("*.txt") for line in p.read_bytes().splitlines()
             if line.startswith(b"feature_infos=")]
    assert len(infos) == 2 and all(b"[" not in line for line in infos)
    data = pickle.dumps(model)
    assert row_leaks(data, ids, X["a"]) == [] and b"feature_infos=[" not in data
    assert np.array_equal(pickle.loads(data).predict_proba(test[["a", "b"]]), model.predict_proba(test[["a", "b"]]))


def test_a_forgotten_row_s_imputer_statistics_leave_the_store_every_export_and_the_pickle(tmp_path):
    """A SimpleImputer's median (an odd count of values) and most frequent value are training values. Planted so
    that they are the forgotten rows' values, they are in the store, the bundle, the compiled export and the pickle
    before the forget (the scan sees them, base64 arrays included) and in none of them after: the group's
    preprocessor is refit on the rows that remain, as a fresh fit's is."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    X, y, ids, test = make_table("binary", n=240, str_ids=True)
    X["a"] = X["a"] * 2000.0
    north = np.flatnonzero(X["region"].to_numpy() == "north")
    if len(north) % 2 == 0:  # an odd count of values: the median is one row's value (a NaN is not counted)
        X.loc[north[-1], "a"] = np.nan
    a = X["a"].to_numpy()
    values = north[~np.isnan(a[north])]
    order = values[np.argsort(a[values])]
    mid = len(order) // 2
    lower, upper = a[order[mid - 1]], a[order[mid + 1]]
    median_row = order[mid]
    X.loc[median_row, "a"] = lower + (upper - lower) * 0.3711  # still the median; no other row's value or midpoint
    frequent_rows = [r for r in north[:4] if r != median_row][:3]
    X.loc[frequent_rows, "b"] = 1.2345678901234567  # three equal values among distinct ones: the most frequent
    forgotten = [median_row, *frequent_rows]
    planted_values = [X.loc[median_row, "a"], 1.2345678901234567]
    impute = ColumnTransformer([("median", SimpleImputer(strategy="median"), ["a"]),
                                ("frequent", SimpleImputer(strategy="most_frequent"), ["b"])])
    settings = dict(grouping="region", combine="route", preprocessor=impute, learner_params=FAST["lightgbm"], n_jobs=1)
    model = cf.ForgetClassifier(**settings).fit(X, y, ids=ids)
    north = next(g for g in model.ensemble_.groups.values() if g.key == ("north",))
    statistics = north.member.preprocessor.est.named_transformers_
    assert statistics["median"].statistics_[0] == planted_values[0]
    assert statistics["frequent"].statistics_[0] == planted_values[1]
    model.save(tmp_path / "store")

    def scan(when: str) -> dict[str, list[str]]:
        store, found = tmp_path / "store", {}
        for p in sorted(store.rglob("*")):
            if p.is_file() and not p.name.endswith(".parquet"):  # rows files: the purge check below
                found[f"store {p.name}"] = row_leaks(p.read_bytes(), [], planted_values)
        model.export(tmp_path / f"bundle-{when}")
        for p in sorted((tmp_path / f"bundle-{when}").rglob("*")):
            if p.is_file():
                found[f"bundle {p.name}"] = row_leaks(p.read_bytes(), [], planted_values)
        if available("tl2cgen") and available("treelite"):  # the compiled extra; its members stay native here
            model.export(tmp_path / f"compiled-{when}", format="compiled")
            for p in sorted((tmp_path / f"compiled-{when}").rglob("*")):
                if p.is_file():
                    found[f"compiled {p.name}"] = row_leaks(p.read_bytes(), [], planted_values)
        with pytest.raises(cf.ExportError, match="no converter for the preprocessor"):  # ONNX writes nothing
            model.export(tmp_path / f"m-{when}.onnx", format="onnx")
        assert not (tmp_path / f"m-{when}.onnx").exists()
        found["pickle"] = row_leaks(pickle.dumps(model), [], planted_values)
        found["joblib"] = row_leaks(dumps(model, "joblib"), [], planted_values)
        return {k: v for k, v in found.items() if v}

    before = scan("before")
    assert {"store manifest.json", "pickle", "joblib"} <= set(before), before  # the scan sees the statistics
    assert any(k.startswith("bundle") for k in before), before
    report = model.forget_rows(ids[forgotten], request_id="REQ-IMPUTE")
    assert report.groups_retrained == [north.name]
    after = scan("after")
    assert after == {}, after
    # purge, given the forgotten rows, decodes every preprocessor document and finds none of their values
    result = cf.verify(model, request_id="REQ-IMPUTE", checks=("held", "purge", "exact"), X_forgotten=X.iloc[forgotten])
    assert result.ok and result.checks["purge"].details["values_looked_for"] > 0, result.checks["purge"].summary
    keep = np.setdiff1d(np.arange(len(ids)), forgotten)
    fresh = cf.ForgetClassifier(**settings).fit(X.iloc[keep], y[keep], ids=ids[keep])
    assert [g.member.meta() for g in model.ensemble_.groups.values()] == \
        [g.member.meta() for g in fresh.ensemble_.groups.values()]
    assert np.array_equal(model.predict_proba(test), fresh.predict_proba(test))


def test_a_deep_copy_of_a_model_bound_to_a_store_is_a_full_model_bound_to_none(tmp_path):
    """copy.deepcopy stays a full copy (it never leaves the process), but not a second writer of the store: a
    change to the copy (an experiment) commits nothing, and the model keeps its store."""
    import copy

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    twin = copy.deepcopy(model)
    assert np.array_equal(twin.predict_proba(test), model.predict_proba(test))
    twin.forget_rows(ids[:4])
    assert len(cf.read_ledger(tmp_path / "s")) == 1 and cf.load(tmp_path / "s").n_rows_ == len(ids)
    model.forget_rows(ids[4:6])  # the model is still the store's one writer
    assert cf.load(tmp_path / "s").n_rows_ == len(ids) - 2
