"""The MLflow flavor and the registry, against a real ``mlflow server`` (sqlite backend store, local artifacts).

The server is started on a loopback port as a subprocess for this module and stopped after it; the scoring
service is started as a process too, and every request goes over real HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf
from conftest import FAST, make_table, row_leaks

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.server")  # the full package (mlflow-skinny has no server)
httpx = pytest.importorskip("httpx")
import clusterforget.mlflow as cfm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real tracking server and registry: ``mlflow server`` with a sqlite store and a local artifact folder."""
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(url + "/health", proc, log)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = url  # the service subprocesses read it too
        mlflow.set_tracking_uri(url)
        yield url, tmp / "artifacts"
    finally:
        os.killpg(proc.pid, 15)  # its own session: the server and the workers it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        if "previous" in locals():
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


def fitted(task: str = "binary", n: int = 240, **kw):
    X, y, ids, test = make_table(task, n=n, str_ids=True)
    est = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    model = est(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1, **kw).fit(X, y, ids=ids)
    return model, X, ids, test


def leaks(root: Path, ids, X) -> list[str]:
    """Files under ``root`` holding a row id or a training row's float feature (``conftest.row_leaks``)."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and row_leaks(p.read_bytes(), ids, X["a"])]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_pyfunc_scores_bitwise_as_the_model(server, task, tmp_path):
    model, X, _, test = fitted(task)
    with mlflow.start_run():
        info = cfm.log_model(model, name="model", registered_model_name=f"flavor-{task}")
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    out = np.asarray(pyfunc.predict(test))
    if task == "regression":
        assert np.array_equal(out, model.predict(test))
    else:
        assert np.array_equal(out, model.predict_proba(test))  # probabilities by default
        assert np.array_equal(np.asarray(pyfunc.predict(test, params={"output": "labels"})), model.predict(test))
    scorer = cfm.load_model(f"models:/flavor-{task}/1")
    assert isinstance(scorer, cf.Scorer) and scorer.version == model.version_
    assert np.array_equal(scorer.predict(test), model.predict(test))
    # a local save of the flavor, with labels as its default output
    cfm.save_model(model, tmp_path / "local", predict_output="labels")
    assert np.array_equal(np.asarray(mlflow.pyfunc.load_model(str(tmp_path / "local")).predict(test)),
                          model.predict(test))


def test_logged_model_carries_versions_as_tags_and_no_rows(server, tmp_path):
    model, X, ids, _ = fitted()
    model.save(tmp_path / "store")
    model.forget_rows(ids[:5])
    client = mlflow.MlflowClient()
    with mlflow.start_run():
        info = cfm.log_model(model, name="model", registered_model_name="tagged")
    mv = client.get_model_version("tagged", info.registered_model_version)
    ledger = cf.read_ledger(tmp_path / "store")
    assert mv.tags[cfm.TAG_MODEL_VERSION] == str(model.version_)
    assert mv.tags[cfm.TAG_STORE_VERSION] == str(model._store.manifest["version"])
    assert mv.tags[cfm.TAG_LEDGER_HEAD] == model._store.manifest["ledger"]["tail"] and len(ledger) == 2
    assert client.get_logged_model(info.model_id).tags[cfm.TAG_MODEL_VERSION] == str(model.version_)
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    assert sorted(p.name for p in Path(local, "bundle").iterdir()) == ["manifest.json", "members"]
    assert leaks(Path(local), ids, X) == []


def test_publish_moves_the_alias_and_retires_earlier_versions(server, tmp_path):
    _, artifacts = server
    model, X, ids, test = fitted()
    first = cfm.publish(model, "retiring")
    assert (first.version, first.retired) == (1, [])
    model.forget_rows(ids[:10])
    second = cfm.publish(model, "retiring")
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias("retiring", "champion").version == str(second.version)
    model.forget_rows(ids[10:20])
    third = cfm.publish(model, "retiring", retire_previous=True)
    assert third.retired == [1, 2] and "[1, 2]" in str(third)
    scorer = cfm.load_model("models:/retiring@champion")
    assert scorer.version == model.version_ == third.model_version
    assert np.array_equal(scorer.predict_proba(test), model.predict_proba(test))
    for v in ("1", "2"):
        assert client.get_model_version("retiring", v).tags[cfm.TAG_RETIRED] == "true"
        with pytest.raises(Exception):
            cfm.load_model(f"models:/retiring/{v}")
    # the artifact folder: no training row, no forgotten id, anywhere (all three versions were trained on them)
    assert leaks(artifacts, ids, X) == []
    assert cfm.publish(model, "retiring", retire_previous=True).retired == [3]  # 1 and 2 are retired already


def test_the_service_follows_the_alias(server, tmp_path):
    """``clusterforget serve models:/name@alias`` as a process: a publish moves the alias, the service swaps."""
    from test_serve import rows

    model, X, ids, test = fitted()
    cfm.publish(model, "served")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clusterforget.serve", "models:/served@champion", "--port",
                                 str(port), "--poll", "0.5"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(url + "/health", proc, log, seconds=120)
        body = {"dataframe_records": rows(test)}
        first = httpx.post(url + "/invocations", json=body, timeout=30).json()
        assert first["model_version"] == model.version_
        assert np.array_equal(np.array(first["predictions"]), model.predict_proba(test))
        model.forget_rows(ids[:10])
        cfm.publish(model, "served", retire_previous=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            r = httpx.post(url + "/invocations", json=body, timeout=30).json()
            if r["model_version"] == model.version_:
                break
            time.sleep(0.1)
        assert r["model_version"] == model.version_
        assert np.array_equal(np.array(r["predictions"]), model.predict_proba(test))
        info = httpx.get(url + "/model").json()
        assert info["registry"] == {"uri": "models:/served@champion", "name": "served", "version": 2}
        assert httpx.get(url + "/v2/models/served").json()["versions"] == [str(model.version_)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_name_with_a_quote_is_searched_and_one_with_both_is_refused_before_logging(server):
    model, *_ = fitted()
    assert cfm.publish(model, "it's").retired == []
    assert cfm.publish(model, "it's", retire_previous=True).retired == [1]  # the search found version 1
    client = mlflow.MlflowClient()
    with pytest.raises(cf.InputError, match="both"):
        cfm.publish(model, "it's \"x\"")
    assert "it's \"x\"" not in [m.name for m in client.search_registered_models()]  # nothing was registered


def test_save_model_reads_the_columns_from_the_bundle_document(tmp_path, monkeypatch):
    """No Scorer is built to save (it parsed every member only to name the columns)."""
    model, X, *_ = fitted()

    def no_scorer(*args, **kwargs):
        raise AssertionError("save_model built a Scorer")

    monkeypatch.setattr(cfm, "Scorer", no_scorer)
    cfm.save_model(model, tmp_path / "m")
    saved = mlflow.models.Model.load(str(tmp_path / "m"))
    assert saved.signature.inputs.input_names() == list(X.columns)


def test_requirements_pin_the_libraries_of_the_learners_the_members_use(tmp_path):
    """requirements.txt pins what scoring the artifact imports, as installed here: a LightGBM model's lightgbm, an
    XGBoost model's XGBoost distribution (xgboost-cpu in dev) and not lightgbm, scikit-learn behind a
    preprocessor; always clusterforget, numpy and pyarrow (the learners' kinds say which: ``members.distributions``)."""
    from importlib import metadata

    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    def requirements(model, name):
        cfm.save_model(model, tmp_path / name)
        lines = (tmp_path / name / "requirements.txt").read_text().splitlines()
        pins = dict(line.split("==", 1) for line in lines if "==" in line)
        pins.pop("mlflow", None)  # MLflow's own line, which it adds
        return pins

    core = {"clusterforget": cf.__version__, "numpy": metadata.version("numpy"), "pyarrow": metadata.version("pyarrow")}
    assert requirements(fitted()[0], "lgb") == {**core, "lightgbm": metadata.version("lightgbm")}
    assert cfm.get_default_pip_requirements()[1] == f"lightgbm=={metadata.version('lightgbm')}"  # the default learner
    scaled = requirements(fitted(preprocessor=ColumnTransformer([("s", StandardScaler(), ["a", "b"])]))[0], "pre")
    assert scaled == {**core, "lightgbm": metadata.version("lightgbm"), "scikit-learn": metadata.version("scikit-learn")}
    pytest.importorskip("xgboost")
    X, y, ids, _ = make_table("binary", n=240, str_ids=True)
    xgb = cf.ForgetClassifier(grouping="region", learner="xgboost", learner_params=FAST["xgboost"], n_jobs=1)
    dist = next(d for d in ("xgboost-cpu", "xgboost") if d in {m.metadata["Name"] for m in metadata.distributions()})
    assert requirements(xgb.fit(X, y, ids=ids), "xgb") == {**core, dist: metadata.version(dist)}
