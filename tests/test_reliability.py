"""The defects of issue #11, one test each: what a careless user or an attacker did, and what must happen."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.data import ID
from clusterforget.store.commit import manifest_checksum
from clusterforget.store.fs import MANIFEST, dumps
from clusterforget.verify import fresh_fit

FAST = {"num_iterations": 5, "num_leaves": 4, "min_data_in_leaf": 2}


def frame(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"k": rng.choice(["a", "b", "c"], n), "x": rng.normal(size=n)})
    return X, (X["x"].to_numpy() > 0).astype(int)


def model(**kw) -> cf.ForgetClassifier:
    return cf.ForgetClassifier(grouping=kw.pop("grouping", "k"), learner_params=FAST, n_jobs=1, **kw)


def held_ids(m) -> list:
    return sorted((v for g in m.ensemble_.groups.values() for v in g.rows.column(ID).to_pylist()), key=repr)


def assert_fresh(m, X) -> None:
    assert np.array_equal(m.predict_proba(X), fresh_fit(m).predict_proba(X))


def tree_bytes(path) -> dict:
    return {
        os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
        for d, _, fs in os.walk(path) for f in fs if f != ".lock"
    }


# 1 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["rows", "members", "tombstones"])
def test_1_load_never_deletes_outside_the_store(tmp_path, sub):
    X, y = frame()
    model().fit(X, y).save(tmp_path / "s")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.parquet").write_bytes(b"keep me")
    shutil.copytree(tmp_path / "s" / sub, outside, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "s" / sub)
    os.symlink(outside, tmp_path / "s" / sub)
    before = tree_bytes(outside)
    with pytest.raises(cf.StoreError, match="symbolic link"):
        cf.load(tmp_path / "s")
    assert tree_bytes(outside) == before


@pytest.mark.parametrize("name", ["../outside.parquet", "/etc/passwd", "rows/../../x", "rows\\x.parquet"])
def test_1_manifest_paths_outside_the_store_are_refused(tmp_path, name):
    X, y = frame()
    model().fit(X, y).save(tmp_path / "s")
    (tmp_path / "outside.parquet").write_bytes(b"x")
    doc = json.loads((tmp_path / "s" / MANIFEST).read_bytes())
    first = doc["groups"][0]["rows"]
    doc["files"][name] = doc["files"].pop(first)
    doc["groups"][0]["rows"] = name
    doc["checksum"] = manifest_checksum(doc)
    (tmp_path / "s" / MANIFEST).write_bytes(dumps(doc))
    with pytest.raises(cf.StoreError, match="outside the store"):
        cf.load(tmp_path / "s")
    assert (tmp_path / "outside.parquet").read_bytes() == b"x"


# 2 ------------------------------------------------------------------------------------------------
def test_2_ids_differing_by_trailing_nul_are_distinct(tmp_path):
    X, y = frame()
    ids = [f"u{i}" for i in range(len(X))]
    ids[1] = "u0\x00"
    m = model().fit(X, y, ids=ids)
    report = m.forget_rows(["u0\x00"])
    assert report.rows_removed == 1
    held = held_ids(m)
    assert "u0" in held and "u0\x00" not in held
    assert_fresh(m, X)
    assert cf.verify(m, forgotten=["u0\x00"]).ids_still_held == []
    assert cf.verify(m, forgotten=["u0"]).ids_still_held == ["u0"]
    m.save(tmp_path / "s")
    m.forget_rows(["u0"])
    # the tombstone of "u0" does not refuse "u0\x00\x00", and the one of "u0\x00" refuses only it
    with pytest.raises(cf.TombstoneError):
        m.add_rows(X.iloc[:1], y[:1], ids=["u0"])
    m.add_rows(X.iloc[:1], y[:1], ids=["u0\x00\x00"])
    assert "u0\x00\x00" in held_ids(cf.load(tmp_path / "s"))


# 3 ------------------------------------------------------------------------------------------------
def test_3_forgotten_group_key_never_in_the_ledger(tmp_path):
    X, y = frame()
    X["k"] = np.where(X["k"] == "a", "Secret-Name", X["k"])
    m = model().fit(X, y)
    m.save(tmp_path / "s")
    m.forget_rows([int(np.flatnonzero(X["k"] == "Secret-Name")[0])])
    m.set_group_weight("Secret-Name", 0.5)
    m.forget_group("Secret-Name")
    for entry in cf.read_ledger(tmp_path / "s"):
        assert "Secret-Name" not in json.dumps(entry)
    for f, data in tree_bytes(tmp_path / "s").items():
        assert b"Secret-Name" not in data, f


# 4 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_cols", [19, 20, 40])
def test_4_many_key_columns_group_correctly(n_cols):
    rng = np.random.default_rng(1)
    n = 80
    X = pd.DataFrame({f"c{i}": rng.integers(0, 1000, n) for i in range(n_cols)})
    X["x"] = rng.normal(size=n)
    X.iloc[40:, :n_cols] = X.iloc[:40, :n_cols].to_numpy()  # 40 keys, two rows each
    y = (X["x"].to_numpy() > 0).astype(int)
    cols = [f"c{i}" for i in range(n_cols)]
    m = model(grouping=cols).fit(X, y)
    expected = {tuple(int(v) for v in r) for r in X[cols].itertuples(index=False)}
    assert {tuple(g["key"]) for g in m.groups_} == expected
    for g in m.ensemble_.groups.values():
        rows = g.rows.select(cols).to_pylist()
        assert {tuple(r.values()) for r in rows} == {g.key}
    proba = m.predict_proba(X)
    assert np.array_equal(proba, fresh_fit(m).predict_proba(X))
    m.forget_group(tuple(int(v) for v in X[cols].iloc[0]))
    assert m.n_rows_ == n - 2


# 5 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("terms", [10_000, 50_000])
def test_5_huge_rules_are_rule_errors(terms):
    X, y = frame()
    m = model().fit(X, y)
    rule = " or ".join(f"x == {i}" for i in range(terms))
    with pytest.raises(cf.RuleError, match="terms"):
        m.relabel(rule, 1)
    for deep in ("not (" * 3000 + "x > 0" + ")" * 3000, "not " * 20_000 + "x > 0", "(" * 20_000 + "x > 0"):
        with pytest.raises(cf.RuleError):
            m.relabel(deep, 1)
    assert m.version_ == 1


# 7 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [1e308, True, np.bool_(False), float("nan"), float("inf"), -1, "2", None, 1e13])
def test_7_bad_weights_refused(weight):
    X, y = frame()
    m = model().fit(X, y)
    before = m.predict_proba(X)
    with pytest.raises(cf.InputError, match="weight"):
        m.set_group_weight("a", weight)
    assert np.array_equal(m.predict_proba(X), before) and m.version_ == 1


def test_7_large_valid_weight_keeps_predictions_finite():
    X, y = frame()
    m = model().fit(X, y)
    m.set_group_weight("a", 1e12)
    assert np.isfinite(m.predict_proba(X)).all()


# 8 ------------------------------------------------------------------------------------------------
def test_8_add_rows_never_reuses_a_forgotten_id(tmp_path):
    X, y = frame()
    m = model().fit(X, y)
    top = len(X) - 1
    m.forget_rows([top, top - 1])
    m.add_rows(X.iloc[:3], y[:3])
    new = [v for v in held_ids(m) if v > top - 2]
    assert new == [top + 1, top + 2, top + 3]
    m.save(tmp_path / "s")
    m2 = cf.load(tmp_path / "s")
    m2.forget_rows([top + 3])
    m2.add_rows(X.iloc[:1], y[:1])
    assert max(held_ids(m2)) == top + 4
    m3 = cf.load(tmp_path / "s")
    m3.add_rows(X.iloc[:1], y[:1])
    assert max(held_ids(m3)) == top + 5


# 9 ------------------------------------------------------------------------------------------------
def test_9_raw_exceptions_are_typed():
    X, y = frame()
    m = model().fit(X, y)
    with pytest.raises(cf.InputError, match="64-bit"):
        m.forget_rows([2**70])
    with pytest.raises(cf.InputError, match="64-bit"):
        model().fit(X, y, ids=[2**64 + i for i in range(len(X))])
    with pytest.raises(cf.InputError, match="64-bit"):
        m.add_rows(X.iloc[:1], y[:1], ids=[-(2**70)])
    with pytest.raises(cf.UnknownGroupError):
        m.forget_group(pd.NA)
    with pytest.raises(cf.UnknownGroupError):
        m.set_group_weight(pd.NA, 0.5)
    with pytest.raises(cf.InputError, match="max_iter"):
        cf.KMeansGroups(4, max_iter=0)
    for grid in (float("inf"), float("nan"), True):
        with pytest.raises(cf.InputError, match="grid"):
            cf.KMeansGroups(4, grid=grid)
    assert m.version_ == 1


def test_9_missing_key_group_is_reachable_by_na():
    X, y = frame()
    X["k"] = X["k"].astype(object)
    X.loc[:4, "k"] = None
    m = model().fit(X, y)
    m.set_group_weight(pd.NA, 0.5)
    report = m.forget_group(pd.NA)
    assert report.rows_removed == 5


# 10 -----------------------------------------------------------------------------------------------
def test_10_verify_accepts_a_model_with_overrides():
    X, y = frame()
    m = model().fit(X, y)
    m.relabel("x > 1", 1, mode="override")
    m.forget_rows([3])
    result = cf.verify(m, forgotten=[3], X_probe=X)
    assert result.ok and result.fresh_fit_equal
    assert np.array_equal(m.predict_proba(X), fresh_fit(m).predict_proba(X))


# found by tests/test_fuzz.py ----------------------------------------------------------------------
def test_feature_integers_beyond_64_bits_are_input_errors():
    X, y = frame()
    m = model().fit(X, y)
    with pytest.raises(cf.InputError, match="64 bits"):
        m.add_rows(pd.DataFrame({"k": [-(2**63) - 1], "x": [0.0]}), [0])
    with pytest.raises(cf.InputError, match="64 bits"):
        model().fit(pd.DataFrame({"k": ["a", "b"], "x": [2**70, 1]}), [0, 1])
    assert m.version_ == 1
