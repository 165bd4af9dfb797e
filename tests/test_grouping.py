"""Unit tests for clusterforget.grouping: key groups, hash shards, learned clusters, size-bound shards, weights."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget.data import HASH, ID, id_hash, infer_schema
from clusterforget.grouping import (
    ClusterState,
    HashGroups,
    KeyGroups,
    KMeansGroups,
    grouping_from_dict,
    key_sort,
    normalize_value,
    resolve_grouping,
    sample_threshold,
)

P = {"num_iterations": 10, "num_leaves": 7, "min_data_in_leaf": 2, "min_data_in_bin": 1}


def canonical(frame: pd.DataFrame) -> pa.Table:
    """A frame in the canonical layout the ensemble hands to a grouping."""
    return infer_schema(frame)[1]


# ------------------------------------------------------------------------------------------------ key groups
@pytest.fixture()
def two_columns():
    return canonical(pd.DataFrame({
        "city": pd.Series(["b", None, "a", "b", None, "a", "b"], dtype=object),
        "size": [1.0, 2.0, np.nan, 1.0, 2.0, 1.0, np.nan],
        "x": np.arange(7.0),
    }))


def test_key_groups_over_two_columns_with_null_keys(two_columns):
    codes, keys = KeyGroups(["city", "size"]).assign(two_columns, None)
    by_row = [keys[c] for c in codes]
    assert by_row == [("b", 1), (None, 2), ("a", None), ("b", 1), (None, 2), ("a", 1), ("b", None)]
    assert len(set(keys)) == len(keys) == 5
    # integral floats are plain ints, missing values are None: the keys users type
    assert all(isinstance(k[1], int) or k[1] is None for k in keys)


@pytest.mark.parametrize("codes", ["mixed radix", "code rows"])
def test_key_route_known_unknown_and_null(two_columns, codes, monkeypatch):
    if codes == "code rows":  # the matching used when one mixed-radix code per key would overflow int64
        import clusterforget.grouping.key as key_module

        monkeypatch.setattr(key_module.math, "prod", lambda sizes: 2 ** 62)
    g = KeyGroups(["city", "size"])
    known = {("b", 1): 0, (None, 2): 1, ("a", None): 2}
    test = canonical(pd.DataFrame({
        "city": pd.Series(["b", None, "a", "a", "zz", None, "b"], dtype=object),
        "size": [1.0, 2.0, np.nan, 1.0, 1.0, np.nan, 2.0],
        "x": np.zeros(7),
    }))
    np.testing.assert_array_equal(g.route(test, None, known), [0, 1, 2, -1, -1, -1, -1])
    assert (g.route(test, None, {}) == -1).all()
    # a single key column, string keys
    one = KeyGroups("city")
    np.testing.assert_array_equal(one.route(test, None, {("a",): 5, (None,): 3}), [-1, 3, 5, 5, -1, 3, -1])


def test_key_normalize_and_order():
    g = KeyGroups(["city", "size"])
    assert g.normalize_key(("a", 2.0)) == ("a", 2)
    assert g.normalize_key((None, float("nan"))) == (None, None)
    assert g.normalize_key((np.str_("a"), np.int64(3))) == ("a", 3)
    assert KeyGroups("city").normalize_key("a") == ("a",)
    with pytest.raises(cf.InputError, match=r"group key \('a',\) has 1 value\(s\) but the grouping has 2 column"):
        g.normalize_key("a")
    assert normalize_value(np.float64(2.5)) == 2.5 and normalize_value(np.float64(-0.0)) == 0
    keys = [("b",), (2,), (None,), ("a",), (1.5,), (-1,)]
    assert sorted(keys, key=key_sort) == [(None,), (-1,), (1.5,), (2,), ("a",), ("b",)]
    with pytest.raises(cf.InputError, match=r"grouping columns must be column names, got \[1\]"):
        KeyGroups([1])


def test_key_groups_in_a_model_route_to_their_member():
    """Constant targets per group make every member a constant: routed predictions are the group's value."""
    frame = pd.DataFrame({
        "city": pd.Series(["a", "a", None, None, "b", "b", "b", "a"], dtype=object),
        "size": [1, 1, 1, 1, 2, np.nan, np.nan, 2],
        "x": np.arange(8.0),
    })
    y = np.array([10.0, 10.0, 20.0, 20.0, 30.0, 40.0, 40.0, 50.0])
    m = cf.ForgetRegressor(grouping=["city", "size"], combine="route", learner_params=P, n_jobs=1).fit(frame, y)
    assert [g["key"] for g in m.groups_] == [(None, 1), ("a", 1), ("a", 2), ("b", None), ("b", 2)]  # missing first
    assert all(g["learner"] == "constant" for g in m.groups_)
    test = pd.DataFrame({"city": pd.Series([None, "b", "a", "zz"], dtype=object), "size": [1, np.nan, 2, 1], "x": 0.0})
    pred = m.predict(test)
    np.testing.assert_array_equal(pred[:3], [20.0, 40.0, 50.0])
    assert pred[3] == pytest.approx(y.mean())  # unknown key: rows-weighted average of every member
    report = m.forget_group((None, 1))
    assert report.rows_removed == 2 and m.n_rows_ == 6 and report.groups_retrained == []
    assert report.groups_dropped == ["null, 1"]


def test_negative_zero_is_zero_in_a_key_column():
    frame = pd.DataFrame({"k": [0.0, -0.0, 0.0, -0.0, 1.0, 1.0], "x": np.arange(6.0)})
    m = cf.ForgetRegressor(grouping="k", combine="route", learner_params=P, n_jobs=1).fit(frame, np.arange(6.0))
    assert m.n_rows_ == 6  # no row lost
    assert {g["key"]: g["rows"] for g in m.groups_} == {0: 4, 1: 2}
    test = pd.DataFrame({"k": [-0.0, 0.0], "x": [1.0, 1.0]})
    p = m.predict(test)
    assert p[0] == p[1]


def test_key_assign_merges_entries_that_normalize_to_one_key():
    raw = pa.table({"k": pa.array([0.0, -0.0, 1.0])})
    codes, keys = KeyGroups("k").assign(raw, None)
    assert len(keys) == len(set(keys)) == 2


def test_route_with_huge_numeric_keys():
    frame = pd.DataFrame({"k": [2.0**60, 2.0**60, 1e20, 1e20, 2.0, 2.0], "x": np.arange(6.0)})
    y = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    m = cf.ForgetRegressor(grouping="k", combine="route", learner_params=P, n_jobs=1).fit(frame, y)
    np.testing.assert_array_equal(m.predict(frame), y)
    assert m.forget_group(2**60).rows_removed == 2


def test_large_integers_are_features():
    """Integers beyond 2**53 (ns timestamps, big codes) round to the nearest double instead of failing."""
    frame = pd.DataFrame({"t": np.array([2**60 + 1, 2**60 + 3, 5, 7], dtype=np.int64), "x": np.arange(4.0)})
    m = cf.ForgetRegressor(grouping=cf.HashGroups(1), learner_params=P, n_jobs=1).fit(frame, [1.0, 2.0, 3.0, 4.0])
    assert np.isfinite(m.predict(frame)).all()


# ---------------------------------------------------------------------------------------------- hash shards
# id_hash fixes hash-shard membership and the clustering sample of every stored model: these values must
# never change. Integers: splitmix64 (its reference output for 0 is 0xe220a8397b1dcdaf); strings: the
# first 8 bytes of BLAKE2b of the UTF-8 text, little-endian.
PINNED_INT = {
    0: 0xE220A8397B1DCDAF,
    1: 0x910A2DEC89025CC1,
    2: 0x975835DE1C9756CE,
    42: 0xBDD732262FEB6E95,
    -1: 0xE4D971771B652C20,
    2**63 - 1: 0x2A67D7552E039EA7,
    -(2**63): 0x481EC0A212A9F3DB,
    1234567890123: 0x9A253C9557CD08D8,
}
PINNED_STR = {
    "": 0xB4B2797457A0A6E4,
    "a": 0x2F42665B399EF840,
    "42": 0x7A686626F03CB457,
    "user-000001": 0xF349C45383677BA6,
    "ünïcødé": 0x394EA6676CD6AE59,
}


def test_id_hash_values_are_pinned():
    ints = list(PINNED_INT)
    assert id_hash(pa.array(ints, pa.int64())).tolist() == list(PINNED_INT.values())
    strs = list(PINNED_STR)
    assert id_hash(pa.array(strs, pa.string())).tolist() == list(PINNED_STR.values())
    # the same values from other containers and widths
    assert id_hash(pa.chunked_array([ints[:3], ints[3:]], pa.int64())).tolist() == list(PINNED_INT.values())
    small = [0, 1, 2, 42, -1]
    assert id_hash(pa.array(small, pa.int8())).tolist() == [PINNED_INT[i] for i in small]


def _splitmix64(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_id_hash_matches_its_definition():
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2**63), 2**63 - 1, size=200, dtype=np.int64)
    assert id_hash(pa.array(ints)).tolist() == [_splitmix64(int(i) & ((1 << 64) - 1)) for i in ints]
    strs = [f"id-{i}" for i in range(50)] + ["日本", "x" * 1000]
    expect = [int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little") for s in strs]
    assert id_hash(pa.array(strs)).tolist() == expect


def test_hash_shards_are_stable():
    ids = pa.array(list(range(16)), pa.int64())
    rows = pa.table({ID: ids, HASH: pa.array(id_hash(ids), pa.uint64())})
    codes, keys = HashGroups(8).assign(rows, None)
    shard = [keys[c][0] for c in codes]
    assert shard == [7, 1, 6, 5, 2, 2, 0, 7, 6, 4, 2, 5, 3, 7, 6, 5]  # pinned: hash % 8
    # a row's shard depends on its id only, never on the other rows
    codes1, keys1 = HashGroups(8).assign(rows.slice(5, 3), None)
    assert [keys1[c][0] for c in codes1] == shard[5:8]
    g = HashGroups(3)
    assert g.normalize_key(2) == (2,) and g.normalize_key((np.int64(1),)) == (1,)
    assert not g.routable and (g.route(rows, None, {(0,): 0}) == -1).all()


def test_hash_shards_in_a_model():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=80)})
    ids = [f"u{i}" for i in range(80)]
    m = cf.ForgetRegressor(grouping=cf.HashGroups(3), learner_params=P, n_jobs=1).fit(X, X["a"], ids=ids)
    expect = np.bincount(id_hash(pa.array(ids)) % np.uint64(3), minlength=3)
    assert [g["rows"] for g in m.groups_] == expect.tolist()
    assert [g["key"] for g in m.groups_] == [0, 1, 2]


# ------------------------------------------------------------------------------------------------ k-means
def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 6.0], [0.0, 8.0]])
    lab = rng.integers(0, 3, size=n)
    xy = centres[lab] + rng.normal(scale=0.7, size=(n, 2))
    X = pd.DataFrame({"a": xy[:, 0], "b": xy[:, 1], "c": rng.choice(["p", "q"], size=n)})
    X.loc[rng.random(n) < 0.05, "a"] = np.nan
    return X, xy[:, 0] + xy[:, 1]


@pytest.mark.parametrize("sample_size", [10_000, 60])
def test_kmeans_state_is_the_same_for_rows_in_any_order(sample_size):
    X, y = _blobs()
    ids = np.arange(len(X)) * 5 + 3

    def fit(order):
        spec = cf.KMeansGroups(3, sample_size=sample_size)
        return cf.ForgetRegressor(grouping=spec, combine="route", learner_params=P, n_jobs=1).fit(
            X.iloc[order], y[order], ids=ids[order]
        )

    a = fit(np.arange(len(X)))
    b = fit(np.random.default_rng(7).permutation(len(X)))
    c = fit(np.arange(len(X))[::-1])
    sa = a.ensemble_.state
    for other in (b, c):
        s = other.ensemble_.state
        assert s.to_dict() == sa.to_dict()
        assert s.same_partition(sa)
        np.testing.assert_array_equal(other.predict(X), a.predict(X))
        assert [(g["key"], g["rows"]) for g in other.groups_] == [(g["key"], g["rows"]) for g in a.groups_]
    assert sa.features == ("a", "b")  # numeric columns only, by default
    assert sa.sample_rows == min(sample_size, len(X))
    # powers of two and a grid: small changes of the sample reproduce the same numbers
    assert np.all(np.log2(sa.scale) == np.round(np.log2(sa.scale)))
    spec = a.ensemble_.grouping
    np.testing.assert_array_equal(sa.centroids, np.round(sa.centroids / spec.grid) * spec.grid)


def test_kmeans_assignment_of_a_row_does_not_depend_on_its_batch():
    X, y = _blobs()
    m = cf.ForgetRegressor(grouping=cf.KMeansGroups(3), combine="route", learner_params=P, n_jobs=1).fit(X, y)
    ens = m.ensemble_
    table = canonical(X)
    full = ens.grouping.nearest(table, ens.state)
    single = [ens.grouping.nearest(table.slice(i, 1), ens.state)[0] for i in range(0, len(X), 17)]
    np.testing.assert_array_equal(full[::17], single)


def test_kmeans_forgetting_outside_the_sample_keeps_the_clustering():
    X, y = _blobs()
    ids = np.arange(len(X))
    m = cf.ForgetRegressor(grouping=cf.KMeansGroups(3, sample_size=50), combine="route", learner_params=P,
                           n_jobs=1).fit(X, y, ids=ids)
    thr = m.ensemble_.state.threshold
    h = id_hash(pa.array(ids))
    outside = ids[h > np.uint64(thr)][:3]
    inside = ids[h <= np.uint64(thr)][:1]
    before = m.ensemble_.state
    r = m.forget_rows(outside)
    assert not r.clustering_refit and m.ensemble_.state is before
    r = m.forget_rows(inside)
    assert r.clustering_refit
    keep = ~np.isin(ids, np.r_[outside, inside])
    fresh = cf.ForgetRegressor(grouping=cf.KMeansGroups(3, sample_size=50), combine="route", learner_params=P,
                               n_jobs=1).fit(X[keep], y[keep], ids=ids[keep])
    assert m.ensemble_.state.to_dict() == fresh.ensemble_.state.to_dict()
    np.testing.assert_array_equal(m.predict(X), fresh.predict(X))


def test_kmeans_spec_checks():
    schema, _ = infer_schema(pd.DataFrame({"a": [1.0], "c": ["x"]}))
    with pytest.raises(cf.InputError, match=r"feature 'c' is not numeric"):
        KMeansGroups(2, features=["c"]).validate(schema)
    with pytest.raises(cf.InputError, match=r"feature 'zz' not found in X"):
        KMeansGroups(2, features=["zz"]).validate(schema)
    only_cat, _ = infer_schema(pd.DataFrame({"c": ["x"]}))
    with pytest.raises(cf.InputError, match=r"needs numeric features"):
        KMeansGroups(2).validate(only_cat)
    with pytest.raises(cf.InputError, match=r"positive number of clusters, got k=0"):
        KMeansGroups(0)
    with pytest.raises(cf.InputError, match=r"cluster key must be an int.*'a'"):
        KMeansGroups(2).normalize_key("a")
    assert KMeansGroups(2).normalize_key((np.int64(1),)) == (1,)


def test_cluster_state_round_trip():
    s = ClusterState(("a", "b"), np.array([0.5, -1.0]), np.array([1.0, 4.0]), np.array([[0.0, 0.125], [1.0, 2.0]]),
                     2**64 - 1, 100)
    back = ClusterState.from_dict(s.to_dict())
    assert back.same_partition(s) and back.threshold == 2**64 - 1 and back.sample_rows == 100
    assert not s.same_partition(None)


def test_sample_threshold():
    h = np.array([50, 10, 40, 30, 20], dtype=np.uint64)
    assert sample_threshold(h, 5) == 2**64 - 1 and sample_threshold(h, 10) == 2**64 - 1
    assert sample_threshold(h, 2) == 20
    assert int((h <= np.uint64(sample_threshold(h, 3))).sum()) == 3


# ---------------------------------------------------------------------------------------- size-bound shards
@pytest.mark.parametrize("n, max_rows", [(200, 60), (200, 100), (200, 200), (201, 100), (150, 7)])
def test_max_group_rows_shard_count(n, max_rows):
    rng = np.random.default_rng(n + max_rows)
    X = pd.DataFrame({"k": ["big"] * n + ["small"] * 5, "a": rng.normal(size=n + 5)})
    y = rng.normal(size=n + 5)
    m = cf.ForgetRegressor(grouping="k", max_group_rows=max_rows, learner_params=P, n_jobs=1).fit(X, y)
    big = [g for g in m.ensemble_.groups.values() if g.key == ("big",)]
    m_expected = math.ceil(n / max_rows)
    assert {g.n_shards for g in big} == {m_expected}
    assert len(big) == m_expected  # no shard is empty at these sizes
    assert sum(g.n_rows for g in big) == n
    if m_expected > 1:
        assert sorted(g["name"] for g in m.groups_ if g["key"] == "big") == sorted(
            f"big [shard {s + 1}/{m_expected}]" for s in range(m_expected))
    # a row's shard is its id hash modulo the shard count
    for g in big:
        h = g.rows.column(HASH).to_numpy()
        assert (h % np.uint64(g.n_shards) == np.uint64(g.shard)).all()
    small = [g for g in m.ensemble_.groups.values() if g.key == ("small",)]
    assert len(small) == 1 and small[0].n_shards == 1


def test_shard_count_follows_the_group_size_when_forgetting():
    rng = np.random.default_rng(3)
    n = 120
    X = pd.DataFrame({"k": ["g"] * n, "a": rng.normal(size=n)})
    y = rng.normal(size=n)
    m = cf.ForgetRegressor(grouping="k", max_group_rows=50, learner_params=P, n_jobs=1).fit(X, y)
    assert len(m.groups_) == 3
    gone = np.arange(25)  # 95 rows left: 2 shards
    report = m.forget_rows(gone)
    assert len(m.groups_) == 2 and report.rows_removed == 25
    keep = np.arange(25, n)
    fresh = cf.ForgetRegressor(grouping="k", max_group_rows=50, learner_params=P, n_jobs=1).fit(
        X.iloc[keep[::-1]], y[keep[::-1]], ids=keep[::-1])
    np.testing.assert_array_equal(m.predict(X), fresh.predict(X))


def test_forget_group_removes_every_shard():
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"k": ["g"] * 100 + ["h"] * 20, "a": rng.normal(size=120)})
    m = cf.ForgetRegressor(grouping="k", max_group_rows=30, learner_params=P, n_jobs=1).fit(X, rng.normal(size=120))
    assert len(m.groups_) == 5
    report = m.forget_group("g")
    assert report.rows_removed == 100 and len(report.groups_dropped) == 4 and report.groups_retrained == []
    assert [g["key"] for g in m.groups_] == ["h"] and m.n_rows_ == 20


# ------------------------------------------------------------------------------------------------ weights
def test_set_group_weight_is_reversible_and_not_a_deletion():
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"k": rng.choice(["a", "b", "c"], size=150), "x": rng.normal(size=150)})
    y = (X["x"] + (X["k"] == "a") > 0.3).astype(int)
    for combine in ("average", "route"):
        m = cf.ForgetClassifier(grouping="k", combine=combine, learner_params=P, n_jobs=1).fit(X, y)
        before = m.predict_proba(X)
        rows, version = m.n_rows_, m.version_
        report = m.set_group_weight("a", 0.25)
        assert report.is_deletion is False and report.to_dict()["is_deletion"] is False
        assert report.rows_removed == 0 and "NOT a deletion" in report.note
        assert "set_group_weight(key, 1)" in report.note
        assert "NOT a deletion" in str(report)
        assert m.n_rows_ == rows and m.version_ == version + 1
        w = {g["key"]: g["weight"] for g in m.groups_}
        n = {g["key"]: g["rows"] for g in m.groups_}
        assert w["a"] == pytest.approx(0.25 * n["a"] / (0.25 * n["a"] + n["b"] + n["c"]))
        changed = m.predict_proba(X)
        if combine == "average":
            assert not np.array_equal(changed, before)
        m.set_group_weight("a", 0)  # weight 0: the member does not vote; routed rows of 'a' fall back
        zero = m.predict_proba(X)
        assert np.isfinite(zero).all()
        m.set_group_weight("a", 1)
        np.testing.assert_array_equal(m.predict_proba(X), before)  # bit for bit
        assert {g["key"]: g["weight"] for g in m.groups_} == {
            k: v["rows"] / rows for k, v in {g["key"]: g for g in m.groups_}.items()}


def test_set_group_weight_checks():
    rng = np.random.default_rng(6)
    X = pd.DataFrame({"k": rng.choice(["a", "b"], size=60), "x": rng.normal(size=60)})
    m = cf.ForgetRegressor(grouping="k", learner_params=P, n_jobs=1).fit(X, X["x"])
    for bad in (-1, float("nan"), float("inf"), "1"):
        with pytest.raises(cf.InputError, match="weight must be a finite number >= 0"):
            m.set_group_weight("a", bad)
    with pytest.raises(cf.UnknownGroupError, match="'zz'"):
        m.set_group_weight("zz", 0.5)
    m.set_group_weight("a", 0)
    m.set_group_weight("b", 0)
    with pytest.raises(cf.NotFittedError, match=r"has weight 0.*set_group_weight\(key, 1\)"):
        m.predict(X)
    m.set_group_weight("b", 1)
    assert np.isfinite(m.predict(X)).all()


# ---------------------------------------------------------------------------------------------- specs
def test_resolve_and_serialize_groupings():
    assert isinstance(resolve_grouping(None), HashGroups) and resolve_grouping(None).k == 8
    assert resolve_grouping("a").columns == ("a",)
    assert resolve_grouping(["a", "b"]).columns == ("a", "b")
    with pytest.raises(cf.InputError, match=r"grouping=\[\] is not understood"):
        resolve_grouping([])
    for spec in (KeyGroups(["a", "b"]), HashGroups(5), KMeansGroups(4, ["x", "y"], sample_size=99, grid=0.5)):
        back = grouping_from_dict(spec.to_dict())
        assert type(back) is type(spec) and back.to_dict() == spec.to_dict()
    with pytest.raises(cf.InputError, match=r"unknown grouping kind 'nope'"):
        grouping_from_dict({"kind": "nope"})
    with pytest.raises(cf.InputError, match=r"positive number of shards, got k=0"):
        HashGroups(0)
