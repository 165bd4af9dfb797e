"""suspects: rows scored out of sample only, groups valued by leaving their member out, and acting on them.

Each check plants what it must find (flipped labels, a memorised flip, a large residual, a poisoned segment of
adult) and asserts it is found; acting on suspects is checked against a fresh fit, the side estimate against an
unchanged store.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.cli import main
from conftest import FAST

FAST_LGB = FAST["lightgbm"]


def separable(n=1200, seed=0, flips=40):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["x", "y", "z"], size=n)})
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int).to_numpy().copy()
    flipped = rng.choice(n, flips, replace=False)
    y[flipped] = 1 - y[flipped]
    return X, y, flipped


def members_out_of_sample(model, X, ids):
    """The out-of-sample probability of every row, computed here from the members' boosters and the weights, and
    the in-sample one (the row's own member's)."""
    ens = model.ensemble_
    spec = ens.scoring_spec()
    from clusterforget.data import infer_schema

    _, table = infer_schema(X)
    group_of = {}
    for g in ens.groups.values():
        for v in g.rows.column("__cf_id__").to_pylist():
            group_of[v] = (g.key, g.shard)
    out = np.zeros((len(ids), len(spec.classes)))
    own_p = np.zeros_like(out)
    for m in spec.members:
        p = m.member.predict(table, spec.schema)  # through the member's own preprocessor, if it has one
        mine = np.array([group_of[v] == (m.key, m.shard) for v in ids.tolist()])
        out[np.ix_(~mine, m.class_index)] += m.weight * p[~mine]
        own_p[np.ix_(mine, m.class_index)] = p[mine]
    total = sum(m.weight for m in spec.members)
    own = np.array([next(m.weight for m in spec.members if (m.key, m.shard) == group_of[v]) for v in ids.tolist()])
    return out / (total - own)[:, None], own_p


def test_rows_are_scored_only_by_members_that_did_not_train_on_them():
    X, y, flipped = separable()
    ids = np.arange(100, 100 + len(y))
    # leaves of 2 rows: every member memorises its own rows, flips included, so in-sample scores would hide them
    model = cf.ForgetClassifier(grouping=cf.HashGroups(4), learner_params={"num_iterations": 300, "learning_rate": 0.3,
                                "min_data_in_leaf": 2, "num_leaves": 63, "min_sum_hessian_in_leaf": 1e-3}, n_jobs=2).fit(X, y, ids=ids)
    s = cf.suspects(model, n_bootstrap=50)
    expected, own = members_out_of_sample(model, X, ids)
    in_sample = own[np.arange(len(y)), y]
    by_id = dict(zip(s.ids.tolist(), s.prediction.tolist()))
    got = np.array([by_id[v] for v in ids.tolist()])
    assert np.allclose(got, expected[np.arange(len(y)), y], atol=1e-12)
    k = len(flipped)
    found = np.isin(s.ids[:k], ids[flipped]).mean()
    by_in_sample = np.isin(np.argsort(in_sample)[:k], flipped).mean()
    assert found >= 0.8 and found >= by_in_sample + 0.15, (found, by_in_sample)
    assert s.flagged[:k].mean() > 0.8
    assert set(s.suggested[:k].tolist()) <= {0, 1}
    assert np.all(np.diff(s.score) <= 0)
    assert any("3 member(s) that did not train on it" in n for n in s.notes)


def test_a_preprocessor_model_ranks_as_its_members_score_out_of_sample():
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler, TargetEncoder

    X, y, flipped = separable(seed=2)
    ids = np.arange(len(y))
    pre = ColumnTransformer([("te", TargetEncoder(), ["c"]), ("scale", StandardScaler(), ["a", "b"])])
    model = cf.ForgetClassifier(grouping=cf.HashGroups(4), preprocessor=pre, learner_params=FAST_LGB,
                                n_jobs=2).fit(X, y, ids=ids)
    s = cf.suspects(model, n_bootstrap=20)
    expected, _ = members_out_of_sample(model, X, ids)  # each member through its own group's fitted preprocessor
    by_hand = 1.0 - expected[s.ids, y[s.ids]]
    assert np.allclose(s.score, by_hand, rtol=0, atol=1e-12)
    assert np.all(np.diff(by_hand) <= 1e-12)  # the hand-made scores, in cf.suspects' order: the same ranking
    assert np.isin(s.ids[:len(flipped)], flipped).mean() > 0.6


def test_one_member_has_no_out_of_sample_signal():
    X, y, _ = separable(300)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(1), learner_params=FAST_LGB, n_jobs=1).fit(X, y)
    with pytest.raises(cf.NoOutOfSampleError, match="1 scoring member"):
        cf.suspects(model)


def test_routed_keys_say_how_their_rows_were_scored():
    X, y, flipped = separable(1200, seed=1)
    keyed = cf.ForgetClassifier(grouping="c", combine="route", learner_params=FAST_LGB, n_jobs=2).fit(X, y)
    s = cf.suspects(keyed, n_bootstrap=20)
    assert any("scored by the other keys' members" in n and "unseen key" in n for n in s.notes)
    sharded = cf.ForgetClassifier(grouping="c", combine="route", max_group_rows=250, learner_params=FAST_LGB,
                                  n_jobs=2).fit(X, y)
    s = cf.suspects(sharded, n_bootstrap=20)
    assert any("other shards of their key" in n for n in s.notes)
    assert np.isin(s.ids[:len(flipped)], flipped).mean() > 0.6


def test_regression_ranks_large_residuals_and_suggests_the_prediction():
    rng = np.random.default_rng(2)
    n = 1500
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = 3 * X["a"].to_numpy() - X["b"].to_numpy() + rng.normal(scale=0.2, size=n)
    planted = rng.choice(n, 25, replace=False)
    y[planted] += rng.choice([-8.0, 8.0], size=25)
    model = cf.ForgetRegressor(grouping=cf.HashGroups(3), learner_params=FAST_LGB, n_jobs=2).fit(X, y)
    s = cf.suspects(model, n_bootstrap=20)
    assert np.isin(s.ids[:25], planted).mean() >= 0.9
    assert s.flagged[:25].all() and s.n_flagged < 100
    assert np.array_equal(s.suggested, s.prediction) and s.to_frame(3).columns.tolist()[3] == "prediction"
    clean = 3 * X["a"].to_numpy() - X["b"].to_numpy()
    top = s.ids[:25][np.isin(s.ids[:25], planted)]
    assert np.all(np.abs(s.suggested[:25][np.isin(s.ids[:25], planted)] - clean[top]) < np.abs(y[top] - clean[top]))


def test_per_class_takes_the_most_suspect_half_of_each_labels_flagged_rows():
    """Computed by hand: the per-class set halves each given label's flagged rows in rank order (four -> the first
    two, one -> none), where ``ids[:recommended_k]`` can be one class only."""
    label = np.array([1, 1, 0, 1, 1, 0, 1, 0, 2, 2])
    flagged = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 0], dtype=bool)
    n = len(label)
    s = cf.Suspects(task="classification", ids=np.arange(100, 100 + n), score=np.linspace(1, 0, n), label=label,
                    prediction=np.zeros(n), suggested=1 - label, group=np.full(n, "0", dtype=object), flagged=flagged,
                    groups=[])
    assert s.recommended_k == 3 and s.label[:3].tolist() == [1, 1, 0]
    assert s.per_class().tolist() == [0, 1, 2]  # label 1: positions 0, 1, 3, 4 -> 0, 1; label 0: 2, 7 -> 2; 2: 8 -> -
    s.label = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s.flagged = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    assert s.recommended_k == 4 and set(s.label[:4]) == {1}  # the head: one class only
    assert s.per_class().tolist() == [0, 1, 4, 5]  # label 1: 0-3 -> 0, 1; label 0: 4, 5, 7, 8 -> 4, 5
    s.flagged[:] = False
    assert s.per_class().tolist() == []
    r = cf.Suspects(task="regression", ids=np.arange(n), score=np.linspace(9, 0, n), label=np.zeros(n),
                    prediction=np.zeros(n), suggested=np.zeros(n), group=np.full(n, "0", dtype=object),
                    flagged=np.arange(n) < 5, groups=[])
    assert r.per_class().tolist() == [0, 1]  # no classes: the top recommended_k


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
def test_multiclass_string_labels_relabel_to_the_suggestion_equals_a_fresh_fit(learner):
    rng = np.random.default_rng(3)
    n = 1200
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = np.array(["low", "mid", "high"], dtype=object)[np.digitize(X["a"], [-0.5, 0.5])]
    planted = rng.choice(n, 30, replace=False)
    y[planted] = np.where(y[planted] == "low", "high", "low")
    ids = np.array([f"u{i:05d}" for i in range(n)], dtype=object)
    make = lambda: cf.ForgetClassifier(grouping=cf.HashGroups(4), learner=learner, learner_params=FAST[learner],  # noqa: E731
                                       n_jobs=2)
    model = make().fit(X, y, ids=ids)
    s = cf.suspects(model, n_bootstrap=20)
    assert np.isin(s.ids[:30], ids[planted]).mean() >= 0.8
    p = s.per_class()  # string labels: half of each label's flagged rows, in rank order
    assert np.all(np.diff(p) > 0) and {c: int((s.label[p] == c).sum()) for c in ("low", "mid", "high")} == {
        c: int((s.flagged & (s.label == c)).sum()) // 2 for c in ("low", "mid", "high")}
    report = model.relabel(ids=s.ids[:30], label=s.suggested[:30], request_id="suspects-1")
    assert report.rows_relabeled == 30
    fixed = y.copy()
    fixed[np.searchsorted(ids, s.ids[:30])] = s.suggested[:30]
    assert np.isin(s.ids[:30], ids[planted]).sum() == (fixed[planted] != y[planted]).sum()
    fresh = make().fit(X, fixed, ids=ids)
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))


def test_a_poisoned_segment_of_adult_is_ranked_first(adult):
    """A partner's data (one workclass) arrives with its labels inverted: its member is the most harmful group."""
    df, y = adult
    poisoned = y.copy()
    partner = (df["workclass"] == "State-gov").to_numpy()
    poisoned[partner] = 1 - poisoned[partner]
    model = cf.ForgetClassifier(grouping="workclass", learner_params={"num_iterations": 30}, n_jobs=2).fit(df, poisoned)
    s = cf.suspects(model, n_bootstrap=100)
    first = s.groups[0]
    assert first.key == "State-gov" and first.harmful and first.rows == int(partner.sum())
    assert first.value < 5 * min(g.value for g in s.groups[1:])  # far below the next one
    assert first.scored_rows == len(y) - int(partner.sum())
    # forgetting the group recovers the clean model exactly (a fresh fit without it)
    model.forget_group(first.key, request_id="partner-recall")
    clean = cf.ForgetClassifier(grouping="workclass", learner_params={"num_iterations": 30}, n_jobs=2).fit(
        df[~partner], y[~partner], ids=np.flatnonzero(~partner))
    assert np.array_equal(model.predict_proba(df[:2000]), clean.predict_proba(df[:2000]))


def test_result_views_and_a_loaded_store_give_the_same_suspects(tmp_path):
    X, y, flipped = separable(800, seed=4, flips=20)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(4), learner_params=FAST_LGB, n_jobs=2).fit(X, y)
    s = cf.suspects(model, n_bootstrap=30)
    model.save(tmp_path / "store")
    again = cf.suspects(cf.load(tmp_path / "store"), n_bootstrap=30)
    assert np.array_equal(s.ids, again.ids) and np.allclose(s.score, again.score, rtol=0, atol=1e-12)
    assert [g.name for g in s.groups] == [g.name for g in again.groups]
    assert np.allclose([g.value for g in s.groups], [g.value for g in again.groups], rtol=0, atol=1e-12)
    frame = s.to_frame()
    assert frame.columns.tolist() == ["id", "score", "label", "p_label", "suggested", "group", "flagged"]
    assert len(frame) == 800 and frame["id"].tolist()[:5] == s.ids[:5].tolist()
    groups = s.groups_frame()
    assert len(groups) == 4 and groups["value"].tolist() == sorted(groups["value"].tolist())
    assert all(g.low <= g.value <= g.high for g in s.groups)
    d = json.loads(json.dumps(s.to_dict(top=5)))
    assert len(d["rows"]) == 5 and d["rows"][0]["id"] == int(s.ids[0]) and len(d["groups"]) == 4
    # act on half the flagged count: the head of the ranking, where these 20 planted flips are
    assert s.recommended_k == d["recommended_k"] == s.n_flagged // 2 > 0
    assert np.isin(s.ids[:s.recommended_k], flipped).mean() >= 0.8
    assert "suspects: 800 rows ranked" in str(s)
    png = s.plot(tmp_path / "suspects.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(cf.InputError, match="n_bootstrap"):
        cf.suspects(model, n_bootstrap=-1)
    with pytest.raises(cf.NotFittedError):
        cf.suspects(cf.ForgetClassifier())
    forgot = model.forget_rows(s.ids[:10], request_id="suspects-2")
    assert forgot.rows_removed == 10


def _store_digest(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_what_if_fits_on_the_side_and_changes_nothing(tmp_path):
    X, y, flipped = separable(1500, seed=5, flips=150)
    Xh, yh, _ = separable(600, seed=6, flips=0)
    make = lambda: cf.ForgetClassifier(grouping=cf.HashGroups(4), learner_params=FAST_LGB, n_jobs=2)  # noqa: E731
    model = make().fit(X, y)
    model.save(tmp_path / "store")
    bound = cf.load(tmp_path / "store")
    before, proba = _store_digest(tmp_path / "store"), bound.predict_proba(Xh)
    found = cf.suspects(bound, n_bootstrap=20)
    est = cf.what_if(bound, Xh, yh, 150, found)
    assert _store_digest(tmp_path / "store") == before and bound.version_ == 1
    assert np.array_equal(bound.predict_proba(Xh), proba)
    assert est.metric == "auc" and est.k == 150 and est.rows_holdout == 600
    from sklearn.metrics import roc_auc_score

    assert est.now == pytest.approx(roc_auc_score(yh, proba[:, 1]))
    # the side model is what forgetting would give: a fresh fit without the top rows
    keep = ~np.isin(np.arange(len(y)), found.ids[:150])
    fresh = make().fit(X[keep], y[keep], ids=np.flatnonzero(keep))
    assert est.forget == roc_auc_score(yh, fresh.predict_proba(Xh)[:, 1])
    fixed = y.copy()
    fixed[found.ids[:150]] = found.suggested[:150]
    assert est.relabel == roc_auc_score(yh, make().fit(X, fixed).predict_proba(Xh)[:, 1])
    assert "nothing was changed" in str(est)
    with pytest.raises(cf.InputError, match="k="):
        cf.what_if(bound, Xh, yh, 0, found)


def test_what_if_changes_the_model_s_own_state_weights_and_rules_kept(tmp_path):
    """A model with a group weight and an override rule: what_if's side models are that model after forget_rows /
    relabel of the top k (on a copy), bit for bit, not a refit that loses the weight and the rule."""
    from sklearn.base import clone

    from clusterforget.estimators import attach_ensemble
    from clusterforget.suspects import holdout_metric

    X, y, _ = separable(1500, seed=5, flips=150)
    Xh, yh, _ = separable(600, seed=6, flips=0)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(4), learner_params=FAST_LGB, n_jobs=2).fit(X, y)
    model.set_group_weight(2, 4.0)
    model.relabel("a > 1.2", 0, mode="override")
    model.save(tmp_path / "store")
    bound = cf.load(tmp_path / "store")
    before, version = _store_digest(tmp_path / "store"), bound.version_
    found = cf.suspects(bound, n_bootstrap=5)
    est = cf.what_if(bound, Xh, yh, 40, found)
    assert _store_digest(tmp_path / "store") == before and bound.version_ == version

    def copy():
        return attach_ensemble(clone(bound), bound.ensemble_)  # states never change: sharing one is a copy

    forgot, relabeled = copy(), copy()
    forgot.forget_rows(found.ids[:40])
    relabeled.relabel(ids=found.ids[:40], label=found.suggested[:40])
    assert est.forget == holdout_metric(forgot, Xh, yh)[1]
    assert est.relabel == holdout_metric(relabeled, Xh, yh)[1]
    # the weight and the rule matter: a refit from the rows alone (what what_if did) scores otherwise
    keep = ~np.isin(np.arange(len(y)), found.ids[:40])
    refit = clone(bound).fit(X[keep], y[keep], ids=np.flatnonzero(keep))
    assert est.forget != holdout_metric(refit, Xh, yh)[1]
    assert _store_digest(tmp_path / "store") == before and bound.version_ == version


def test_cli_suspects_table_json_holdout_and_escaping(tmp_path, capsys):
    rng = np.random.default_rng(7)
    n = 900
    X = pd.DataFrame({"a": rng.normal(size=n), "team": rng.choice(["[bold]red[/bold]", "[link=x]blue", "plain"],
                                                                   size=n)})
    y = (X["a"] > 0).astype(int).to_numpy().copy()
    y[:30] = 1 - y[:30]
    model = cf.ForgetClassifier(grouping="team", learner_params=FAST_LGB, n_jobs=2).fit(X, y)
    store = tmp_path / "store"
    model.save(store)
    holdout = tmp_path / "holdout.csv"
    Xh = pd.DataFrame({"a": rng.normal(size=300), "team": rng.choice(["plain", "[bold]red[/bold]"], size=300)})
    Xh.assign(y=(Xh["a"] > 0).astype(int)).to_csv(holdout, index=False)
    before = _store_digest(store)

    def cli(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = cli("suspects", store, "--top", "5")
    assert code == 0, err
    assert "[bold]red[/bold]" in out and "[link=x]blue" in out  # data printed as itself, not as markup
    assert "most harmful first" in out and "flagged" in out
    code, out, err = cli("suspects", store, "--top", "3", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert len(d["rows"]) == 3 and {g["name"] for g in d["groups"]} == {"[bold]red[/bold]", "[link=x]blue", "plain"}
    assert all(math.isfinite(r["score"]) for r in d["rows"])
    code, out, err = cli("suspects", store, "--json", "--holdout", holdout, "--target", "y", "--act-on", "30")
    assert code == 0, err
    h = json.loads(out)["holdout"]
    assert h["k"] == 30 and h["metric"] == "auc" and h["rows_holdout"] == 300
    code, out, err = cli("suspects", store, "--holdout", holdout)
    assert code == 1 and "--target" in err
    code, out, err = cli("suspects", store, "--holdout", holdout, "--target", "nope")
    assert code == 1 and "'nope'" in err
    assert _store_digest(store) == before
