"""Explanations: raw scores, TreeSHAP contributions, importances, reason codes, shap, and what a change moved.

The matrix test runs over the contract suite's learner x task x grouping (both combine modes): after a
sequence of changes the contributions sum to the raw score within 1e-9 and raw scores, contributions and
importances equal a fresh fit's bitwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.data import conform
from clusterforget.members import CERTAIN_MARGIN, encode
from conftest import FAST, make_table
from test_contract import IDS, MATRIX, World


def explained(model, X):
    """(raw scores, contributions, split importances, gain importances) of ``model`` on ``X``."""
    raw = model.predict(X, raw_score=True)
    contrib = model.predict(X, pred_contrib=True)
    model.set_params(importance_type="gain")
    gain = model.feature_importances_
    model.set_params(importance_type="split")
    return raw, contrib, model.feature_importances_, gain


def assert_additive(model, X, raw, contrib):
    F = model.n_features_in_ + 1
    blocks = contrib.reshape(len(X), -1, F)
    assert blocks.shape[1] == (1 if raw.ndim == 1 else raw.shape[1])
    np.testing.assert_allclose(blocks.sum(axis=2), raw.reshape(len(X), -1), rtol=0, atol=1e-9)
    assert np.all(np.isfinite(contrib))


@pytest.mark.parametrize("args", MATRIX, ids=IDS)
def test_additive_and_exact_after_changes(args):
    w = World(*args)
    rng = np.random.default_rng(4)
    w.forget(rng.choice(w.ids, 10, replace=False))
    w.forget_group(w.model.groups_[-1]["key"])
    chosen = rng.choice(w.ids[w.alive], 5, replace=False)
    label = 9.0 if args[1] == "regression" else w.y[0]
    w.relabel(chosen, label)
    for data in (w.test, w.X.iloc[::4]):
        ours = explained(w.model, data)
        assert_additive(w.model, data, *ours[:2])
        theirs = explained(w.fresh(), data)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and np.array_equal(a, b)


def _one_member(learner, task):
    X, y, ids, test = make_table(task)
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    model = cls(grouping=cf.HashGroups(1), learner=learner, learner_params=FAST[learner], n_jobs=1).fit(X, y, ids=ids)
    ens = model.ensemble_
    member = next(iter(ens.groups.values())).member
    return model, member, encode(conform(test, ens.schema), ens.schema, member.vocab), test


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_one_lightgbm_member_is_lightgbm(task):
    model, member, M, test = _one_member("lightgbm", task)
    b = member.booster
    assert np.array_equal(model.predict(test, raw_score=True), b.predict(M, raw_score=True))
    assert np.array_equal(model.predict(test, pred_contrib=True), b.predict(M, pred_contrib=True))
    if task != "regression":
        assert np.array_equal(model.decision_function(test), b.predict(M, raw_score=True))
    for kind in ("split", "gain"):
        model.set_params(importance_type=kind)
        assert np.array_equal(model.feature_importances_, b.feature_importance(importance_type=kind))
    assert list(model.feature_names_in_) == ["region", "a", "b", "colour"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_one_xgboost_member_is_xgboost(task):
    import xgboost as xgb

    model, member, M, test = _one_member("xgboost", task)
    dm = xgb.DMatrix(M, feature_types=["c", "q", "q", "c"], enable_categorical=True)
    theirs = member.booster.predict(dm, pred_contribs=True).reshape(len(test), -1, 5)
    margin = member.booster.predict(dm, output_margin=True)
    ours = model.predict(test, pred_contrib=True).reshape(len(test), -1, 5)
    assert np.array_equal(ours[:, :, :-1], theirs[:, :, :-1])  # features: XGBoost's own values
    np.testing.assert_allclose(ours[:, :, -1], theirs[:, :, -1], atol=1e-5)  # bias absorbs float32 rounding
    assert np.array_equal(model.predict(test, raw_score=True), margin.astype(np.float64))
    model.set_params(importance_type="split")
    weight = member.booster.get_score(importance_type="weight")
    assert model.feature_importances_.tolist() == [weight.get(f"f{j}", 0.0) for j in range(4)]


def test_importances_combine_by_member_weight():
    X, y, ids, _ = make_table("binary")
    avg = cf.ForgetClassifier(grouping="region", combine="average", learner_params=FAST["lightgbm"], n_jobs=1)
    avg.fit(X, y, ids=ids)
    spec = avg.ensemble_.scoring_spec()
    total = sum(m.weight for m in spec.members)
    want = sum(m.weight / total * m.member.feature_importance("split", 4) for m in spec.members)
    np.testing.assert_allclose(avg.feature_importances_, want, rtol=1e-12)
    avg.set_group_weight("north", 0.0)  # a member out of the average is out of the importances
    spec = avg.ensemble_.scoring_spec()
    total = sum(m.weight for m in spec.members)
    want = sum(m.weight / total * m.member.feature_importance("split", 4) for m in spec.members)
    np.testing.assert_allclose(avg.feature_importances_, want, rtol=1e-12)
    # routing: each member by the rows its group serves; a user weight changes nothing within a one-member key
    routed = cf.ForgetClassifier(grouping="region", combine="route", learner_params=FAST["lightgbm"], n_jobs=1)
    routed.fit(X, y, ids=ids)
    before = routed.feature_importances_
    routed.set_group_weight("north", 0.5)
    assert np.array_equal(routed.feature_importances_, before)
    with pytest.raises(cf.ParameterError):
        routed.set_params(importance_type="cover").feature_importances_


def test_constant_members_and_overrides_have_finite_raw_scores():
    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(grouping="region", combine="route", learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X, y, ids=ids)
    west = (X["region"] == "west").to_numpy()
    model.forget_rows(ids[west & (y == 1)])  # the west group is left with one class: a constant member
    rows = X[west].iloc[:3]
    assert np.array_equal(model.predict(rows, raw_score=True), np.full(3, -CERTAIN_MARGIN))
    contrib = model.predict(rows, pred_contrib=True)
    assert np.all(contrib[:, :-1] == 0) and np.all(contrib[:, -1] == -CERTAIN_MARGIN)
    model.relabel("a > 1.5", label=1, mode="override")
    hit = test[test["a"] > 1.5]
    assert np.array_equal(model.predict(hit, raw_score=True), np.full(len(hit), CERTAIN_MARGIN))
    reasons = model.explain(pd.concat([hit.iloc[:1], test[test["a"] < 0].iloc[:1]]), top=2)
    assert reasons["row"].tolist() == [1, 1]  # the overridden row has no feature reasons


def test_explain_reason_codes():
    X, y, ids, test = make_table("multiclass")
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X, y, ids=ids)
    rows = test.iloc[:5].reset_index(drop=True)
    frame = model.explain(rows, top=2)
    assert list(frame.columns) == ["row", "rank", "feature", "value", "contribution", "raw_score", "base", "class"]
    contrib = model.predict(rows, pred_contrib=True).reshape(5, 4, 5)
    raw = model.decision_function(rows)
    for r, lines in frame.groupby("row"):
        k = int(np.flatnonzero(model.classes_ == model.predict(rows.iloc[[r]])[0])[0])  # the decided class
        assert lines["class"].iloc[0] == model.classes_[k]
        c = contrib[r, k, :-1]
        top = np.argsort(-np.abs(c), kind="stable")[:2]
        assert lines["feature"].tolist() == [model.feature_names_in_[j] for j in top]
        assert lines["contribution"].tolist() == c[top].tolist()
        for got, j in zip(lines["value"].tolist(), top):
            want = rows.iloc[r][model.feature_names_in_[j]]
            assert (pd.isna(got) and pd.isna(want)) or got == want
        assert lines["raw_score"].iloc[0] == pytest.approx(raw[r, k], abs=1e-9)
    for bad in (0, 5, 2.5, True, "4"):
        with pytest.raises(cf.InputError):
            model.explain(rows, top=bad)
    with pytest.raises(cf.InputError):
        model.predict(rows, raw_score=True, pred_contrib=True)


# ---------------------------------------------------------------------------------------------- shap
shap = pytest.importorskip("shap")


def _numeric(task, n=400):
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "k"])
    X["k"] = rng.integers(0, 3, size=n).astype(float)
    X.loc[::9, "b"] = np.nan
    s = X["a"] + np.nan_to_num(X["b"]) * X["c"]
    y = {"binary": (s > 0).astype(int), "multiclass": np.digitize(s, [-0.5, 0.5]), "regression": s * 2}[task]
    return X, np.asarray(y)


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_shap_tree_explainer_agrees_with_pred_contrib(learner, task):
    X, y = _numeric(task)
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    tol = 1e-9 if learner == "lightgbm" else 1e-5  # XGBoost computes its contributions in float32
    for grouping, combine in ((cf.HashGroups(3), "average"), ("k", "route")):
        model = cls(grouping=grouping, combine=combine, learner=learner, learner_params=FAST[learner], n_jobs=1)
        model.fit(X, y)
        rows = X[X["k"] == 1.0] if combine == "route" else X
        explainer = shap.TreeExplainer(model.to_shap(group=1.0 if combine == "route" else None))
        values = np.asarray(explainer.shap_values(rows.to_numpy()))
        contrib = model.predict(rows, pred_contrib=True).reshape(len(rows), -1, 5)
        if values.ndim == 3:
            values = np.transpose(values, (0, 2, 1))
        else:
            values = values[:, None, :]
        np.testing.assert_allclose(values, contrib[:, :, :-1], rtol=0, atol=tol)
        np.testing.assert_allclose(np.reshape(explainer.expected_value, -1), contrib[0, :, -1], rtol=0, atol=tol)
    if task != "regression":
        model.relabel("a > 2", label=y[0], mode="override")
        with pytest.raises(cf.ExportError, match="override"):
            model.to_shap()


def test_shap_explanation_plots_and_categorical_splits(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X, y, ids=ids)
    with pytest.raises(cf.ExportError, match="categor"):
        model.to_shap()
    exp = model.shap_explanation(test)
    assert np.array_equal(exp.values, model.predict(test, pred_contrib=True)[:, :-1])
    assert list(exp.feature_names) == list(model.feature_names_in_)
    shap.plots.beeswarm(exp, show=False)
    matplotlib.pyplot.savefig(tmp_path / "beeswarm.png")
    assert (tmp_path / "beeswarm.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------- where decisions are made
def test_scorer_explains_as_the_model(tmp_path):
    X, y, ids, test = make_table("multiclass")
    model = cf.ForgetClassifier(grouping="region", combine="route", learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X, y, ids=ids)
    model.relabel("a > 1.5", label="top", mode="override")
    model.export(tmp_path / "bundle", format="bundle")
    scorer = cf.Scorer(tmp_path / "bundle")
    for kw in ({"raw_score": True}, {"pred_contrib": True}):
        assert np.array_equal(scorer.predict(test, **kw), model.predict(test, **kw))
    pd.testing.assert_frame_equal(scorer.explain(test, top=3), model.explain(test, top=3))


def test_the_service_refuses_reasons_it_cannot_give():
    pytest.importorskip("fastapi")
    from clusterforget.data import Schema
    from clusterforget.serve.app import Loaded, _explain_count

    onnx = Loaded({"model_version": 1}, Schema(("a", "b"), ("numeric", "numeric")), "classification", lambda t: {})
    assert _explain_count(None, onnx) == 0 and _explain_count(0, onnx) == 0
    with pytest.raises(ValueError, match="ONNX"):
        _explain_count(2, onnx)


def test_compare_shows_what_a_forget_moved():
    import copy

    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    before = copy.deepcopy(model)
    model.forget_group("south")
    cmp = cf.compare(before, model, test)
    want = model.predict_proba(test)[:, 1] - before.predict_proba(test)[:, 1]
    assert cmp.rows["change"].tolist() == sorted(want.tolist(), key=lambda v: -abs(v))
    top = cmp.rows.iloc[0]
    assert top["change"] == want[int(top["row"])] and abs(top["change"]) == np.abs(want).max()
    assert cmp.summary["rows_changed"] == int(np.count_nonzero(want)) and cmp.summary["versions"] == [before.version_, before.version_ + 1]
    assert cmp.summary["labels_changed"] == int((model.predict(test) != before.predict(test)).sum())
    by_name = cmp.importances.set_index("feature")
    assert by_name.loc[list(model.feature_names_in_), "after"].tolist() == model.feature_importances_.tolist()
    assert by_name.loc[list(model.feature_names_in_), "before"].tolist() == before.feature_importances_.tolist()
    assert "rows moved most" in repr(cmp) and cmp.to_dict(top=3)["rows"][0]["row"] == int(top["row"])
    same = cf.compare(model, model, test)
    assert same.summary["rows_changed"] == 0 and same.summary["max_abs_change"] == 0.0


def test_routed_importances_share_by_sample_weight():
    """Routing: a key's share of the importances is its share of the training rows' sample weights, not of their
    count (one member per key here, so each member's weight is its key's share)."""
    X, y, ids, _ = make_table("binary")
    w = np.where(X["region"].to_numpy() == "north", 5.0, 0.5)
    routed = cf.ForgetClassifier(grouping="region", combine="route", learner_params=FAST["lightgbm"], n_jobs=1)
    routed.fit(X, y, ids=ids, sample_weight=w)
    spec = routed.ensemble_.scoring_spec()
    total = w.sum()
    share = {k: w[X["region"].to_numpy() == k[0]].sum() / total for k in (m.key for m in spec.members)}
    want = sum(share[m.key] * m.member.feature_importance("split", 4) for m in spec.members)
    np.testing.assert_allclose(routed.feature_importances_, want, rtol=1e-12)
    import pickle  # a pickled model scores from its bundle export: the same shares

    assert np.array_equal(pickle.loads(pickle.dumps(routed)).feature_importances_, routed.feature_importances_)
