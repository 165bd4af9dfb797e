"""A learner is one module: a toy learner registered here, in the test only, is fitted, forgotten, stored, loaded,
verified and exported through the public API, the command line and the MLflow flavor exactly as the built-in ones,
with no other file knowing it (its library pinned, its install hint its own)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget import members


class CentroidMember(members.Member):
    """Nearest class centroid: P(class) proportional to exp(-squared distance); regression: the weighted mean."""

    learner = "centroid"
    rounds = 0  # no boosting rounds (reports list each member's)

    def __init__(self, classes, vocab, n_rows, centroids: np.ndarray):
        super().__init__(classes, vocab, n_rows)
        self.centroids = np.asarray(centroids, dtype=np.float64)

    def predict_encoded(self, M, schema, n_threads=1):
        from scipy.special import softmax  # the kind's library: its version is pinned wherever the model goes

        if self.classes is None:
            return np.full(len(M), float(self.centroids[0, 0]))
        X = np.clip(np.nan_to_num(M, nan=0.0), -1e100, 1e100)  # finite distances for any input (probe rows)
        d = ((X[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return softmax(-(d - d.min(axis=1, keepdims=True)), axis=1)

    def model_bytes(self) -> bytes:
        return json.dumps({"centroids": self.centroids.tolist()}).encode()  # floats round-trip as repr

    @classmethod
    def from_bytes(cls, meta, data):
        doc = json.loads(data)
        return cls(members.classes_of(meta), meta["vocab"], meta["n_rows"], np.asarray(doc["centroids"]))


class CentroidLearner(members.Learner):
    name = "centroid"
    # no early-stopping metric (``stopping_metrics`` empty): a held-out slice (``combine="auto"`` on keys) is
    # left out of training, with no rounds to choose

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None, valid=None, n_rows=None):
        n_rows = n_rows or len(y)
        if classes is None:
            return CentroidMember(None, vocab, n_rows, np.array([[np.average(y, weights=weight)]]))
        X = np.nan_to_num(X, nan=0.0)
        w = np.ones(len(y)) if weight is None else weight
        cents = np.array([np.average(X[y == k], axis=0, weights=w[y == k]) if w[y == k].sum() > 0
                          else np.zeros(X.shape[1]) for k in range(len(classes))])
        return CentroidMember(classes, vocab, n_rows, cents)


def centroid_kind(**kw):
    return members.LearnerKind(name="centroid", member=CentroidMember, learner=CentroidLearner, ext=".ctr",
                               libraries={"scipy": ("scipy",)}, **kw)


@pytest.fixture
def centroid():
    kind = members.register(centroid_kind())
    yield kind
    members.unregister("centroid")


def _data(task: str, n: int = 300, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["x", "y", "z"], size=n)})
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int).to_numpy() if task == "binary" else (X["a"] * 2.0 + X["b"]).to_numpy()
    return X, y, np.arange(10_000, 10_000 + n)


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("grouping", ["hash", "key-route"])
def test_a_learner_registered_in_a_test_is_exact_through_every_layer(centroid, tmp_path, task, grouping):
    X, y, ids = _data(task)
    cls = cf.ForgetClassifier if task == "binary" else cf.ForgetRegressor
    spec = {"hash": dict(grouping=cf.HashGroups(3)), "key-route": dict(grouping="c", combine="route")}[grouping]
    make = lambda: cls(learner="centroid", n_jobs=1, **spec)  # noqa: E731
    out = (lambda m, Z: m.predict_proba(Z)) if task == "binary" else (lambda m, Z: m.predict(Z))
    model = make().fit(X, y, ids=ids)
    model.save(tmp_path / "store")
    gone = ids[[0, 7, 42, 199]]
    report = model.forget_rows(gone)
    assert report.rows_removed == 4 and report.groups_retrained

    keep = ~np.isin(ids, gone)
    fresh = make().fit(X[keep], y[keep], ids=ids[keep])
    assert np.array_equal(out(model, X), out(fresh, X))  # bit for bit a fresh fit on the remaining rows
    loaded = cf.load(tmp_path / "store")
    assert np.array_equal(out(loaded, X), out(fresh, X))
    # its member files are the kind's own format and extension
    files = sorted(p.suffix for p in (tmp_path / "store" / "members").iterdir())
    assert files and set(files) == {".ctr"}

    result = cf.verify(tmp_path / "store", forgotten=list(gone), checks=("purge", "exact"), key=False)
    assert result.ok, result
    for exact in ("fast", "full"):
        assert cf.verify(loaded, forgotten=list(gone), checks=("exact",), exact=exact).ok
    # planted: a model that kept the rows does not pass
    kept = make().fit(X, y, ids=ids)
    assert not cf.verify(kept, forgotten=list(gone), checks=("purge", "exact")).ok

    # a bundle export scores as the model; the ONNX export refuses a learner without a converter by name
    loaded.export(tmp_path / "bundle", format="bundle")
    assert np.array_equal(out(cf.Scorer(tmp_path / "bundle"), X), out(loaded, X))
    with pytest.raises(cf.ExportError, match="CentroidMember, which the ONNX export does not know"):
        loaded.export(tmp_path / "model.onnx", format="onnx")


def test_an_unregistered_learner_is_refused_by_name(centroid):
    assert "centroid" in members.learner_names()
    members.unregister("centroid")
    X, y, ids = _data("binary", n=40)
    with pytest.raises(ValueError, match="learner"):
        cf.ForgetClassifier(learner="centroid").fit(X, y, ids=ids)


PLUGIN = """
from clusterforget import members
from test_learner_plugin import centroid_kind

members.register(centroid_kind())
"""


def test_a_plugin_learner_registered_by_module_path_passes_the_isolating_check(tmp_path, monkeypatch):
    """A learner registered at runtime from outside ``members/`` by its importable module path: the service's
    isolating child (a fresh interpreter, which imports learners by package) imports that module to parse its
    members, so its export is served; registered from a module the child cannot import, it is refused naming it."""
    from pathlib import Path

    from clusterforget.export.isolate import MemberChecker
    from clusterforget.serve import app as app_module

    (tmp_path / "cf_centroid_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cf_centroid_plugin", raising=False)  # imported by another test: import anew
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).parent}")
    try:
        assert members.register_module("cf_centroid_plugin") == ["centroid"]
        assert members.KINDS["centroid"].module_path == "cf_centroid_plugin"
        X, y, ids = _data("binary")
        model = cf.ForgetClassifier(learner="centroid", grouping=cf.HashGroups(3), n_jobs=1).fit(X, y, ids=ids)
        model.forget_rows(ids[:3])
        model.export(tmp_path / "bundle", format="bundle")
        checker = MemberChecker()
        try:
            served = app_module.load_export(tmp_path / "bundle", checker=checker)
            assert served is not None
            assert np.array_equal(cf.Scorer(tmp_path / "bundle").predict_proba(X), model.predict_proba(X))
            # the same kind, registered from a module no new interpreter can import: refused, naming the module
            members.register(centroid_kind(module="cf_no_such_plugin"))
            fresh = MemberChecker()
            try:
                with pytest.raises(cf.ExportError, match="cf_no_such_plugin.*cannot be imported"):
                    app_module.load_export(tmp_path / "bundle", checker=fresh)
            finally:
                fresh.close()
        finally:
            checker.close()
    finally:
        members.unregister("centroid")
    with pytest.raises(ValueError, match="dotted module path"):
        members.register_module("not a module")


def _requirements(path) -> dict[str, str]:
    lines = [line for line in (path / "requirements.txt").read_text().splitlines() if "==" in line]
    return dict(line.split("==", 1) for line in lines)


def test_a_third_learner_touches_no_file_but_its_module(tmp_path, monkeypatch, capsys):
    """The command line takes the plugin by name (``--learner-module`` imports it; a fresh process is told by
    ``CLUSTERFORGET_LEARNER_MODULES``) and its fit and forget are bitwise the library's fresh fit on the remaining
    rows; the MLflow flavor pins the kind's library, not LightGBM; a kind whose library is missing says what to
    install from its own kind; none of it needed a line outside this file."""
    import importlib.util
    import os
    import subprocess
    from importlib import metadata
    from pathlib import Path

    from clusterforget.cli.app import main

    (tmp_path / "cf_centroid_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cf_centroid_plugin", raising=False)  # imported by another test: import anew
    pythonpath = f"{tmp_path}:{Path(__file__).parent}"
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    X, y, ids = _data("binary")
    pd.DataFrame({**X, "y": y, "id": ids}).to_csv(tmp_path / "data.csv", index=False)
    gone = [int(i) for i in ids[[0, 7, 42, 199]]]
    store = tmp_path / "store"
    plugin = ["--learner-module", "cf_centroid_plugin"]
    try:
        assert main([*plugin, "fit", str(tmp_path / "data.csv"), "--target", "y", "--id-column", "id", "--hash", "3",
                     "--learner", "centroid", "--store", str(store), "--quiet"]) == 0
        assert members.KINDS["centroid"].module_path == "cf_centroid_plugin"
        assert main([*plugin, "forget", str(store), "--ids", *map(str, gone), "--yes"]) == 0
        keep = ~np.isin(ids, gone)
        fresh = cf.ForgetClassifier(learner="centroid", grouping=cf.HashGroups(3)).fit(X[keep], y[keep], ids=ids[keep])
        stored = cf.load(store)
        assert stored.get_params()["learner"] == "centroid"
        assert np.array_equal(stored.predict_proba(X), fresh.predict_proba(X))
        assert cf.verify(store, forgotten=gone, checks=("purge", "exact"), key=False).ok
        assert main([*plugin, "verify", str(store), "--ids", *map(str, gone), "--checks", "purge,exact"]) == 0
        manifest = json.loads((store / "manifest.json").read_text())
        assert manifest["environment"]["scipy"] == metadata.version("scipy")  # its library's version recorded

        # a fresh process knows the learner from the environment only, and scores the store as this one
        env = {**os.environ, "CLUSTERFORGET_LEARNER_MODULES": "cf_centroid_plugin",
               "PYTHONPATH": pythonpath, "OMP_WAIT_POLICY": "PASSIVE"}
        out = subprocess.run([sys.executable, "-m", "clusterforget", "predict", str(store), str(tmp_path / "data.csv"),
                              "--out", str(tmp_path / "p.parquet")], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        scored = pd.read_parquet(tmp_path / "p.parquet")
        assert np.array_equal(scored[["proba_0", "proba_1"]].to_numpy(), stored.predict_proba(X))

        # MLflow: the artifact's requirements pin the kind's library as installed, and no learner it does not use
        if importlib.util.find_spec("mlflow") is not None:
            import clusterforget.mlflow as cfm

            cfm.save_model(stored, tmp_path / "mlflow")
            reqs = _requirements(tmp_path / "mlflow")
            assert reqs["scipy"] == metadata.version("scipy") and reqs["clusterforget"] == cf.__version__
            assert "lightgbm" not in reqs and "xgboost" not in reqs and "xgboost-cpu" not in reqs
            assert np.array_equal(cfm.load_model(str(tmp_path / "mlflow")).predict_proba(X),
                                  stored.predict_proba(X))
    finally:
        members.unregister("centroid")

    # unregistered, the name is a usage error listing the registered ones
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "data.csv"), "--target", "y", "--learner", "centroid", "--store",
                 str(tmp_path / "no")]) == 2
    assert "'centroid' is not one of" in capsys.readouterr().err and not (tmp_path / "no").exists()
    with pytest.raises(cf.InputError, match="cf_no_such_module.*cannot be imported"):
        members.register_module("cf_no_such_module")

    # a kind whose library is not installed: the hint is the kind's own (its distribution), at fit and at load
    members.register(members.LearnerKind(name="absent", member=CentroidMember, learner=CentroidLearner,
                                         requires="cf_absent_lib", libraries={"cf_absent_lib": ("cf-absent-dist",)}))
    try:
        with pytest.raises(cf.InputError, match=r"learner='absent'.*pip install cf-absent-dist"):
            cf.ForgetClassifier(learner="absent").fit(X, y, ids=ids)
        meta = {"learner": "absent", "classes": [0, 1], "vocab": {}, "n_rows": 2}
        with pytest.raises(cf.InputError, match="pip install cf-absent-dist"):
            members.member_from_bytes(meta, b"{}")
    finally:
        members.unregister("absent")
