"""Exports score as the model does: the bundle bitwise, the ONNX graph within the issue's tolerances.

The matrix is learner x task x grouping (key-route, kmeans-route, hash), each with an output override, before
and after a forget; the rows scored include an unseen key, numeric nulls, null and unseen categories.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

import clusterforget as cf
from clusterforget._compat import available
from conftest import FAST, make_table

GROUPINGS = {
    "key": dict(grouping="region", combine="route"),
    "kmeans": dict(grouping=lambda: cf.KMeansGroups(3, features=["a", "b"], sample_size=200), combine="route"),
    "hash": dict(grouping=lambda: cf.HashGroups(3), combine="average"),
}
LEARNERS = ["lightgbm", "xgboost"]
TASKS = ["binary", "multiclass", "regression"]
MATRIX = [(lr, t, g) for lr in LEARNERS for t in TASKS for g in GROUPINGS]
IDS = [f"{lr}-{t}-{g}" for lr, t, g in MATRIX]
OVERRIDE = {"binary": 1, "multiclass": "top", "regression": 42.5}


def altered(test):
    """Rows no training row looks like: unseen and null keys and categories, numeric nulls."""
    t = test.copy()
    t.loc[15:19, "region"] = None
    t.loc[20:24, "colour"] = "violet"
    t.loc[25:29, "colour"] = None
    t.loc[30:34, "b"] = np.nan
    t.loc[35:39, ["a", "b"]] = np.nan
    return t


def build(learner, task, grouping):
    spec = dict(GROUPINGS[grouping])
    if callable(spec["grouping"]):
        spec["grouping"] = spec["grouping"]()
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    params = {"lightgbm": {**FAST["lightgbm"], "num_iterations": 6}, "xgboost": {**FAST["xgboost"], "n_estimators": 6}}
    return cls(learner=learner, learner_params=params[learner], n_jobs=1, **spec)


@pytest.fixture(params=MATRIX, ids=IDS)
def case(request):
    learner, task, grouping = request.param
    X, y, ids, test = make_table(task, n=240)
    model = build(learner, task, grouping).fit(X, y, ids=ids)
    model.relabel("a > 1.0 and colour == 'red'", OVERRIDE[task], mode="override")
    return model, X, ids, altered(test), task


def outputs(model, X):
    return (model.predict_proba(X) if hasattr(model, "predict_proba") else None), model.predict(X)


def test_bundle_is_bitwise_before_and_after_forget(case, tmp_path):
    model, X, ids, test, task = case
    for step in range(2):
        path = tmp_path / "bundle"
        info = model.export(path, format="bundle")
        scorer = cf.Scorer(path)
        assert info["model_version"] == model.version_ == scorer.version
        for data in (test, X.iloc[::4]):
            proba, label = outputs(model, data)
            if proba is not None:
                assert np.array_equal(scorer.predict_proba(data), proba)
            assert np.array_equal(scorer.predict(data), label)
        if step == 0:
            model.forget_rows(ids[::9])
    # a re-export keeps only the members the new manifest references
    doc = json.loads((path / "manifest.json").read_text())
    assert sorted(p.name for p in (path / "members").iterdir()) == sorted(f.split("/")[1] for f in doc["files"])


def test_bundle_refuses_a_tampered_file(tmp_path):
    X, y, ids, _ = make_table("binary", n=120)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"]).fit(X, y, ids=ids)
    model.export(tmp_path, format="bundle")
    member = next((tmp_path / "members").iterdir())
    member.write_bytes(member.read_bytes() + b" ")
    with pytest.raises(cf.ChecksumError, match="does not match its sha256"):
        cf.Scorer(tmp_path)


def test_bundle_records_the_store_version_and_ledger_head(tmp_path):
    X, y, ids, _ = make_table("binary", n=120)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"]).fit(X, y, ids=ids)
    model.save(tmp_path / "store")
    model.forget_rows(ids[:3])
    info = cf.export.export_store(tmp_path / "store", "bundle", tmp_path / "bundle")
    ledger = cf.read_ledger(tmp_path / "store")
    assert info["store"]["version"] == ledger[-1]["version"]
    assert cf.Scorer(tmp_path / "bundle").manifest["store"]["ledger_lines"] == len(ledger)


def test_unknown_format_is_refused(tmp_path):
    X, y, ids, _ = make_table("binary", n=120)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"]).fit(X, y, ids=ids)
    with pytest.raises(cf.ExportError, match="'pmml' is not an export format"):
        model.export(tmp_path / "x", format="pmml")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- ONNX
TOL = {"lightgbm": 1e-15, "xgboost": 1e-8}


def test_onnx_parity_before_and_after_forget(case, tmp_path):
    pytest.importorskip("onnxruntime")
    from clusterforget.export.onnx import feeds, metadata, session

    model, X, ids, test, task = case
    learner = model.learner
    for step in range(2):
        path = tmp_path / "model.onnx"
        model.export(path, format="onnx")
        schema = model.ensemble_.schema
        for threads in (1, 2):
            sess = session(path, n_threads=threads)
            assert metadata(sess)["model_version"] == model.version_
            for data in (test, X.iloc[::4]):
                got = sess.run(None, feeds(data, schema))
                if task == "regression":
                    want = model.predict(data)
                    if threads == 1:  # every sum in the learner's order: bitwise
                        assert np.array_equal(got[0], want)
                    else:
                        assert np.allclose(got[0], want, rtol=1e-6, atol=1e-6)
                    continue
                want = model.predict_proba(data)
                assert np.array_equal(got[0].astype(str), model.predict(data).astype(str))
                if threads == 1 or learner == "lightgbm":
                    assert np.abs(got[1] - want).max() <= TOL[learner]
                else:  # two threads: float32 partial sums in another order (see export.onnx.session)
                    assert np.abs(got[1] - want).max() <= 1e-6
        if step == 0:
            model.forget_rows(ids[::9])


@pytest.mark.parametrize("learner,shards", [("lightgbm", None), ("xgboost", None), ("lightgbm", 40)])
def test_a_routed_onnx_graph_runs_each_member_on_its_own_rows(learner, shards, tmp_path):
    """Route mode: one TreeEnsemble per member, fed only the rows gathered for it; batches in which most members
    get no row (one row, one key) or every member gets every row (unseen keys only) score as the model does, and
    so do the shards of a key (``max_group_rows``: a row goes through every shard of its key)."""
    pytest.importorskip("onnxruntime")
    import onnx

    from clusterforget.export.onnx import feeds, session

    X, y, ids, test = make_table("multiclass", n=240)
    model = build(learner, "multiclass", "key").set_params(max_group_rows=shards).fit(X, y, ids=ids)
    if shards:
        assert max(m.n_shards for m in model.ensemble_.scoring_spec().members) > 1
    model.export(tmp_path / "m.onnx", format="onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    made = {o: n for n in graph.node for o in n.output}
    ensembles = [n for n in graph.node if n.op_type == "TreeEnsemble"]
    trees = [m for m in model.ensemble_.scoring_spec().members if type(m.member).__name__ != "ConstantMember"]
    assert len(ensembles) == len(trees) > 1
    for node in ensembles:  # its rows, gathered (after the float cast of the whole batch for XGBoost)
        assert made[node.input[0]].op_type == "Gather"
    sess = session(tmp_path / "m.onnx", n_threads=1)
    unseen = test.head(6).assign(region="nowhere")
    for data in (test.head(1), test[test["region"] == test["region"].iloc[0]], unseen, altered(test)):
        got = sess.run(None, feeds(data, model.ensemble_.schema))
        assert np.abs(got[1] - model.predict_proba(data)).max() <= TOL[learner]
        assert np.array_equal(got[0].astype(str), model.predict(data).astype(str))


def test_onnx_refuses_what_it_cannot_express(tmp_path):
    pytest.importorskip("onnx")
    X, y, ids, _ = make_table("binary", n=160)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params={**FAST["lightgbm"], "zero_as_missing": True})
    model.fit(X, y, ids=ids)
    with pytest.raises(cf.ExportError, match="zero as missing"):
        model.export(tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_session_refuses_an_onnxruntime_below_the_floor(monkeypatch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from clusterforget.export.onnx import session

    monkeypatch.setattr(ort, "__version__", "1.23.2")  # loads TreeEnsemble 5 and scores it wrong (measured)
    with pytest.raises(cf.ExportError, match="onnxruntime 1.23.2 .* install onnxruntime>=1.24"):
        session(tmp_path / "m.onnx")


def test_bundle_export_never_writes_into_a_foreign_directory(tmp_path):
    X, y, ids, _ = make_table("binary", n=120)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"]).fit(X, y, ids=ids)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(cf.ExportError, match="non-empty directory without a bundle manifest"):
        model.export(tmp_path, format="bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------- compiled
@pytest.mark.parametrize("learner,task", [("lightgbm", "multiclass"), ("xgboost", "binary")])
def test_compiled_bundle_scores_as_the_model(learner, task, tmp_path, monkeypatch):
    pytest.importorskip("tl2cgen")
    pytest.importorskip("treelite")
    from clusterforget.export import compiled as compiled_module

    if shutil.which("gcc") is None:
        pytest.skip("format='compiled' needs gcc")
    X, y, ids, test = make_table(task, n=240)
    model = build(learner, task, "key").fit(X, y, ids=ids)
    model.relabel("a > 1.0 and colour == 'red'", OVERRIDE[task], mode="override")
    test = altered(test)
    path = tmp_path / "compiled"
    model.export(path, format="compiled")
    before = {p.name: p.stat().st_mtime_ns for p in (path / "libs").iterdir()}
    model.forget_rows(ids[:5])  # touches some groups only
    model.export(path, format="compiled")
    after = {p.name: p.stat().st_mtime_ns for p in (path / "libs").iterdir()}
    kept = set(before) & set(after)
    assert kept and all(before[n] == after[n] for n in kept)  # unchanged members were not compiled again
    with pytest.raises(cf.ExportError, match="runs its code"):  # unauthenticated: no library is loaded
        cf.Scorer(path)
    assert type(cf.Scorer(path, trust_code=True).spec.members[0].member).__name__ in ("CompiledMember",
                                                                                      "ConstantMember")
    key = b"k" * 32
    model.export(path, format="compiled", key=key)
    scorer = cf.Scorer(path, key=key)
    assert all(type(m.member).__name__ in ("CompiledMember", "ConstantMember") for m in scorer.spec.members)
    got, want = scorer.predict_proba(test), model.predict_proba(test)
    if learner == "lightgbm":
        assert np.array_equal(got, want)
    else:  # treelite sums XGBoost's float32 leaves in its own order
        assert np.abs(got - want).max() <= 1e-6
    assert np.array_equal(scorer.predict(test), model.predict(test))
    # n_threads splits each member's rows among threads (here every batch of more than one row): the same outputs
    monkeypatch.setattr(compiled_module, "MIN_ROWS_PER_THREAD", 1)
    assert np.array_equal(cf.Scorer(path, key=key, n_threads=3).predict_proba(test), got)
    # a library compiled before the batch entry (tl2cgen's own build) still scores, through tl2cgen's runtime
    import tl2cgen

    from clusterforget.members import KINDS

    spec = model.ensemble_.scoring_spec()
    at = next(i for i, sm in enumerate(spec.members) if compiled_module._compilable(sm.member))
    native, new = spec.members[at].member, scorer.spec.members[at].member  # the same group (canonical order)
    lib = tmp_path / "old.so"
    tl2cgen.export_lib(KINDS[native.learner].treelite(native), toolchain="gcc", libpath=str(lib),
                       params={"parallel_comp": 1, "quantize": 1}, nthread=1)
    old = compiled_module.CompiledMember(native, lib.read_bytes())
    assert old.lib is None and new.lib is not None
    M = np.random.default_rng(3).normal(size=(50, len(spec.schema.names)))
    M[::4, 0] = np.nan
    assert np.array_equal(old.predict_encoded(M, spec.schema), new.predict_encoded(M, spec.schema, n_threads=2))


def test_compiled_export_without_gcc_fails_naming_the_member_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("tl2cgen")
    pytest.importorskip("treelite")
    from clusterforget.export import compiled as compiled_module

    X, y, ids, _ = make_table("binary", n=120)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"]).fit(X, y, ids=ids)
    monkeypatch.setattr(compiled_module.shutil, "which", lambda name: None)
    with pytest.raises(cf.ExportError, match=r"member '.+'.*gcc was not found on PATH.*is gcc installed"):
        model.export(tmp_path / "c", format="compiled")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


@pytest.mark.parametrize("learner,task", [("lightgbm", "binary"), ("xgboost", "multiclass"), ("lightgbm", "regression")])
def test_exports_with_sample_weights_score_as_the_model(learner, task, tmp_path):
    """Sample weights shape the members and the group weights (sums of the rows' weights): bundle, compiled and ONNX
    score as the model in process, before and after a reweight (a weight-0 row included)."""
    X, y, ids, test = make_table(task, n=240)
    w = np.random.default_rng(5).uniform(0.0, 3.0, len(ids)).round(2)
    model = build(learner, task, "hash").fit(X, y, ids=ids, sample_weight=w)
    test = altered(test)
    pytest.importorskip("onnxruntime")
    from clusterforget.export.onnx import feeds, session

    # one case compiles (gcc takes seconds per member); test_compiled_bundle_scores_as_the_model covers XGBoost
    compiled = task == "binary" and shutil.which("gcc") is not None and available("tl2cgen") and available("treelite")

    for step in range(2):
        want_p, want = outputs(model, test)
        model.export(tmp_path / "b", format="bundle")
        scorer = cf.Scorer(tmp_path / "b")
        assert np.array_equal(scorer.predict(test), want)
        if want_p is not None:
            assert np.array_equal(scorer.predict_proba(test), want_p)
        model.export(tmp_path / "m.onnx", format="onnx")
        got = session(tmp_path / "m.onnx", n_threads=1).run(None, feeds(test, model.ensemble_.schema))
        if want_p is None:
            assert np.array_equal(got[0], want)
        else:
            assert np.array_equal(got[0].astype(str), want.astype(str))
            assert np.abs(got[1] - want_p).max() <= TOL[learner]
        if compiled:
            model.export(tmp_path / "c", format="compiled", key=b"k" * 32)
            got_p = cf.Scorer(tmp_path / "c", key=b"k" * 32).predict_proba(test)
            assert np.array_equal(got_p, want_p)
        if step == 0:
            model.reweight(ids[:8], [0.0, 4.0, 1.0, 2.5, 0.0, 0.5, 3.0, 1.0])


# ---------------------------------------------------------------------------------------------- early stopping
@pytest.mark.parametrize("learner", LEARNERS)
def test_exports_score_with_the_rounds_early_stopping_chose(learner, tmp_path):
    """Members that stopped early (combine chosen on the held-out slices): the bundle, ONNX and compiled exports
    hold and score the chosen rounds only, as the model does."""
    X, y, ids, test = make_table("binary", n=400)
    params = {"lightgbm": {"num_iterations": 120, "learning_rate": 0.5, "num_leaves": 7},
              "xgboost": {"n_estimators": 120, "learning_rate": 0.5, "max_depth": 3}}[learner]
    model = cf.ForgetClassifier(grouping="region", learner=learner, learner_params=params, early_stopping=True,
                                n_iter_no_change=3, n_jobs=1).fit(X, y, ids=ids)
    assert any(0 < g["rounds"] < 120 for g in model.groups_)
    test = altered(test)
    want = model.predict_proba(test)
    model.export(tmp_path / "bundle", format="bundle")
    scorer = cf.Scorer(tmp_path / "bundle")
    assert np.array_equal(scorer.predict_proba(test), want)
    assert sorted(m.member.rounds for m in scorer.spec.members) == sorted(g["rounds"] for g in model.groups_)
    if importlib.util.find_spec("onnxruntime") is not None:
        from clusterforget.export.onnx import feeds, session

        model.export(tmp_path / "model.onnx", format="onnx")
        got = session(tmp_path / "model.onnx", n_threads=1).run(None, feeds(test, model.ensemble_.schema))
        assert np.abs(got[1] - want).max() <= TOL[learner]
    if learner == "lightgbm" and shutil.which("gcc") is not None and importlib.util.find_spec("tl2cgen") is not None:
        key = b"k" * 32
        model.export(tmp_path / "compiled", format="compiled", key=key)
        assert np.array_equal(cf.Scorer(tmp_path / "compiled", key=key).predict_proba(test), want)
