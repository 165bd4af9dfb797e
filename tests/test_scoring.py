"""``scoring.score`` converts a batch once and gives each member its rows; outputs are the per-member encoding's.

The reference is the straightforward definition: every member encodes its own rows of the canonical table
with its own vocabulary (``members.encode``) and predicts them; groups are combined as ``scoring`` documents.
The fast path must equal it bitwise over route / average, key / k-means / hash groupings, sharded keys,
every task, and rows with unseen and null keys and categories.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget.data import conform
from clusterforget.members import CLASSIFICATION, encode
from clusterforget.scoring import apply_overrides, score
from conftest import FAST, make_table

CASES = {
    "key-route": dict(grouping="region", combine="route"),
    "key-route-shards": dict(grouping="region", combine="route", max_group_rows=40),
    "key-average": dict(grouping="region", combine="average"),
    "kmeans-route": dict(grouping=lambda: cf.KMeansGroups(3, features=["a", "b"], sample_size=200), combine="route"),
    "hash": dict(grouping=lambda: cf.HashGroups(3), combine="average"),
}
TASKS = ["binary", "multiclass", "regression"]


def reference(spec, X: pa.Table) -> np.ndarray:
    """Each member encodes its own rows with its own vocabulary: the definition the fast path must keep."""

    def average(positions, rows):
        sub = X.take(pa.array(rows))
        out = np.zeros((len(rows), spec.n_outputs))
        for i, wi in zip(positions, spec.normalized_weights(positions).tolist()):
            if wi == 0.0:
                continue
            sm = spec.members[i]
            p = sm.member.predict_encoded(encode(sub, spec.schema, sm.member.vocab), spec.schema, 1)
            if spec.task != CLASSIFICATION:
                out += wi * p.reshape(-1, 1)
            else:
                out[:, sm.class_index] += wi * p
        return out

    everyone = list(range(len(spec.members)))
    rows = np.arange(X.num_rows)
    if spec.combine != "route":
        return apply_overrides(spec, X, average(everyone, rows))
    by_key = spec.routes()
    keys = list(by_key)
    where = spec.grouping.route(X, spec.state, {k: i for i, k in enumerate(keys)})
    out = np.empty((X.num_rows, spec.n_outputs))
    for i in range(-1, len(keys)):
        hit = np.flatnonzero(where == i)
        if len(hit):
            out[hit] = average(everyone if i < 0 else by_key[keys[i]], hit)
    return apply_overrides(spec, X, out)


def fitted(case: str, task: str):
    """A small model of ``case`` and test rows with null and unseen keys and categories, and missing numbers."""
    X, y, ids, test = make_table(task, n=240)
    kw = dict(CASES[case])
    if callable(kw["grouping"]):
        kw["grouping"] = kw["grouping"]()
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    model = cls(learner_params={**FAST["lightgbm"], "num_iterations": 6}, n_jobs=1, **kw).fit(X, y, ids=ids)
    rows = test.copy()
    rows.loc[0:4, "region"] = None
    rows.loc[5:9, "colour"] = "violet"  # a category no member saw
    rows.loc[10:14, "colour"] = None
    rows.loc[15:19, "b"] = np.nan
    return model, ids, rows


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("case", list(CASES))
def test_score_equals_per_member_encoding(case, task):
    model, ids, rows = fitted(case, task)
    ens = model.ensemble_
    for batch in (rows, rows.iloc[:1], rows.iloc[5:6], rows.iloc[::-1]):
        table = conform(batch, ens.schema)
        spec = ens.scoring_spec()
        assert np.array_equal(score(spec, table), reference(spec, table), equal_nan=True)
    model.forget_rows(ids[:30])  # members retrained, some vocabularies changed
    table = conform(rows, ens.schema)
    spec = model.ensemble_.scoring_spec()
    assert np.array_equal(score(spec, table), reference(spec, table), equal_nan=True)


def test_scoring_an_export_loads_neither_scikit_learn_nor_the_lightgbm_package(tmp_path):
    import subprocess
    import sys

    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", combine="route",
                                learner_params={**FAST["lightgbm"], "num_iterations": 6}, n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp_path / "bundle", format="bundle")
    test.to_parquet(tmp_path / "rows.parquet")
    np.save(tmp_path / "expected.npy", model.predict_proba(test))
    code = (
        "import sys, numpy as np, pyarrow.parquet as pq, clusterforget as cf\n"
        f"s = cf.Scorer({str(tmp_path / 'bundle')!r})\n"
        f"got = s.predict_proba(pq.read_table({str(tmp_path / 'rows.parquet')!r}))\n"
        f"assert np.array_equal(got, np.load({str(tmp_path / 'expected.npy')!r})), 'outputs differ'\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'lightgbm', 'scipy'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_public_names_resolve_lazily_and_stay_what_they_were():
    import clusterforget.plan  # noqa: F401 - a submodule named like a public function must not replace it
    import clusterforget.verify  # noqa: F401

    assert callable(cf.plan) and callable(cf.verify) and callable(cf.suspects)
    for name in cf.__all__:
        assert getattr(cf, name) is not None
        assert name in dir(cf)
    from sklearn.exceptions import NotFittedError

    assert issubclass(cf.NotFittedError, NotFittedError) and issubclass(cf.NotFittedError, cf.ClusterForgetError)
    assert cf.NotFittedError.__qualname__ == "NotFittedError"
    with pytest.raises(NotFittedError):
        cf.ForgetClassifier().predict(np.zeros((1, 2)))


def test_a_new_export_reuses_the_unchanged_members_and_still_verifies_the_changed_ones(tmp_path):
    from clusterforget.export.bundle import MANIFEST

    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", combine="route",
                                learner_params={**FAST["lightgbm"], "num_iterations": 6}, n_jobs=1).fit(X, y, ids=ids)
    path = tmp_path / "bundle"
    model.export(path, format="bundle")
    before = cf.Scorer(path)
    victim = ids[np.flatnonzero(X["region"].to_numpy() == "north")[0]]
    model.forget_rows([victim])  # retrains the north member only
    model.export(path, format="bundle")
    after = cf.Scorer(path, previous=before)
    fresh = cf.Scorer(path)
    assert np.array_equal(after.predict_proba(test), fresh.predict_proba(test))
    assert np.array_equal(after.predict_proba(test), model.predict_proba(test))
    same = {sm.name: sm.member is old.member for sm, old in zip(after.spec.members, before.spec.members)}
    assert sum(same.values()) == len(same) - 1
    # the changed member is read and verified as ever: a flipped byte in it is refused
    changed = next(e["file"] for e, sm in zip(after.manifest["members"], after.spec.members) if not same[sm.name])
    data = bytearray((path / changed).read_bytes())
    data[len(data) // 2] ^= 1
    (path / changed).write_bytes(bytes(data))
    with pytest.raises(cf.ChecksumError):
        cf.Scorer(path, previous=before)
    assert (path / MANIFEST).exists()


def test_each_members_matrix_is_its_own_encoding_bitwise():
    """The lookup from batch codes to a member's codes (vectorized, through the spec's union of vocabularies or
    not) gives ``encode``'s matrix exactly: values the member never saw, nulls, an empty vocabulary, a vocabulary
    out of order with a repeat, whole batch and a subset of its rows."""
    from clusterforget.data import CATEGORICAL, Schema
    from clusterforget.members import Member
    from clusterforget.scoring import Encoded, Vocabularies

    schema = Schema(names=("c", "x", "d"), kinds=(CATEGORICAL, "numeric", CATEGORICAL))
    X = pa.table({"c": ["b", None, "zz", "a", "b", "é"], "x": [1.5, None, 3.0, 4.0, 5.0, 6.0],
                  "d": [None, None, "q", "q", "r", "s"]})
    vocabs = ({"c": ["a", "b"], "d": ["q", "s"]}, {"c": [], "d": ["r"]}, {"c": ["a", "b", "zz", "é"], "d": []},
              {"c": ["b", "a", "b"], "d": ["s", "q"]})  # out of order, a repeat: codes are first positions
    members = [Member(None, vocab, 3) for vocab in vocabs]
    # through no index, an index of every member (the spec's), and an index of others than the one scored
    for index in (None, Vocabularies(schema, members), Vocabularies(schema, members[1:2])):
        enc = Encoded(X, schema, index)
        for member in members:
            want = encode(X, schema, member.vocab)
            assert np.array_equal(enc.matrix(member).view(np.uint64), want.view(np.uint64))  # NaN bits included
            rows = np.array([5, 1, 2])
            assert np.array_equal(enc.matrix(member, rows).view(np.uint64), want[rows].view(np.uint64))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("case", list(CASES))
def test_one_row_as_a_dict_or_a_frame_scores_bitwise_as_the_batch(case, task, tmp_path):
    from clusterforget.data import one_row

    model, _, rows = fitted(case, task)
    if task == "binary":
        model.relabel("a > 1.5 and colour == 'red'", label=1, mode="override")  # the rule reads a one-row table
    rows.loc[20, "a"] = -0.0
    model.export(tmp_path / "b", format="bundle")
    scorer = cf.Scorer(tmp_path / "b")
    raw = model.predict_proba(rows) if task != "regression" else model.predict(rows).reshape(-1, 1)
    labels = model.predict(rows)
    schema = model.ensemble_.schema
    for i in range(0, len(rows), 3):
        frame = rows.iloc[i:i + 1]
        mapping = dict(reversed(list(frame.iloc[0].to_dict().items())))  # a dict's key order does not matter
        assert one_row(frame, schema) is not None and one_row(mapping, schema) is not None
        for one in (frame, mapping):
            got = scorer.predict_proba(one) if task != "regression" else scorer.predict(one).reshape(-1, 1)
            assert np.array_equal(got, raw[i:i + 1]), (i, one)
            assert np.array_equal(scorer.predict(one), labels[i:i + 1])
    # the general path scores what the fast one declines, with the same outputs
    assert np.array_equal(scorer.predict(conform(rows.iloc[:1], schema)), labels[:1])


def test_one_row_takes_the_general_path_for_anything_not_plainly_valid():
    from clusterforget.data import one_row

    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params={**FAST["lightgbm"], "num_iterations": 4},
                                n_jobs=1).fit(X, y, ids=ids)
    schema = model.ensemble_.schema
    good = {"region": "north", "a": 1, "b": None, "colour": "red"}
    assert one_row(good, schema) == ["north", 1.0, pytest.approx(np.nan, nan_ok=True), "red"]
    assert one_row({**good, "a": True}, schema)[1] == 1.0
    for bad in ({**good, "a": "1"}, {**good, "a": float("inf")}, {**good, "colour": 3}, {**good, "x": 1},
                {k: v for k, v in good.items() if k != "a"}, {**good, "a": 1 << 70}):
        assert one_row(bad, schema) is None
    frame = pd.DataFrame([good])
    assert one_row(frame[["a", "region", "b", "colour"]], schema) is None  # another column order
    assert one_row(frame.astype({"colour": "category"}), schema) is None
    assert one_row(pd.concat([frame, frame]), schema) is None
    # and the general path gives its errors
    with pytest.raises(cf.SchemaError):
        model.predict({**good, "a": "1"})
    with pytest.raises(cf.InputError, match="infinite"):
        model.predict({**good, "a": float("inf")})
    with pytest.raises(cf.InputError, match="a dict is one row"):
        model.predict({**good, "a": [1, 2]})
    assert model.predict(good).tolist() == model.predict(frame).tolist()


@pytest.mark.parametrize("entry", ["clusterforget.estimators", "clusterforget.store"])
def test_a_backend_is_found_without_the_package_loading_its_layers(entry):
    """Importing the estimators or the store directly (not ``import clusterforget``): ``backend="dask"`` is found."""
    import os
    import subprocess
    import sys

    pytest.importorskip("distributed")
    code = (
        f"import sys, {entry}\n"
        "from clusterforget.estimators import ForgetClassifier\n"
        "assert 'clusterforget.backends' not in sys.modules\n"
        "executor = ForgetClassifier(backend='dask')._make_executor()\n"
        "assert type(executor).__name__ == 'DaskExecutor', type(executor)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-2000:]


def _swapped_once(tmp_path):
    """An export, its scorer, and the export after a one-row forget (one member changed), which swaps in
    bitwise; returns (path, the first scorer, learner params)."""
    X, y, ids, test = make_table("binary", n=240)
    params = {**FAST["lightgbm"], "num_iterations": 4}
    model = cf.ForgetClassifier(grouping="region", learner_params=params, n_jobs=1).fit(X, y, ids=ids)
    path = tmp_path / "bundle"
    model.export(path, format="bundle")
    before = cf.Scorer(path)
    model.forget_rows([ids[np.flatnonzero(X["region"].to_numpy() == "north")[0]]])
    model.export(path, format="bundle")
    assert np.array_equal(cf.Scorer(path, previous=before).predict_proba(test), model.predict_proba(test))
    return path, before, params


@pytest.mark.parametrize("plant", ["changed member", "reused file, other meta"])
def test_a_swap_checks_the_meta_of_every_member_it_did_not_check_before(plant, tmp_path):
    """A swap skips the meta checks only for a member whose files, meta and schema are the ones a check passed;
    a bad vocabulary in a changed member, or in an unchanged file under new meta, is refused."""
    from conftest import rewrite_export

    path, before, params = _swapped_once(tmp_path)
    changed = {e["file"] for e in json.loads((path / "manifest.json").read_text())["members"]
               if e["file"] not in before.manifest["files"]}

    def plant_vocab(doc):
        entry = next(e for e in doc["members"] if (e["file"] in changed) == (plant == "changed member"))
        column = next(iter(entry["meta"]["vocab"]))
        entry["meta"]["vocab"][column] = entry["meta"]["vocab"][column] + [7]

    rewrite_export(path, plant_vocab)
    with pytest.raises(cf.ExportError, match="vocab"):
        cf.Scorer(path, previous=before)


def test_a_swap_still_probes_the_members_it_did_not_reuse(tmp_path):
    """Reused members are not probed again, the new ones are: a changed member whose outputs do not match its
    class columns (a three-class model under a two-class member, checksums recomputed) is refused."""
    from conftest import rewrite_export

    path, before, params = _swapped_once(tmp_path)
    Xm, ym, idm, _ = make_table("multiclass", n=240)
    other = cf.ForgetClassifier(grouping="region", learner_params=params, n_jobs=1).fit(Xm, ym, ids=idm)
    three = next(sm.member for sm in other.ensemble_.scoring_spec().members if len(sm.member.classes) >= 3)
    changed = [e["file"] for e in json.loads((path / "manifest.json").read_text())["members"]
               if e["file"] not in before.manifest["files"]]
    assert len(changed) == 1

    def point(doc):
        for e in doc["members"]:
            if e["file"] == changed[0]:
                e["file"] = "members/three.txt"

    rewrite_export(path, point, {"members/three.txt": three.model_bytes()})
    with pytest.raises(cf.ExportError):
        cf.Scorer(path, previous=before)
