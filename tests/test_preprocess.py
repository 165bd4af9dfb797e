"""preprocessor=: refused steps, the fitted state as checked JSON (planted alterations), stores, bundles, ONNX.

Exactness through every change is in tests/test_contract.py (test_preprocessor_through_every_change).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import numpy as np
import pytest

import clusterforget as cf
from clusterforget import preprocess
from conftest import FAST, make_table

pytest.importorskip("pandas")
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler, TargetEncoder  # noqa: E402


def encoder():
    return ColumnTransformer([("te", TargetEncoder(), ["colour"]), ("scale", StandardScaler(), ["a", "b"])])


@pytest.fixture(scope="module")
def fitted():
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", combine="route", preprocessor=encoder(),
                                learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    return model, X, y, ids, test


def test_steps_that_hold_code_or_are_not_declared_are_refused_by_name():
    X, y, _, _ = make_table("binary", n=120)
    with pytest.raises(cf.InputError, match=r"preprocessor\['f'\] is a sklearn.preprocessing.*FunctionTransformer"):
        cf.ForgetClassifier(preprocessor=ColumnTransformer([("f", FunctionTransformer(np.log1p), ["a"])])).fit(X, y)
    from sklearn.decomposition import PCA

    with pytest.raises(cf.InputError, match=r"preprocessor is a sklearn.decomposition.*PCA.*Pipeline"):
        cf.ForgetClassifier(preprocessor=PCA()).fit(X[["a"]], y)
    with pytest.raises(cf.ParameterError, match="preprocessor"):
        cf.ForgetClassifier(preprocessor="scale").fit(X, y)


def test_target_encoder_folds_are_fixed_so_fresh_fits_agree(fitted):
    model, X, y, ids, test = fitted
    again = cf.ForgetClassifier(grouping="region", combine="route", preprocessor=encoder(),
                                learner_params=FAST["lightgbm"], n_jobs=1).fit(X.iloc[::-1], y[::-1], ids=ids[::-1])
    assert np.array_equal(model.predict_proba(test), again.predict_proba(test))
    docs = [g.member.meta().get("preprocessor") for g in model.ensemble_.groups.values()]
    assert [g.member.meta().get("preprocessor") for g in again.ensemble_.groups.values()] == docs
    assert model.get_params()["preprocessor"].transformers[0][1].cv == 5  # the user's spec is not changed


def test_store_round_trip_and_forget_after_load(fitted, tmp_path):
    model, X, y, ids, test = fitted
    model = copy.deepcopy(model)
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert np.array_equal(loaded.predict_proba(test), model.predict_proba(test))
    assert type(loaded.get_params()["preprocessor"]) is ColumnTransformer
    south = [g.member.vocab_key for g in loaded.ensemble_.groups.values() if g.key == ("north",)]
    gone = loaded.ensemble_.groups[next(k for k, g in loaded.ensemble_.groups.items() if g.key == ("south",))]
    report = loaded.forget_rows(gone.rows.column("__cf_id__").to_numpy()[:2])
    assert report.groups_retrained == ["south"]
    assert [g.member.vocab_key for g in loaded.ensemble_.groups.values() if g.key == ("north",)] == south
    assert np.array_equal(cf.load(tmp_path / "s").predict_proba(test), loaded.predict_proba(test))


def _resign(doc):
    body = {k: v for k, v in doc.items() if k != "sha256"}
    doc["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return doc


PLANTS = {
    "edited value": (lambda d: d["object"]["state"].__setitem__("sparse_threshold", {"$float": "0x1p-1"}), False,
                     "does not match its sha256"),
    "unknown class": (lambda d: d["object"].__setitem__("$estimator", "Pipeline"), True, "not one of the supported"),
    "function": (lambda d: d["object"]["state"]["transformers_"][0]["$tuple"][1].update(
        {"$estimator": "FunctionTransformer", "state": {"func": {"$estimator": "os.system", "state": {}}}}), True,
        "names the class 'os.system'"),
    "short array": (lambda d: _first(d["object"], "$array").__setitem__("shape", [99]), True, "has .* bytes"),
    "huge shape": (lambda d: _first(d["object"], "$array").__setitem__("shape", [10**7, 10**7]), True,
                   "more than 50000000 array elements"),
    "other version": (lambda d: d.__setitem__("sklearn", "0.1"), True, "install scikit-learn==0.1"),
    "shadowed method": (lambda d: d["object"]["state"].__setitem__("transform", None), True,
                        r"sets \['transform'\] on a ColumnTransformer"),
    "raw object": (lambda d: d["object"]["state"].__setitem__("n_jobs", {"__reduce__": "os.system"}), True,
                   "unknown encoding"),
}


def _first(node, tag):
    if isinstance(node, dict):
        if tag in node:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _first(child, tag)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("plant", list(PLANTS))
def test_altered_documents_are_refused_before_anything_is_built(fitted, plant):
    model, *_ = fitted
    member = next(g.member for g in model.ensemble_.groups.values() if "preprocessor" in g.member.meta())
    doc = json.loads(json.dumps(member.meta()["preprocessor"]))
    edit, resign, message = PLANTS[plant]
    edit(doc)
    if resign:
        _resign(doc)
    with pytest.raises(cf.ChecksumError, match=message):
        preprocess.fitted_from_document(doc, model.ensemble_.schema)


def test_a_store_with_an_altered_preprocessor_does_not_load(fitted, tmp_path):
    model, *_ = fitted
    model = copy.deepcopy(model)
    model.save(tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    text = path.read_text()
    assert '"sparse_threshold"' in text
    doc = json.loads(text)
    # an edit the manifest's own checksum would catch first: it is what a loader must not get past
    path.write_text(text.replace('"$estimator":"StandardScaler"', '"$estimator":"PCA"', 1).replace(
        '"$estimator": "StandardScaler"', '"$estimator": "PCA"', 1))
    with pytest.raises(cf.StoreError):
        cf.load(tmp_path / "s")
    del doc


def test_bundle_scores_with_the_preprocessor_and_onnx_names_the_steps(fitted, tmp_path):
    model, X, y, ids, test = fitted
    model.export(tmp_path / "b", format="bundle")
    scorer = cf.Scorer(tmp_path / "b")
    assert np.array_equal(scorer.predict_proba(test), model.predict_proba(test))
    assert np.array_equal(scorer.predict(test), model.predict(test))
    isolated = cf.Scorer(tmp_path / "b", isolate=True)  # native files parsed in a child, on the transformed width
    assert np.array_equal(isolated.predict_proba(test), model.predict_proba(test))
    for i in (0, 12, 30):  # one row: the scorer's one-row path transforms it as the batch path does
        assert np.array_equal(scorer.predict_proba(test.iloc[i:i + 1]), model.predict_proba(test.iloc[i:i + 1]))
    pytest.importorskip("onnx")
    with pytest.raises(cf.ExportError, match=r"no converter for the preprocessor step\(s\) preprocessor "
                                             r"\(ColumnTransformer\), preprocessor\['te'\] \(TargetEncoder\)"):
        model.export(tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(cf.ExportError, match="preprocessor's output features"):
        model.predict(test, pred_contrib=True)
    assert model.predict(test, raw_score=True).shape == (len(test),)


def test_a_fitted_preprocessor_parameter_leaves_no_row_in_the_store_or_a_pickle(tmp_path):
    """preprocessor= given already fitted (on every row): the model fits its own clones, and what it persists of
    the parameter is the parameter's settings, never the fitted attributes that hold row values."""
    import pickle

    from sklearn.preprocessing import MinMaxScaler

    X, y, ids, _ = make_table("binary", n=200)
    X = X[["a", "b"]].fillna(0.0)
    X.loc[7, "b"] = 98765.4321  # the largest value of its column: MinMaxScaler's data_max_
    fitted = MinMaxScaler().fit(X)
    m = cf.ForgetClassifier(grouping=cf.HashGroups(2), preprocessor=fitted, learner_params=FAST["lightgbm"],
                            n_jobs=1).fit(X, y, ids=ids)
    m.save(tmp_path / "s")
    m.forget_rows([ids[7]])
    value = 98765.4321

    def holds(data: bytes) -> bool:
        if np.float64(value).tobytes() in data or value.hex().encode() in data:
            return True
        try:
            doc = json.loads(data)
        except ValueError:
            return False
        found = []

        def walk(v):
            if isinstance(v, dict):
                if v.get("$array") in ("float64", "float32"):
                    found.append(np.any(np.frombuffer(base64.b64decode(v["data"]), dtype=v["$array"]) == value))
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
        walk(doc)
        return any(found)

    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert not [p.name for p in files if holds(p.read_bytes())]
    assert not holds(pickle.dumps(m))
    assert hasattr(m.preprocessor, "data_max_")  # the user's object is left as given
    loaded = cf.load(tmp_path / "s")
    assert not hasattr(loaded.preprocessor, "data_max_")


def test_verify_exact_catches_a_member_keeping_its_preprocessor_from_before_the_forget():
    """Plant: the forgotten row's group retrained its model, but its SimpleImputer keeps the median fitted before
    the forget (the forgotten row's value). No row has a missing value, so the model file and every prediction
    are a fresh fit's: only the member's fitted state shows it, and the exact check must compare it."""
    from sklearn.impute import SimpleImputer

    from clusterforget.members.base import PreprocessedMember

    X, y, ids, _ = make_table("binary", n=200)
    X = X[["a", "b"]].fillna(0.0)
    m = cf.ForgetClassifier(grouping=cf.HashGroups(2), preprocessor=SimpleImputer(strategy="median"),
                            learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    before = {gid: g.member for gid, g in m.ensemble_.groups.items()}
    m.forget_rows(ids[:5])
    assert cf.verify(m, forgotten=ids[:5], checks=("exact",)).ok
    ens = m.ensemble_
    gid = next(gid for gid, g in ens.groups.items() if g.member is not before[gid])
    g = ens.groups[gid]
    stale = PreprocessedMember(g.member.inner, before[gid].preprocessor)
    assert stale.preprocessor.digest != g.member.preprocessor.digest
    m.ensemble_ = ens.evolve(groups={**ens.groups, gid: g.with_member(stale)})
    res = cf.verify(m, forgotten=ids[:5], checks=("exact",))
    assert not res.ok and g.name in res.checks["exact"].details["members_differ"]
    res = cf.verify(m, forgotten=ids[:5], checks=("exact",), exact="full")
    assert not res.ok and g.name in res.checks["exact"].details["members_differ"]


@pytest.mark.parametrize("edit", ["transformers not a list", "imputer without its parameters"])
def test_a_document_of_the_wrong_shape_is_a_checksum_error_saying_what_to_do(fitted, edit):
    """A re-signed document whose declared classes hold attributes of the wrong type or none: refused as an
    altered document (ChecksumError naming what to do), never a TypeError / AttributeError from the checks."""
    model, *_ = fitted
    member = next(g.member for g in model.ensemble_.groups.values() if "preprocessor" in g.member.meta())
    doc = json.loads(json.dumps(member.meta()["preprocessor"]))
    if edit == "transformers not a list":
        doc["object"]["state"]["transformers"] = {"$int": 5}
    else:
        doc["object"] = {"$estimator": "SimpleImputer", "state": {}}
    _resign(doc)
    with pytest.raises(cf.ChecksumError, match="restore it from a copy you trust"):
        preprocess.fitted_from_document(doc, model.ensemble_.schema)
