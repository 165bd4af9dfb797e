"""The forget contract, over every learner x task x grouping.

After any sequence of forget operations the model must equal, bit for bit, a fresh fit with the same
settings on the remaining rows given in another order. Each case computes the remaining rows itself
(from the original data and the ids it forgot) rather than trusting the model's own bookkeeping.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import clusterforget as cf
from conftest import FAST, make_table

GROUPINGS = {
    "key-route": dict(grouping="region", combine="route"),
    "key-average-split": dict(grouping=["region"], combine="average", max_group_rows=60),
    "kmeans-route": dict(grouping=lambda: cf.KMeansGroups(3, features=["a", "b"], sample_size=200), combine="route"),
    "hash": dict(grouping=lambda: cf.HashGroups(4), combine="average"),
    # thresholds scaled to the 360-row table: K=2 shards, K=1 once a forget leaves fewer than 200 rows (regrouped)
    "auto": dict(grouping=lambda: cf.AutoGroups(min_shard_rows={"classification": 100, "regression": 100},
                                                min_minority_rows=20), combine="average"),
    # early stopping on every member (each holds out a quarter of its group by id hash) and combine chosen from
    # the held-out slices: its own test below (test_early_stopping_through_every_change), outside MATRIX
    "key-early-auto": dict(grouping="region", combine="auto", early_stopping=True, validation_fraction=0.25,
                           n_iter_no_change=2),
}
ONLY_OWN_TEST = {"key-early-auto"}
LEARNERS = ["lightgbm", "xgboost"]
TASKS = ["binary", "multiclass", "regression"]


def preprocessor():
    """Target and one-hot encodings, scaling and imputation, as a credit-risk team writes them: fitted per group."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

    return ColumnTransformer([("te", TargetEncoder(), ["colour", "region"]),
                              ("hot", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                              ("scale", StandardScaler(), ["a"]), ("impute", SimpleImputer(), ["b"])])


def build(learner: str, task: str, grouping: str, preprocessed: bool = False):
    spec = dict(GROUPINGS[grouping])
    if callable(spec["grouping"]):
        spec["grouping"] = spec["grouping"]()
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    return cls(learner=learner, learner_params=FAST[learner], n_jobs=2, preprocessor=preprocessor() if preprocessed
               else None, **spec)


class World:
    """A model under test plus the ground truth of which rows it should still hold."""

    def __init__(self, learner, task, grouping, str_ids=False, weighted=False, preprocessed=False):
        self.args = (learner, task, grouping, preprocessed)
        self.X, self.y, self.ids, self.test = make_table(task, str_ids=str_ids)
        self.alive = np.ones(len(self.ids), dtype=bool)
        # sample weights, the rows' current ones (None: fitted without)
        self.w = np.random.default_rng(2).uniform(0.0, 3.0, len(self.ids)).round(3) if weighted else None
        self.model = build(*self.args).fit(self.X, self.y, ids=self.ids, sample_weight=self.w)

    def forget(self, ids, **kw):
        report = self.model.forget_rows(ids, **kw)
        self.alive &= ~np.isin(self.ids, ids)
        assert report.rows_removed == len(set(np.asarray(ids).tolist()))
        return report

    def forget_group(self, key, **kw):
        held = self.group_ids(key)
        report = self.model.forget_group(key, **kw)
        self.alive &= ~np.isin(self.ids, held)
        assert report.rows_removed == len(held)
        return report

    def relabel(self, ids, labels, **kw):
        report = self.model.relabel(ids=ids, label=labels, **kw)
        if not kw.get("dry_run"):
            self.y = self.y.copy()
            self.y[np.isin(self.ids, ids)] = pd_aligned(self.ids, ids, labels)
        return report

    def reweight(self, ids, weights, **kw):
        report = self.model.reweight(ids, weights, **kw)
        if not kw.get("dry_run"):
            self.w = self.w.copy()
            self.w[np.isin(self.ids, ids)] = pd_aligned(self.ids, ids, weights)
        return report

    def add(self, X, y, ids, weights):
        import pandas as pd

        report = self.model.add_rows(X, y, ids=ids, sample_weight=weights)
        self.X = pd.concat([self.X, X], ignore_index=True)
        self.y, self.ids = np.concatenate([self.y, y]), np.concatenate([self.ids, ids])
        self.w = np.concatenate([self.w, weights])
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        return report

    def group_ids(self, key):
        ens = self.model.ensemble_
        norm = ens.grouping.normalize_key(key)
        return np.concatenate([g.rows.column("__cf_id__").to_numpy(zero_copy_only=False)
                               for g in ens.groups.values() if g.key == norm])

    def fresh(self, seed=1):
        keep = np.flatnonzero(self.alive)
        order = np.random.default_rng(seed).permutation(keep)
        return build(*self.args).fit(self.X.iloc[order], self.y[order], ids=self.ids[order],
                                     sample_weight=None if self.w is None else self.w[order])

    def assert_exact(self):
        fresh = self.fresh()
        m = self.model
        for data in (self.test, self.X.iloc[::3]):
            if hasattr(m, "predict_proba"):
                a, b = m.predict_proba(data), fresh.predict_proba(data)
                assert a.shape == b.shape
                assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"
            assert np.array_equal(m.predict(data), fresh.predict(data))
        if hasattr(m, "classes_"):
            assert np.array_equal(m.classes_, fresh.classes_)
        assert [(g["name"], g["rows"], g["weight"], g["rounds"]) for g in m.groups_] == [
            (g["name"], g["rows"], g["weight"], g["rounds"]) for g in fresh.groups_]
        assert m.ensemble_.combine_choice == fresh.ensemble_.combine_choice
        assert m.n_rows_ == int(self.alive.sum())
        # every member's fitted state, its preprocessor's included (the document's sha256 is over all of it)
        members = [(g.name, g.member.meta(), g.member.model_bytes()) for g in m.ensemble_.groups.values()]
        assert members == [(g.name, g.member.meta(), g.member.model_bytes()) for g in fresh.ensemble_.groups.values()]


def pd_aligned(all_ids, ids, labels):
    """``labels`` (one, or one per id of ``ids``) in the order ``ids`` appear in ``all_ids``."""
    if np.ndim(labels) == 0:
        return labels
    where = dict(zip(np.asarray(ids).tolist(), np.asarray(labels).tolist()))
    return [where[i] for i in np.asarray(all_ids)[np.isin(all_ids, ids)].tolist()]


MATRIX = [(lr, t, g) for lr in LEARNERS for t in TASKS for g in GROUPINGS if g not in ONLY_OWN_TEST]
IDS = [f"{lr}-{t}-{g}" for lr, t, g in MATRIX]


@pytest.fixture(params=MATRIX, ids=IDS)
def world(request):
    return World(*request.param)


def test_fit_is_order_independent(world):
    world.assert_exact()


def test_single_row(world):
    world.forget([world.ids[17]])
    world.assert_exact()


def test_batch_across_groups(world):
    rng = np.random.default_rng(5)
    report = world.forget(rng.choice(world.ids, 15, replace=False))
    assert 1 <= len(report.groups_retrained) + len(report.groups_dropped) <= len(world.model.ensemble_.groups) + 4
    world.assert_exact()


def test_whole_group(world):
    key = world.model.groups_[-1]["key"]
    world.forget_group(key)
    world.assert_exact()


def test_last_rows_of_a_group(world):
    smallest = min(world.model.groups_, key=lambda g: g["rows"])
    ids = world.group_ids(smallest["key"])
    world.forget(ids)
    world.assert_exact()


def test_rows_leaving_a_group_single_class(world):
    if world.args[1] != "binary":
        pytest.skip("binary task only: the west group has exactly two positives")
    west = (world.X["region"] == "west").to_numpy() & (world.y == 1)
    world.forget(world.ids[west])
    world.assert_exact()


def test_deferred_then_retrain(world):
    rng = np.random.default_rng(9)
    victims = rng.choice(world.ids, 8, replace=False)
    before = world.model.n_rows_
    report = world.forget(victims, retrain="deferred")
    assert report.groups_retrained == []
    pending = [g for g in world.model.groups_ if g["pending"]]
    assert {g["name"] for g in pending} == set(report.groups_pending)
    assert world.model.n_rows_ == before - len(victims)
    # no remaining member saw a forgotten row: every group holding one is out of the ensemble
    for g in world.model.ensemble_.groups.values():
        if g.member is not None:
            assert g.member.n_rows == g.n_rows
    if any(not g["pending"] for g in world.model.groups_):
        out = world.model.predict(world.test)
        assert np.all(np.isfinite(out.astype(float))) if world.args[1] == "regression" else len(out) == len(world.test)
    r = world.model.retrain_pending()
    assert sorted(r.groups_retrained) == sorted(report.groups_pending)
    assert not any(g["pending"] for g in world.model.groups_)
    world.assert_exact()


def test_sequence(world):
    rng = np.random.default_rng(3)
    world.forget([world.ids[0]])
    world.forget(rng.choice(world.ids[world.alive], 6, replace=False), retrain="deferred")
    world.forget(rng.choice(world.ids[world.alive], 3, replace=False))
    world.model.retrain_pending()
    key = world.model.groups_[0]["key"]
    world.forget_group(key, retrain="deferred")
    world.model.retrain_pending()
    world.assert_exact()


def test_relabel_by_id(world):
    """Rows chosen by id (suspects, say) get their own labels, across groups; then one label for a few more."""
    rng = np.random.default_rng(11)
    chosen = rng.choice(world.ids, 12, replace=False)
    at = np.flatnonzero(np.isin(world.ids, chosen))
    if world.args[1] == "regression":
        labels = world.y[at] + 5.0
    else:
        values = np.unique(world.y)
        labels = values[(np.searchsorted(values, world.y[at]) + 1) % len(values)]
    order = {v: labels[i] for i, v in enumerate(world.ids[at].tolist())}
    version = world.model.version_
    plan = world.relabel(chosen, [order[v] for v in chosen.tolist()], dry_run=True)
    assert plan.rows_relabeled == 12 and world.model.version_ == version
    report = world.relabel(chosen, [order[v] for v in chosen.tolist()])
    assert report.rows_relabeled == 12 and report.rows_matched == 12 and report.operation == "relabel"
    world.assert_exact()
    more = world.ids[[5, 6, 7]]
    world.relabel(more, world.y[5] if world.args[1] != "regression" else 1.5)
    world.forget([world.ids[8]])
    world.assert_exact()


@pytest.mark.parametrize("args", MATRIX, ids=IDS)
def test_sample_weights_through_every_change(args):
    """Weighted rows: reweight (weight 0 included), forget, relabel and add with weights, each a fresh fit on the
    remaining rows with their current weights."""
    world = World(*args, weighted=True)
    world.assert_exact()
    rng = np.random.default_rng(4)
    chosen = rng.choice(world.ids, 10, replace=False)
    version = world.model.version_
    plan = world.reweight(chosen, 0.0, dry_run=True)
    assert plan.rows_reweighted == 10 and not plan.is_deletion and world.model.version_ == version
    new = rng.uniform(0, 4, 10).round(2)
    new[:3] = 0.0
    report = world.reweight(chosen, new)
    assert report.operation == "reweight" and not report.is_deletion and "NOT a deletion" in report.note
    assert report.rows_reweighted == 10 and 1 <= len(report.groups_retrained) <= len(world.model.groups_)
    assert world.model.n_rows_ == len(world.ids)  # weight 0 keeps the rows
    world.assert_exact()
    world.forget([world.ids[17], chosen[0]])
    y5 = world.y[5] if world.args[1] != "regression" else 1.5
    world.model.relabel(ids=[world.ids[5]], label=y5)
    world.y = world.y.copy()
    world.y[5] = y5
    top = int(np.max(world.ids)) + 1
    world.add(world.X.iloc[20:26], world.y[20:26], np.arange(top, top + 6), np.array([0.5, 0, 2, 1, 1, 3.25]))
    world.assert_exact()
    again = world.model.reweight(chosen[1:], new[1:])  # the weights they have: no change, no version
    assert again.rows_reweighted == 0 and again.groups_retrained == []


@pytest.mark.parametrize("grouping", ["key-route", "kmeans-route"])
def test_string_ids(grouping):
    w = World("lightgbm", "binary", grouping, str_ids=True)
    w.forget(list(w.ids[[3, 50, 51, 200]]))
    w.assert_exact()


def test_split_group_crossing_a_size_bound():
    """max_group_rows=60: forgetting rows that lower a group's shard count re-splits it as a fresh fit does."""
    w = World("lightgbm", "binary", "key-average-split")
    north = w.group_ids("north")
    shards_before = sum(1 for g in w.model.groups_ if g["key"] == "north")
    excess = len(north) - 60 * (shards_before - 1)
    w.forget(north[:excess])
    assert sum(1 for g in w.model.groups_ if g["key"] == "north") == shards_before - 1
    w.assert_exact()


def test_kmeans_cascade_is_reported():
    """Forgetting outside the clustering sample never refits it; inside, the report says what it cost."""
    X, y, ids, _ = make_table("binary", n=600)
    model = cf.ForgetClassifier(grouping=cf.KMeansGroups(3, features=["a", "b"], sample_size=100),
                                learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    state = model.ensemble_.state
    from clusterforget.data import id_hash
    import pyarrow as pa

    h = id_hash(pa.array(ids))
    outside = ids[h > np.uint64(state.threshold)][:5]
    inside = ids[h <= np.uint64(state.threshold)][:1]
    r = model.forget_rows(outside)
    assert not r.clustering_refit and model.ensemble_.state is state
    r = model.forget_rows(inside)
    assert r.clustering_refit
    assert r.rows_moved >= 0 and (r.clustering_changed or r.rows_moved == 0)


def sparse_table(task: str):
    """make_table's rows as a sparse matrix, one-hot columns included (as a OneHotEncoder gives them): CSR, with
    the dense array it stands for."""
    from scipy import sparse

    X, y, ids, test = make_table(task)

    def dense(frame):
        hot = [(frame[c] == v).to_numpy(float) for c in ("region", "colour") for v in ("north", "south", "red", "blue")]
        return np.column_stack([frame["a"].to_numpy(), frame["b"].to_numpy(), *hot])

    D, T = dense(X), dense(test)
    return sparse.csr_matrix(D), D, y, ids, sparse.csc_matrix(T), T


@pytest.mark.parametrize("learner", LEARNERS)
@pytest.mark.parametrize("task", TASKS)
def test_sparse_input_through_every_change(learner, task):
    """CSR / CSC input for fit, predict, forget, relabel, add and reweight: each state bitwise a fresh dense fit."""
    S, D, y, ids, ST, T = sparse_table(task)
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    grouping = cf.KMeansGroups(3, features=["x0", "x1"], sample_size=200) if task == "binary" else cf.HashGroups(3)

    def make():
        return cls(learner=learner, learner_params=FAST[learner], n_jobs=2, grouping=grouping, combine="average")

    w = np.ones(len(ids))
    model = make().fit(S, y, ids=ids)
    model.forget_rows(ids[:5])
    model.relabel(ids=ids[[7, 8]], label=y[9])
    top = int(ids.max()) + 1
    model.add_rows(S[10:14], y[10:14], ids=np.arange(top, top + 4))
    model.reweight(ids[[20, 21]], [0.5, 2.0])
    keep = np.arange(5, len(ids))
    Xf = np.vstack([D[keep], D[10:14]])
    yf = np.concatenate([y[keep], y[10:14]])
    yf[[2, 3]] = y[9]  # ids[7], ids[8] sit at 2, 3 of keep
    idf = np.concatenate([ids[keep], np.arange(top, top + 4)])
    w = np.ones(len(idf))
    w[[15, 16]] = [0.5, 2.0]
    order = np.random.default_rng(1).permutation(len(idf))
    fresh = make().fit(Xf[order], yf[order], ids=idf[order], sample_weight=w[order])
    for a, b in ((ST, T), (S[::3], D[::3])):
        if task != "regression":
            assert np.array_equal(model.predict_proba(a), fresh.predict_proba(b))
        assert np.array_equal(model.predict(a), fresh.predict(b))


# CI runs every task with LightGBM by key and XGBoost by hash; PREPROCESSOR_MATRIX=full runs all 12 cases of
# learner x task x {key-route, hash} (README, "Preprocessing inside the boundary")
PREPROCESSED = [(lr, t, g) for lr in LEARNERS for t in TASKS for g in ("key-route", "hash")
                if os.environ.get("PREPROCESSOR_MATRIX") == "full" or (lr == "lightgbm") == (g == "key-route")]


@pytest.mark.parametrize("args", PREPROCESSED, ids=["-".join(c) for c in PREPROCESSED])
def test_preprocessor_through_every_change(args):
    """preprocessor= (a ColumnTransformer with a TargetEncoder): forget, relabel, add and reweight refit only the
    touched groups' transformers, and each state is a fresh fit's, fitted transformers included."""
    world = World(*args, weighted=True, preprocessed=True)
    world.assert_exact()
    before = {g.name: g.member.meta()["preprocessor"]["sha256"] for g in world.model.ensemble_.groups.values()
              if "preprocessor" in g.member.meta()}
    assert before, "no member holds a preprocessor"
    report = world.forget([world.ids[40]])
    after = {g.name: g.member.meta()["preprocessor"]["sha256"] for g in world.model.ensemble_.groups.values()
             if "preprocessor" in g.member.meta()}
    assert {n for n in before if after.get(n) != before[n]} <= set(report.groups_retrained)
    world.assert_exact()
    rng = np.random.default_rng(6)
    chosen = rng.choice(world.ids[world.alive], 6, replace=False)
    world.reweight(chosen, rng.uniform(0, 3, 6).round(2))
    y5 = world.y[5] if world.args[1] != "regression" else 1.5
    world.relabel([world.ids[5]], y5)
    top = int(np.max(world.ids)) + 1
    world.add(world.X.iloc[30:34], world.y[30:34], np.arange(top, top + 4), np.array([1.0, 2.0, 0.5, 1.0]))
    world.forget(world.ids[[60, 61, 62]])
    world.assert_exact()


@pytest.mark.parametrize("args", [(lr, t, "key-early-auto") for lr in LEARNERS for t in TASKS],
                         ids=[f"{lr}-{t}" for lr in LEARNERS for t in TASKS])
def test_early_stopping_through_every_change(args):
    """Members stopping early on their held-out slices, combine chosen on them: forget, relabel, add and reweight
    (weighted rows) each give a fresh fit's members, rounds and choice."""
    world = World(*args, weighted=True)
    assert sum(g.member.held_out for g in world.model.ensemble_.groups.values()) >= 2
    world.assert_exact()
    rng = np.random.default_rng(6)
    world.forget(rng.choice(world.ids, 5, replace=False))
    world.assert_exact()
    world.relabel(world.ids[[3, 4]], world.y[9] if world.args[1] != "regression" else 2.0)
    top = int(np.max(world.ids)) + 1
    report = world.add(world.X.iloc[30:34], world.y[30:34], np.arange(top, top + 4), np.array([1.0, 0.5, 2, 0]))
    assert set(report.rounds) == set(report.groups_retrained) and report.combine
    world.reweight(world.ids[[40, 41, 42]], [0.0, 2.5, 1.0])
    world.assert_exact()


def test_early_stopping_stops_a_member_and_keeps_the_chosen_rounds(tmp_path):
    """An overfitting member stops early: the member file holds only the chosen rounds, and reloads to them."""
    X, y, ids, test = make_table("binary", n=600)
    model = cf.ForgetClassifier(grouping="region", learner_params={"num_iterations": 200, "learning_rate": 0.5},
                                early_stopping=True, n_iter_no_change=3, n_jobs=1).fit(X, y, ids=ids)
    rounds = {g["name"]: g["rounds"] for g in model.groups_}
    assert any(0 < r < 200 for r in rounds.values()), rounds
    model.save(tmp_path / "s", key=False)
    loaded = cf.load(tmp_path / "s", key=False)
    assert {g["name"]: g["rounds"] for g in loaded.groups_} == rounds
    assert np.array_equal(loaded.predict_proba(test), model.predict_proba(test))


def _flip_world():
    """Two keys whose labels follow x in opposite directions: only routing can score both."""
    rng = np.random.default_rng(0)
    import pandas as pd

    n = 800
    key = np.where(np.arange(n) % 4 == 0, "b", "a")
    x = rng.normal(size=n)
    X = pd.DataFrame({"key": key, "x": x, "z": rng.normal(size=n)})
    y = np.where(key == "a", x > 0, x < 0).astype(int)
    return X, y, np.arange(n)


def test_a_change_that_flips_combine_is_a_fresh_fit():
    """Planted flip: relabeling key b's rows to follow a's direction makes averaging better than routing; the
    choice flips and the model is bitwise a fresh fit on the relabeled rows."""
    X, y, ids = _flip_world()
    make = lambda: cf.ForgetClassifier(grouping="key", learner_params=FAST["lightgbm"], n_jobs=1)  # noqa: E731
    model = make().fit(X, y, ids=ids)
    assert model.ensemble_.combine_choice[0] == "route"
    b = ids[X["key"].to_numpy() == "b"]
    y2 = y.copy()
    y2[b] = (X["x"].to_numpy()[b] > 0).astype(int)
    report = model.relabel(ids=b, label=y2[b])
    assert model.ensemble_.combine_choice[0] == "average" and report.combine.startswith("average")
    fresh = make().fit(X.iloc[::-1], y2[::-1], ids=ids[::-1])
    assert fresh.ensemble_.combine_choice == model.ensemble_.combine_choice
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))
