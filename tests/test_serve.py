"""The scoring service, started in a subprocess on a loopback port and called with a real HTTP client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from conftest import FAST, make_table

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``python -m clusterforget.serve EXPORT`` (with ``args``) in a subprocess on a loopback port."""

    def __init__(self, export: Path, tmp: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OMP_WAIT_POLICY": "PASSIVE"}
        env.pop("CLUSTERFORGET_TOKEN", None)
        self.logpath = tmp / f"service-{self.port}.log"
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clusterforget.serve", str(export), "--port", str(self.port), "--poll", "0.05",
             *args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(self.logpath.read_text())
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None and httpx.get(self.url + "/health", timeout=10).status_code == 200

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def rows(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if (isinstance(v, float) and np.isnan(v)) or v is None else v) for k, v in r.items()}
            for r in df.to_dict("records")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("served")
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.relabel("a > 1.0 and colour == 'red'", 1, mode="override")
    export = tmp_path / "bundle"
    model.export(export, format="bundle")
    service = Service(export, tmp_path)
    yield model, ids, test, export, service
    service.close()


def test_scores_equal_predict_proba_and_errors_name_the_column(served):
    model, _, test, _, service = served
    r = httpx.post(service.url + "/predict", json={"rows": rows(test)}, timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == model.version_
    assert np.array_equal(np.array(body["probabilities"]), model.predict_proba(test))  # JSON floats round-trip
    assert body["label"] == model.predict(test).tolist()
    info = httpx.get(service.url + "/model").json()
    assert info["model_version"] == model.version_ and info["export_format"] == "bundle"
    bad = rows(test.head(2))
    bad[0]["a"] = "not a number"
    r = httpx.post(service.url + "/predict", json={"rows": bad})
    assert r.status_code == 422 and "'a'" in r.json()["error"]
    r = httpx.post(service.url + "/predict", json={"rows": [{"region": "north"}]})
    assert r.status_code == 422 and "column 'a' is missing" in r.json()["error"]


def test_accepts_an_arrow_ipc_body(served):
    import pyarrow as pa

    model, _, test, _, service = served
    table = pa.Table.from_pandas(test.head(10), preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = httpx.post(service.url + "/predict", content=sink.getvalue().to_pybytes(),
                   headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert r.status_code == 200
    assert np.array_equal(np.array(r.json()["probabilities"]), model.predict_proba(test.head(10)))


def test_a_broken_export_is_refused_and_the_old_model_keeps_serving(served):
    model, _, test, export, service = served
    manifest = export / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["model_version"] = 999  # no longer matches the manifest's checksum
    tmp = export / "manifest.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, manifest)
    r = httpx.post(service.url + "/reload").json()
    assert r["swapped"] is False and "checksum" in r["refused"]["error"]
    body = httpx.post(service.url + "/predict", json={"rows": rows(test.head(5))}).json()
    assert body["version"] == model.version_


def test_forget_and_export_under_load_swaps_without_a_failure(served):
    model, ids, test, export, service = served
    body = {"rows": rows(test.head(20))}
    old_version = model.version_
    swapped_at: list[float] = []

    clients = threading.local()

    def call(i):
        if i == 150:  # mid-load: forget, re-export, tell the service
            model.forget_rows(ids[:40])
            model.export(export, format="bundle", notify=service.url)
            swapped_at.append(time.monotonic())
            return None
        if not hasattr(clients, "c"):
            clients.c = httpx.Client(timeout=60)
        start = time.monotonic()
        r = clients.c.post(service.url + "/predict", json=body)
        return start, r.status_code, r.json().get("version")

    with ThreadPoolExecutor(6) as pool:
        results = [r for r in pool.map(call, range(300)) if r is not None]
    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:3]
    assert {v for _, _, v in results} <= {old_version, model.version_} and old_version in {v for _, _, v in results}
    # a request sent after the swap never gets the old model
    assert all(v == model.version_ for start, _, v in results if start > swapped_at[0])
    r = httpx.post(service.url + "/predict", json=body).json()
    assert r["version"] == model.version_ != old_version
    assert np.array_equal(np.array(r["probabilities"]), model.predict_proba(test.head(20)))


def test_serves_an_onnx_export(tmp_path):
    pytest.importorskip("onnxruntime")
    X, y, ids, test = make_table("multiclass", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp_path / "m.onnx", format="onnx")
    service = Service(tmp_path / "m.onnx", tmp_path)
    try:
        body = httpx.post(service.url + "/predict", json={"rows": rows(test)}, timeout=30).json()
    finally:
        service.close()
    assert body["label"] == model.predict(test).tolist()
    assert np.abs(np.array(body["probabilities"]) - model.predict_proba(test)).max() <= 1e-15


def test_gives_reasons_with_explain(served):
    """``"explain": k`` in the body (``?explain=k`` with Arrow): each row's reasons, as ``cf.Scorer`` gives them."""
    import pyarrow as pa

    model, _, test, export, service = served
    batch = test.iloc[:20].reset_index(drop=True)
    scorer = cf.Scorer(export)
    r = httpx.post(service.url + "/predict", json={"rows": rows(batch), "explain": 3}, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["version"] == scorer.version and got["reasons"] == scorer.reasons(batch, top=3)
    frame = model.explain(batch, top=3)
    for i, entry in enumerate(got["reasons"]):
        lines = frame[frame["row"] == i]
        assert [x["feature"] for x in entry["reasons"]] == lines["feature"].tolist()
        assert [x["contribution"] for x in entry["reasons"]] == lines["contribution"].tolist()
    assert "reasons" not in httpx.post(service.url + "/predict", json={"rows": rows(batch)}, timeout=30).json()
    table = pa.Table.from_pandas(batch, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = httpx.post(service.url + "/predict?explain=2", content=sink.getvalue().to_pybytes(), timeout=30,
                   headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert r.status_code == 200 and r.json()["reasons"] == scorer.reasons(batch, top=2)
    for bad in (-1, 5, True, "four", 2.5, [3]):
        r = httpx.post(service.url + "/predict", json={"rows": rows(batch), "explain": bad}, timeout=30)
        assert r.status_code == 422 and "explain" in r.json()["error"]
    assert httpx.get(service.url + "/health", timeout=5).status_code == 200
