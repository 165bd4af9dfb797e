"""The standard protocols and /metrics of the service, started as a process and called over real HTTP."""

from __future__ import annotations

import numpy as np
import pytest

import clusterforget as cf
from conftest import FAST, make_table
from test_serve import Service, rows

httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocols")
    X, y, ids, test = make_table("multiclass", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp / "adult", format="bundle")
    service = Service(tmp / "adult", tmp)
    yield model, test, service
    service.close()


def test_invocations_takes_every_mlflow_input_and_csv(served):
    model, test, service = served
    records = rows(test)
    names = list(test.columns)
    want = model.predict_proba(test)
    bodies = [
        {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in records]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {n: [r[n] for r in records] for n in names}},
        {"inputs": [[r[n] for n in names] for r in records]},
    ]
    for body in bodies:
        r = httpx.post(service.url + "/invocations", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert np.array_equal(np.array(r.json()["predictions"]), want)  # bitwise through JSON
        assert r.headers["x-model-version"] == str(model.version_) == str(r.json()["model_version"])
    r = httpx.post(service.url + "/invocations", json={**bodies[1], "params": {"output": "labels"}})
    assert r.json()["predictions"] == model.predict(test).tolist()
    csv = test.to_csv(index=False)
    r = httpx.post(service.url + "/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert np.array_equal(np.array(r.json()["predictions"]), want)
    bad = httpx.post(service.url + "/invocations", json={"dataframe_records": records, "instances": records})
    assert bad.status_code == 400 and "exactly one" in bad.json()["error"]
    bad = httpx.post(service.url + "/invocations", json={"dataframe_records": [{**records[0], "a": "x"}]})
    assert bad.status_code == 422 and "'a'" in bad.json()["error"]  # as /predict answers a bad column


def test_kserve_v2_infer_with_one_input_per_column(served):
    model, test, service = served
    name = "adult"
    assert httpx.get(service.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(service.url + "/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(service.url + f"/v2/models/{name}").json()
    assert [i["name"] for i in meta["inputs"]] == list(test.columns) and meta["versions"] == [str(model.version_)]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["region"] == "BYTES"
    records = rows(test)
    inputs = [{"name": n, "shape": [len(records)], "datatype": "BYTES" if n in ("region", "colour") else "FP64",
               "data": [r[n] for r in records]} for n in test.columns]
    r = httpx.post(service.url + f"/v2/models/{name}/infer", json={"id": "req-1", "inputs": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "req-1" and r.json()["model_version"] == str(model.version_)
    proba = model.predict_proba(test)
    assert out["probabilities"]["shape"] == list(proba.shape)
    assert np.array_equal(np.array(out["probabilities"]["data"]).reshape(proba.shape), proba)
    assert out["label"]["data"] == model.predict(test).tolist() and out["label"]["datatype"] == "BYTES"
    assert httpx.post(service.url + "/v2/models/other/infer", json={"inputs": inputs}).status_code == 404
    short = [{**inputs[0], "shape": [3]}] + inputs[1:]
    r = httpx.post(service.url + f"/v2/models/{name}/infer", json={"inputs": short})
    assert r.status_code == 400 and "shape" in r.json()["error"]


def test_openapi_has_the_request_schemas_and_metrics_count(served):
    model, test, service = served
    spec = httpx.get(service.url + "/openapi.json").json()
    assert {"InvocationsRequest", "InferRequest", "InferInput"} <= set(spec["components"]["schemas"])
    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InvocationsRequest"}
    httpx.post(service.url + "/predict", json={"rows": rows(test.head(7))})
    httpx.post(service.url + "/predict", json={"rows": [{"nope": 1}]})
    text = httpx.get(service.url + "/metrics").text
    metric = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert metric['clusterforget_requests_total{code="200",endpoint="/predict",method="POST"}'] >= 1
    assert metric['clusterforget_errors_total{code="422",endpoint="/predict",method="POST"}'] >= 1
    assert metric['clusterforget_rows_scored_total{endpoint="/predict"}'] >= 7
    assert metric["clusterforget_model_version"] == model.version_
    assert metric["clusterforget_model_exported_at_seconds"] > 1.7e9
    assert "clusterforget_reloads_total" in metric and "clusterforget_refusals_total" in metric
    assert any(k.startswith("clusterforget_request_seconds_bucket") for k in metric)


def test_a_v2_shape_is_checked_before_it_is_multiplied(served):
    _, test, service = served
    # a long shape list of large dims cost seconds of CPU in big-integer products before the shape was checked
    inputs = [{"name": "x0", "shape": [10 ** 18] * 100_000, "datatype": "FP64", "data": [1.0]}]
    r = httpx.post(service.url + "/v2/models/adult/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 400 and "shape" in r.json()["error"] and len(r.json()["error"]) <= 300
    assert httpx.get(service.url + "/v2/health/live", timeout=5).json() == {"live": True}


@pytest.mark.parametrize("shape", [[1, 1, 1], [-1], [1, -1], [2 ** 70], [0, 1]])
def test_decode_infer_refuses_shapes_not_n_or_n_by_1(shape):
    from clusterforget.data import Schema
    from clusterforget.serve.bodies import BodyError, Limits
    from clusterforget.serve.protocols import decode_infer

    schema = Schema(("x0",), ("numeric",))
    body = ('{"inputs": [{"name": "x0", "shape": %s, "datatype": "FP64", "data": [1.0]}]}' % shape).encode()
    with pytest.raises(BodyError) as err:
        decode_infer(body, schema, Limits())
    assert err.value.status == 400 and "shape" in err.value.message
