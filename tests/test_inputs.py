"""Input handling and the typed error family.

Every container (pandas incl. pandas 3 ``str`` and ``category``, polars, pyarrow incl. dictionary columns,
numpy numeric and object arrays) must give the same model as every other, bit for bit, and missing values
are missing whatever spelled them. Every error is a ``cf.ClusterForgetError`` whose message quotes the bad
value and says what to do, and a refused operation leaves the model exactly as it was.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import clusterforget as cf

P = {"num_iterations": 12, "num_leaves": 7, "min_data_in_leaf": 3, "min_data_in_bin": 1}
N = 120


def data(n: int = N, seed: int = 0):
    """Numbers with NaN, small ints, a categorical with None, and a key column (one 1-row group).

    Returns a pandas frame holding Python objects (strings / None), y (binary) and y for regression.
    """
    rng = np.random.default_rng(seed)
    num = rng.normal(size=n)
    num[rng.random(n) < 0.15] = np.nan
    cnt = rng.integers(0, 5, size=n).astype(np.int64)
    cat = rng.choice(np.array(["red", "green", "blue", None], dtype=object), size=n, p=[0.4, 0.3, 0.2, 0.1])
    key = rng.choice(np.array(["k1", "k2", "k3"], dtype=object), size=n)
    if n > 7:
        key[7] = "solo"
    X = pd.DataFrame({"num": num, "cnt": cnt, "cat": pd.Series(cat, dtype=object), "key": pd.Series(key, dtype=object)})
    score = np.nan_to_num(num) + (cat == "red") * 0.8 + 0.2 * cnt
    y = (score + rng.normal(scale=0.4, size=n) > 0.6).astype(np.int64)
    y_reg = 2.0 * score + rng.normal(scale=0.2, size=n)
    return X, y, y_reg


def clf(**kw):
    kw.setdefault("grouping", cf.HashGroups(2))
    return cf.ForgetClassifier(learner_params=P, n_jobs=1, **kw)


def reg(**kw):
    kw.setdefault("grouping", cf.HashGroups(2))
    return cf.ForgetRegressor(learner_params=P, n_jobs=1, **kw)


def state(model, X):
    """What must not change when an operation is refused."""
    out = model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)
    return out, model.n_rows_, model.version_, [dict(g) for g in model.groups_]


def assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


# ----------------------------------------------------------------------------------------------- containers
def _pandas_str(X):
    return X.assign(cat=X["cat"].astype("str"), key=X["key"].astype("str"))


def _pandas_string(X):
    return X.assign(cat=X["cat"].astype("string"), key=X["key"].astype("string"))


def _pandas_category(X):
    # categories in a non-sorted order with an unused one: the encoding must come from the values only
    cats = ["zebra", "red", "blue", "green"]
    return X.assign(cat=pd.Categorical(X["cat"], categories=cats), key=X["key"].astype("category"))


def _pandas_nullable(X):
    return X.assign(num=X["num"].astype("Float64"), cnt=X["cnt"].astype("Int64"))


def _arrow(X):
    return pa.table({
        "num": pa.array(X["num"], from_pandas=True),
        "cnt": pa.array(X["cnt"].to_numpy(), pa.int32()),
        "cat": pa.array(X["cat"].tolist(), pa.string()),
        "key": pa.array(X["key"].tolist(), pa.large_string()),
    })


def _arrow_dictionary(X):
    t = _arrow(X)
    t = t.set_column(2, "cat", t.column("cat").dictionary_encode())
    return t.set_column(3, "key", t.column("key").dictionary_encode())


def _arrow_string_view(X):
    t = _arrow(X)
    return t.set_column(2, "cat", t.column("cat").cast(pa.string_view()))


def _arrow_chunked(X):
    t = _arrow(X)
    return pa.concat_tables([t.slice(0, 50), t.slice(50)])


def _polars(X):
    pl = pytest.importorskip("polars")
    return pl.from_pandas(X)


def _polars_categorical(X):
    pl = pytest.importorskip("polars")
    return pl.from_pandas(X).with_columns(pl.col("cat").cast(pl.Categorical), pl.col("key").cast(pl.Categorical))


def _polars_enum(X):
    pl = pytest.importorskip("polars")
    return pl.from_pandas(X).with_columns(pl.col("cat").cast(pl.Enum(["blue", "green", "red"])))


CONTAINERS = {
    "pandas-object": lambda X: X,
    "pandas-str": _pandas_str,
    "pandas-string": _pandas_string,
    "pandas-category": _pandas_category,
    "pandas-nullable": _pandas_nullable,
    "arrow": _arrow,
    "arrow-dictionary": _arrow_dictionary,
    "arrow-chunked": _arrow_chunked,
    "arrow-string-view": _arrow_string_view,
    "polars": _polars,
    "polars-categorical": _polars_categorical,
    "polars-enum": _polars_enum,
}


@pytest.fixture(scope="module")
def reference():
    X, y, y_reg = data()
    return X, y, y_reg, clf(grouping="key", combine="route").fit(X, y), reg(grouping="key").fit(X, y_reg)


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_every_container_gives_the_same_model(reference, name):
    X, y, y_reg, ref_c, ref_r = reference
    Xc = CONTAINERS[name](X)
    m = clf(grouping="key", combine="route").fit(Xc, y)
    r = reg(grouping="key").fit(Xc, y_reg)
    assert m.feature_names_in_.tolist() == ["num", "cnt", "cat", "key"]
    assert [g["key"] for g in m.groups_] == [g["key"] for g in ref_c.groups_]
    # same model, whatever held the data at fit or at predict time
    np.testing.assert_array_equal(m.predict_proba(Xc), ref_c.predict_proba(X))
    np.testing.assert_array_equal(m.predict_proba(X), ref_c.predict_proba(Xc))
    np.testing.assert_array_equal(r.predict(Xc), ref_r.predict(X))


def test_numpy_object_and_numeric_arrays():
    X, y, _ = data()
    ref = clf().fit(X, y)
    obj = X.to_numpy(dtype=object)  # NaN in numbers, None in strings, ints as Python ints
    m = clf().fit(obj, y)
    assert m.n_features_in_ == 4 and not hasattr(m, "feature_names_in_")
    np.testing.assert_array_equal(m.predict_proba(obj), ref.predict_proba(X))
    # numeric array: NaN is a missing value, same as a null in a frame
    num = X[["num", "cnt"]].to_numpy(dtype=np.float64)
    a = clf().fit(num, y)
    b = clf().fit(pd.DataFrame({"num": X["num"].astype(object).where(X["num"].notna(), None), "cnt": X["cnt"]}), y)
    np.testing.assert_array_equal(a.predict_proba(num), b.predict_proba(X[["num", "cnt"]]))
    # a numpy string array is categorical
    s = np.array([["a", "x"], ["b", "y"]] * 30)
    m = clf().fit(s, np.array([0, 1] * 30))
    np.testing.assert_array_equal(m.predict(np.array([["a", "x"], ["b", "y"]])), [0, 1])


def test_missing_values_in_numbers_and_categories():
    X, y, y_reg = data()
    assert X["num"].isna().any() and X["cat"].isna().any()
    m = clf(grouping="key", combine="route").fit(X, y)
    test = pd.DataFrame({
        "num": [np.nan, None, 0.5, np.nan],
        "cnt": [1, 2, 3, 4],
        "cat": [None, "red", "never-seen", None],
        "key": [None, "k1", "k2", "unseen-key"],  # a null key and an unseen key: both fall back to the average
    })
    p = m.predict_proba(test)
    assert p.shape == (4, 2) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # NaN and None are the same missing value
    a = m.predict_proba(test.assign(num=[np.nan, np.nan, 0.5, np.nan]))
    np.testing.assert_array_equal(a, p)
    # a column with missing values only, at predict time (pandas makes it all-null / float NaN)
    allnull = test.assign(cat=pd.Series([None] * 4, dtype=object), num=np.nan)
    assert np.isfinite(m.predict_proba(allnull)).all()
    r = reg(grouping="key").fit(X, y_reg)
    assert np.isfinite(r.predict(test)).all()


def test_infinite_values_are_refused_by_column():
    X, y, _ = data()
    bad = X.assign(num=X["num"].where(X.index != 3, np.inf))
    with pytest.raises(cf.InputError, match=r"column 'num' contains infinite values") as e:
        clf().fit(bad, y)
    assert "replace them" in str(e.value)


def test_mixed_type_column_names_the_column():
    X, y, _ = data()
    bad = X.assign(cat=pd.Series([1, "x"] * (N // 2), dtype=object))
    with pytest.raises(cf.InputError, match=r"column 'cat' mixes value types") as e:
        clf().fit(bad, y)
    assert "one type" in str(e.value)
    with pytest.raises(cf.InputError, match=r"column 'x0' mixes value types"):
        clf().fit(np.array([["a", 1], [2, 2]], dtype=object), [0, 1])


def test_unusable_inputs():
    X, y, _ = data()
    with pytest.raises(cf.InputError, match=r"column 'when' has type timestamp.*convert it"):
        clf().fit(X.assign(when=pd.Timestamp("2024-01-01")), y)
    with pytest.raises(cf.InputError, match=r"Reshape your data"):
        clf().fit(np.arange(10.0), np.arange(10) % 2)
    with pytest.raises(cf.InputError, match=r"X is None"):
        clf().fit(None, y)
    with pytest.raises(cf.InputError, match=r"column name '__cf_id__' is reserved.*rename"):
        clf().fit(X.assign(__cf_id__=1), y)
    with pytest.raises(cf.InputError, match=r"column names must be unique, got \['a'\]"):
        clf().fit(pa.table([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["a", "a"]), [0, 1])
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(cf.InputError, match=r"sparse X of dtype complex128 is not supported"):
        clf().fit(sparse.csr_matrix(np.eye(4) * 1j), [0, 1, 0, 1])
    with pytest.raises(cf.InputError, match=r"0 feature"):
        clf().fit(sparse.csr_matrix((4, 0)), [0, 1, 0, 1])


def test_sparse_reads_as_its_dense_form():
    """Every scipy layout reads as the table of ``toarray()``: unstored entries 0.0, stored NaN missing, COO
    duplicates summed."""
    sparse = pytest.importorskip("scipy.sparse")
    from clusterforget.data import infer_schema

    D = np.array([[0.0, 1.5, np.nan], [2.0, 0.0, 0.0], [0.0, 0.0, -3.0]])
    want = infer_schema(D)
    coo = sparse.coo_matrix(([1.0, 0.5, np.nan, 2.0, -3.0], ([0, 0, 0, 1, 2], [1, 1, 2, 0, 2])), shape=(3, 3))
    for S in (sparse.csr_matrix(D), sparse.csc_array(D), coo, sparse.lil_matrix(D)):
        got = infer_schema(S)
        assert got[0] == want[0] and got[1].equals(want[1])


# ---------------------------------------------------------------------------------------------------- ids
@pytest.mark.parametrize("kind", ["int", "str"])
def test_int_and_str_ids(kind):
    X, y, _ = data()
    ids = np.arange(500, 500 + N) * 3
    if kind == "str":
        ids = np.array([f"user-{i}" for i in ids], dtype=object)
    m = clf(grouping="key").fit(X, y, ids=ids)
    gone = ids[[4, 9, 33]]
    report = m.forget_rows(gone)
    assert report.rows_removed == 3 and m.n_rows_ == N - 3
    keep = ~np.isin(ids, gone)
    fresh = clf(grouping="key").fit(X[keep].iloc[::-1], y[keep][::-1], ids=ids[keep][::-1])
    np.testing.assert_array_equal(m.predict_proba(X), fresh.predict_proba(X))


def test_ids_in_any_container():
    X, y, _ = data()
    pl = pytest.importorskip("polars")
    sids = [f"r{i}" for i in range(N)]
    for ids in (pd.Series(sids, dtype="str"), pa.array(sids), pl.Series(sids), pd.Index(sids), np.array(sids)):
        m = clf().fit(X, y, ids=ids)
        assert m.forget_rows(ids[:2]).rows_removed == 2
    for ids in (pd.Series(range(N), dtype="Int64"), pa.chunked_array([list(range(50)), list(range(50, N))]),
                pl.Series(range(N)), np.arange(N, dtype=np.uint32)):
        m = clf().fit(X, y, ids=ids)
        assert m.forget_rows(5).rows_removed == 1


@pytest.mark.parametrize("ids", [[1, 2, 3, 2, 5], ["a", "b", "a", "c", "d"]])
def test_duplicate_ids(ids):
    X, y, _ = data(n=5)
    with pytest.raises(cf.DuplicateIdError) as e:
        clf().fit(X, y, ids=ids)
    dup = 2 if isinstance(ids[0], int) else "'a'"
    assert f"[{dup}]" in str(e.value) and "unique" in str(e.value) and "own id" in str(e.value)
    assert isinstance(e.value, cf.InputError) and isinstance(e.value, ValueError)


def test_bad_ids_at_fit():
    X, y, _ = data()
    with pytest.raises(cf.InputError, match=r"ids must be integers or strings, got type double \(first values \[0\.5"):
        clf().fit(X, y, ids=np.arange(N) + 0.5)
    with pytest.raises(cf.InputError, match=r"missing value\(s\) \(at positions \[3\]\)"):
        clf().fit(X, y, ids=[None if i == 3 else f"r{i}" for i in range(N)])
    with pytest.raises(cf.InputError, match=r"got 3 ids for 120 rows; pass one id per row"):
        clf().fit(X, y, ids=[1, 2, 3])
    with pytest.raises(cf.InputError, match=r"all be integers or all be strings, got \[1, 'a'"):
        clf().fit(X, y, ids=[1, "a"] + list(range(2, N)))
    with pytest.raises(cf.InputError, match=r"\[18446744073709551615\] do not fit in a signed 64-bit"):
        clf().fit(X, y, ids=np.r_[np.arange(N - 1, dtype=np.uint64), np.uint64(2**64 - 1)])


def test_unknown_ids_leave_the_model_unchanged():
    X, y, _ = data()
    m = clf(grouping="key", combine="route").fit(X, y, ids=np.arange(N) + 100)
    before = state(m, X)
    with pytest.raises(cf.UnknownIdError) as e:
        m.forget_rows([100, 101, 9999, 12345])  # two known, two unknown: nothing at all is removed
    msg = str(e.value)
    assert "[9999, 12345]" in msg and "nothing was changed" in msg and "Check the ids" in msg
    assert "100" not in msg.replace("[9999, 12345]", "")
    assert isinstance(e.value, KeyError) and isinstance(e.value, cf.ClusterForgetError)
    assert_same_state(state(m, X), before)
    # the model still works afterwards
    assert m.forget_rows([100, 101]).rows_removed == 2


def test_wrong_id_type_leaves_the_model_unchanged():
    X, y, _ = data()
    m = clf().fit(X, y)
    before = state(m, X)
    with pytest.raises(cf.InputError, match=r"ids \['3'\] are strings, but this model's row ids are integers"):
        m.forget_rows(["3"])
    s = clf().fit(X, y, ids=[f"r{i}" for i in range(N)])
    with pytest.raises(cf.InputError, match=r"ids \[3\] are integers, but this model's row ids are strings.*same type"):
        s.forget_rows(3)
    with pytest.raises(cf.InputError, match=r"no ids given to forget_rows"):
        m.forget_rows([])
    assert_same_state(state(m, X), before)


def test_forgetting_every_row_is_refused():
    X, y, _ = data()
    m = clf(grouping="key").fit(X, y)
    before = state(m, X)
    with pytest.raises(cf.EmptyModelError) as e:
        m.forget_rows(np.arange(N))
    assert "every training row" in str(e.value) and "nothing was changed" in str(e.value)
    assert "delete the model" in str(e.value)
    assert_same_state(state(m, X), before)
    # group by group: the last group cannot go
    keys = [g["key"] for g in m.groups_]
    for k in keys[:-1]:
        m.forget_group(k)
    before = state(m, X)
    with pytest.raises(cf.EmptyModelError):
        m.forget_group(keys[-1])
    assert_same_state(state(m, X), before)


# -------------------------------------------------------------------------------------------------- groups
def test_unknown_group_key():
    X, y, _ = data()
    m = clf(grouping="key").fit(X, y)
    before = state(m, X)
    with pytest.raises(cf.UnknownGroupError) as e:
        m.forget_group("k9")
    assert "'k9'" in str(e.value) and "model.groups_" in str(e.value) and "'k1'" in str(e.value)
    assert isinstance(e.value, KeyError)
    with pytest.raises(cf.UnknownGroupError, match="k9"):
        m.set_group_weight("k9", 0.5)
    with pytest.raises(cf.InputError, match=r"has 2 value\(s\) but the grouping has 1 column"):
        m.forget_group(("k1", "k2"))
    assert_same_state(state(m, X), before)
    km = clf(grouping=cf.KMeansGroups(2, features=["num", "cnt"])).fit(X, y)
    with pytest.raises(cf.UnknownGroupError, match=r"\(7,\)"):
        km.forget_group(7)
    with pytest.raises(cf.InputError, match=r"cluster key must be an int.*'k1'"):
        km.forget_group("k1")


def test_unknown_hash_shard_is_an_unknown_group():
    X, y, _ = data()
    m = clf(grouping=cf.HashGroups(2)).fit(X, y)
    with pytest.raises(cf.UnknownGroupError, match="5"):
        m.forget_group(5)


def test_grouping_column_not_in_x():
    X, y, _ = data()
    with pytest.raises(cf.InputError, match=r"grouping column\(s\) \['region'\] not found in X; available"):
        clf(grouping="region").fit(X, y)
    with pytest.raises(cf.InputError, match=r"grouping=\['key', 3\] is not understood"):
        cf.ForgetClassifier(grouping=["key", 3]).fit(X, y)
    # scikit-learn's parameter validation, inside the family
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(cf.InputError, match=r"'grouping' parameter of ForgetClassifier must be .*Got 3 instead") as e:
        cf.ForgetClassifier(grouping=3).fit(X, y)
    assert isinstance(e.value, InvalidParameterError)
    with pytest.raises(cf.InputError, match=r"The 'combine' parameter of ForgetRegressor must be a str among"):
        cf.ForgetRegressor(combine="vote").fit(X, y)


def test_single_class_and_single_row_groups_get_constant_members():
    X, y, y_reg = data()
    y = y.copy()
    y[(X["key"] == "k3").to_numpy()] = 1  # k3 holds one class only
    m = clf(grouping="key", combine="route").fit(X, y)
    groups = {g["key"]: g for g in m.groups_}
    assert set(groups) == {"k1", "k2", "k3", "solo"}  # nothing silently dropped
    assert groups["k3"]["learner"] == "constant" and groups["solo"]["learner"] == "constant"
    assert groups["solo"]["rows"] == 1 and groups["solo"]["weight"] > 0
    assert groups["k1"]["learner"] == "lightgbm"
    assert sum(g["rows"] for g in m.groups_) == N == m.n_rows_
    np.testing.assert_array_equal(m.classes_, [0, 1])
    rows = pd.DataFrame({"num": [0.1, 0.2], "cnt": [1, 2], "cat": ["red", None], "key": ["k3", "solo"]})
    p = m.predict_proba(rows)
    solo_label = y[7]
    np.testing.assert_array_equal(p[0], [0.0, 1.0])
    np.testing.assert_array_equal(p[1], np.eye(2)[solo_label])
    # regression: a 1-row group predicts its one target
    r = reg(grouping="key", combine="route").fit(X, y_reg)
    assert {g["key"]: g["learner"] for g in r.groups_}["solo"] == "constant"
    assert r.predict(rows.iloc[[1]])[0] == y_reg[7]


def test_forgetting_down_to_one_class_gives_a_constant_member():
    X, y, _ = data()
    m = clf(grouping="key", combine="route").fit(X, y)
    k2 = np.flatnonzero((X["key"] == "k2").to_numpy())
    ones = k2[y[k2] == 1]
    m.forget_rows(ones)
    g = {g["key"]: g for g in m.groups_}["k2"]
    assert g["learner"] == "constant" and g["rows"] == len(k2) - len(ones)
    row = X.iloc[[k2[0]]]
    np.testing.assert_array_equal(m.predict_proba(row), [[1.0, 0.0]])


def test_a_class_that_leaves_the_model_leaves_classes_():
    X, y, _ = data()
    y = np.where(np.arange(N) == 11, 2, y)  # class 2 has a single row
    m = clf(grouping="key").fit(X, y)
    assert m.classes_.tolist() == [0, 1, 2] and m.predict_proba(X).shape == (N, 3)
    m.forget_rows([11])
    assert m.classes_.tolist() == [0, 1] and m.predict_proba(X).shape == (N, 2)


# ------------------------------------------------------------------------------------------------- schema
def test_schema_mismatch_at_predict():
    X, y, _ = data()
    m = clf(grouping="key").fit(X, y)
    before = state(m, X)
    with pytest.raises(cf.SchemaError, match=r"missing \['cat'\].*fit saw \['num', 'cnt', 'cat', 'key'\]"):
        m.predict(X.drop(columns="cat"))
    with pytest.raises(cf.SchemaError, match=r"unexpected \['extra'\]"):
        m.predict(X.assign(extra=1.0))
    with pytest.raises(cf.SchemaError, match=r"another order \['cnt', 'num', 'cat', 'key'\].*in that order"):
        m.predict(X[["cnt", "num", "cat", "key"]])
    with pytest.raises(cf.SchemaError, match=r"column 'num' was numeric at fit time but has type .*string.*"
                       r"first values \['0\.1', 'x'.*same column types"):
        m.predict(X.assign(num=["0.1", "x"] * (N // 2)))
    with pytest.raises(cf.SchemaError, match=r"column 'cat' was categorical at fit time but has type double"):
        m.predict(X.assign(cat=1.5))
    with pytest.raises(cf.SchemaError, match=r"column 'num' has type timestamp.*at fit time it was numeric"):
        m.predict(X.assign(num=pd.Timestamp("2024-01-01")))
    with pytest.raises(cf.SchemaError, match=r"X has 3 features, but ForgetClassifier is expecting 4 features"):
        m.predict(X.to_numpy()[:, :3])
    assert_same_state(state(m, X), before)
    # SchemaError is an InputError is a ValueError, as scikit-learn users expect
    assert issubclass(cf.SchemaError, cf.InputError) and issubclass(cf.SchemaError, ValueError)


def test_array_fit_takes_columns_by_position():
    X, y, _ = data()
    m = clf().fit(X.to_numpy(dtype=object), y)
    with pytest.warns(UserWarning, match="X has feature names, but ForgetClassifier was fitted without"):
        p = m.predict_proba(X)
    np.testing.assert_array_equal(p, m.predict_proba(X.to_numpy(dtype=object)))
    f = clf().fit(X, y)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        q = f.predict_proba(X.to_numpy(dtype=object))
    np.testing.assert_array_equal(q, f.predict_proba(X))


# ---------------------------------------------------------------------------------------------------- targets
def test_target_errors():
    X, y, y_reg = data()
    with pytest.raises(cf.InputError, match=r"X has 120 rows but y has 119; pass one target per row"):
        clf().fit(X, y[:-1])
    with pytest.raises(cf.InputError, match=r"continuous.*values such as \[-?\d.*use ForgetRegressor"):
        clf().fit(X, y_reg)
    with pytest.raises(cf.InputError, match=r"requires y to be passed, but the target y is None"):
        clf().fit(X, None)
    with pytest.raises(cf.InputError, match=r"y should be a 1d array, got an array of shape \(120, 2\)"):
        reg().fit(X, np.c_[y_reg, y_reg])


@pytest.mark.parametrize("container", ["numpy", "pandas-Float64", "pandas-object", "polars", "arrow"])
def test_regressor_refuses_missing_targets(container):
    X, _, y_reg = data()
    y = y_reg.astype(object)
    y[[5, 17]] = None
    if container == "numpy":
        y = np.where(pd.isna(y), np.nan, y).astype(float)
    elif container == "pandas-Float64":
        y = pd.Series(y, dtype="Float64")
    elif container == "pandas-object":
        y = pd.Series(y, dtype=object)
    elif container == "polars":
        y = pytest.importorskip("polars").Series(list(y), dtype=pytest.importorskip("polars").Float64)
    else:
        y = pa.array(list(y), pa.float64())
    with pytest.raises(cf.InputError, match=r"y contains 2 missing value\(s\) \(NaN/None at positions \[5, 17\]\); "
                       r"drop those rows or fill them"):
        reg().fit(X, y)
    with pytest.raises(cf.InputError, match=r"infinite value\(s\) \(\[inf\] at positions \[3\]\)"):
        reg().fit(X, np.where(np.arange(N) == 3, np.inf, y_reg))


@pytest.mark.parametrize("container", ["object", "pandas-str", "pandas-category", "pandas-Int64", "polars"])
def test_classifier_refuses_missing_labels(container):
    X, y, _ = data()
    labels = np.array(["no", "yes"], dtype=object)[y]
    labels[[2, 8]] = None
    if container == "pandas-str":
        labels = pd.Series(labels, dtype="str")
    elif container == "pandas-category":
        labels = pd.Series(labels, dtype="category")
    elif container == "pandas-Int64":
        labels = pd.Series(np.where(pd.isna(labels), None, y), dtype="Int64")
    elif container == "polars":
        labels = pytest.importorskip("polars").Series(list(labels))
    with pytest.raises(cf.InputError, match=r"y contains 2 missing label\(s\) \(at positions \[2, 8\]\)"):
        clf().fit(X, labels)


@pytest.mark.parametrize("container", ["numpy", "pandas-str", "pandas-category", "polars", "arrow-dictionary"])
def test_string_labels_in_any_container(container):
    X, y, _ = data()
    labels = np.array(["no", "yes"], dtype=object)[y]
    ref = clf().fit(X, labels)
    if container == "pandas-str":
        labels = pd.Series(labels, dtype="str")
    elif container == "pandas-category":
        labels = pd.Series(labels, dtype="category")
    elif container == "polars":
        labels = pytest.importorskip("polars").Series(list(labels))
    elif container == "arrow-dictionary":
        labels = pa.array(list(labels)).dictionary_encode()
    m = clf().fit(X, labels)
    assert m.classes_.tolist() == ["no", "yes"]
    np.testing.assert_array_equal(m.predict_proba(X), ref.predict_proba(X))
    assert set(m.predict(X).tolist()) <= {"no", "yes"}


def test_classifier_refuses_mixed_label_types():
    X, y, _ = data(n=4)
    with pytest.raises(cf.InputError, match=r"y mixes label types \['int', 'str'\]; use one type"):
        clf().fit(X, np.array([1, "a", 1, "a"], dtype=object))


# -------------------------------------------------------------------------------------------- the error family
def test_every_error_is_a_clusterforget_error():
    for name in cf.errors.__all__:
        if issubclass(getattr(cf, name), Warning):  # warnings are a family of their own (EnvironmentWarning)
            assert issubclass(getattr(cf, name), UserWarning), name
            continue
        assert issubclass(getattr(cf, name), cf.ClusterForgetError), name
    assert issubclass(cf.NotFittedError, cf.ClusterForgetError)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"not fitted yet.*Call 'fit'"):
        cf.ForgetClassifier().predict(np.zeros((2, 2)))
    with pytest.raises(cf.NotFittedError):
        cf.ForgetRegressor().forget_rows([1])


def test_bad_parameters_and_options():
    X, y, _ = data()
    m = clf(grouping="key").fit(X, y)
    with pytest.raises(cf.InputError, match=r"retrain='later' is not an option; use 'now' or 'deferred'"):
        m.forget_rows([1], retrain="later")
    with pytest.raises(cf.InputError, match=r"weight must be a finite number >= 0, got -1"):
        m.set_group_weight("k1", -1)
    with pytest.raises(cf.InputError, match=r"hash shard key must be an int in \[0, 2\), got 'a'"):
        clf().fit(X, y).forget_group("a")
    with pytest.raises(ValueError, match=r"learner"):
        cf.ForgetClassifier(learner="catboost").fit(X, y)


def test_messages_name_the_remedy():
    """Spot check over the family: each message says what to do, not only what is wrong."""
    X, y, _ = data()
    m = clf(grouping="key").fit(X, y)
    cases = [
        (lambda: m.forget_rows([10**9]), "Check the ids"),
        (lambda: m.forget_group("nope"), "Use model.groups_"),
        (lambda: m.predict(X[["num"]]), "Select the columns"),
        (lambda: clf().fit(X, y, ids=[0] * N), "Give each row its own id"),
        (lambda: m.forget_rows(np.arange(N)), "delete the model"),
    ]
    for call, remedy in cases:
        with pytest.raises(cf.ClusterForgetError) as e:
            call()
        assert re.search(re.escape(remedy), str(e.value)), (remedy, str(e.value))


@pytest.mark.parametrize("learner, params", [("lightgbm", {"num_leaves": -3}), ("xgboost", {"max_depth": -2})])
def test_learner_errors_join_the_family(learner, params):
    X, y, _ = data()
    m = cf.ForgetClassifier(learner=learner, grouping="key", learner_params=params, n_jobs=1)
    with pytest.raises(cf.InputError, match=r"could not train group '\w+' \(\d+ rows\).*check learner_params"):
        m.fit(X, y)


def test_early_stopping_scoring_names_and_groups_too_small_to_hold_out():
    """An unknown or other-task ``scoring`` is refused with the task's accepted names (and the closest one);
    early_stopping=True warns, naming them, about groups too small to hold out a slice ('auto' does not)."""
    import warnings

    from conftest import FAST, make_table

    X, y, ids, _ = make_table("regression", n=240)
    for scoring, est, named in (("rocauc", cf.ForgetClassifier, "'loss', None, 'accuracy', 'roc_auc', 'neg_log_loss' "
                                 "(did you mean 'roc_auc'?)"), ("roc_auc", cf.ForgetRegressor, "'loss', None, 'r2', "
                                 "'neg_mean_squared_error', 'neg_root_mean_squared_error', 'neg_mean_absolute_error'")):
        with pytest.raises(cf.ParameterError) as refused:
            est(scoring=scoring).fit(X[["a"]], (y > 0) if est is cf.ForgetClassifier else y)
        assert str(refused.value) == (f"scoring={scoring!r} is not a score {est.__name__} can stop early on; use one "
                                      f"of {named}")
    settings = dict(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1)
    with pytest.warns(UserWarning, match=r"early_stopping=True, but 1 group\(s\) are too small .*validation_fraction="
                                         r"0\.1.*: 'tiny' \(3 rows\)\. To stop early there, raise validation_fraction"):
        model = cf.ForgetRegressor(early_stopping=True, **settings).fit(X, y, ids)
    assert [g.name for g in model.ensemble_.groups.values() if not g.member.held_out] == ["tiny"]
    tiny = ids[np.flatnonzero(X["region"].to_numpy() == "tiny")[:1]]
    with pytest.warns(UserWarning, match=r"'tiny' \(2 rows\)"):  # a change that retrains it says so again
        model.forget_rows(tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.forget_rows(ids[X["region"].to_numpy() == "north"][:1])  # 'tiny' not retrained: no warning
        cf.ForgetRegressor(early_stopping="auto", **settings).fit(X, y, ids)
