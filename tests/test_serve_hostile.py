"""The scoring service under hostile requests and exports (issue 19, findings 3 to 8), a fuzz suite over request
bodies, and a load and fault test: every answer is 2xx or a short 4xx, never a 500, and the service keeps serving
the model it had. Servers bind 127.0.0.1 only; request loops are bounded in count and time.

Fuzz profiles: ``ci`` (default, the counts below) and ``long``: ``HYPOTHESIS_PROFILE=long python -m pytest
tests/test_serve_hostile.py -k fuzz -p no:cacheprovider`` (figures in README, "Export for scoring services").
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget.data import Schema
from clusterforget.serve.bodies import ARROW_STREAM, BodyError, Limits, decode
from conftest import FAST, make_table
from test_export_hostile import member_text, replace_member, rewrite
from test_serve import Service, rows

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
TOKEN = "t0ken-" + "x" * 26
KEY = bytes(range(32, 64))


def arrow_body(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    export = tmp / "bundle"
    model.export(export)
    service = Service(export, tmp, "--max-rows", "5000", "--max-body-bytes", str(1 << 20))
    yield model, ids, test, export, service
    service.close()


def test_bodies_are_bounded_and_malformed_ones_are_short_4xx(served):
    model, _, test, _, service = served
    n = 1_000_000  # 9 kB of zstd that decodes to a million rows
    bomb = pa.table({"region": pa.array(["north"] * n).dictionary_encode(), "a": np.zeros(n), "b": np.zeros(n),
                     "colour": pa.array(["red"] * n).dictionary_encode()})
    body = arrow_body(bomb, "zstd")
    assert len(body) < 20_000
    with httpx.Client(timeout=60) as client:  # one kept-alive connection through every refusal
        t0 = time.perf_counter()
        r = client.post(service.url + "/predict", content=body, headers={"content-type": ARROW_STREAM})
        assert r.status_code == 413 and "5000" in r.json()["error"]
        assert time.perf_counter() - t0 < 10  # refused from the metadata, nothing decompressed
        big = json.dumps({"rows": rows(test) * 600}).encode()  # over 1 MiB
        assert len(big) > 1 << 20
        assert client.post(service.url + "/predict", content=big,
                           headers={"content-type": "application/json"}).status_code == 413
        deep = b'{"rows": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        r = client.post(service.url + "/predict", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nests deeper" in r.json()["error"]
        one = rows(test.head(1))[0]
        r = client.post(service.url + "/predict", json={"rows": [{**one, "a": True}]})
        assert r.status_code == 422 and "'a'" in r.json()["error"]
        r = client.post(service.url + "/predict", json={"rows": [{**one, "x" * 200_000: 1}]})
        assert r.status_code == 422 and len(r.text) < 1000
        r = client.post(service.url + "/predict", json={"rows": [{**one, **{f"k{i}": 1 for i in range(10_000)}}]})
        assert r.status_code == 422 and len(r.text) < 1000 and "more" in r.json()["error"]
        good = arrow_body(pa.Table.from_pandas(test.head(20), preserve_index=False))
        r = client.post(service.url + "/predict", content=good,
                        headers={"content-type": "Application/Vnd.Apache.Arrow.Stream; charset=binary"})
        assert r.status_code == 200
        assert np.array_equal(np.array(r.json()["probabilities"]), model.predict_proba(test.head(20)))
        statuses = {}
        step = max(1, len(good) // 46)
        for i in range(0, len(good), step):  # single-byte flips all through the stream
            flipped = bytearray(good)
            flipped[i] ^= 0xFF
            r = client.post(service.url + "/predict", content=bytes(flipped), headers={"content-type": ARROW_STREAM})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code == 200 or (400 <= r.status_code < 500 and len(r.text) < 1000), (i, r.text[:300])
        for cut in (1, 8, len(good) // 2, len(good) - 1):
            r = client.post(service.url + "/predict", content=good[:cut], headers={"content-type": ARROW_STREAM})
            assert 400 <= r.status_code < 500
        assert client.get(service.url + "/health").status_code == 200
    assert service.alive()


def test_model_shows_no_path_and_refusals_keep_the_old_model(served, tmp_path):
    model, _, test, export, service = served
    info = httpx.get(service.url + "/model").json()
    assert str(export) not in json.dumps(info) and "path" not in info
    assert info["limits"]["max_rows"] == 5000 and info["token_required"] is False
    body = {"rows": rows(test.head(5))}
    version = httpx.post(service.url + "/predict", json=body).json()["version"]
    saved = {p.name: p.read_bytes() for p in (export / "members").iterdir()}
    manifest = (export / "manifest.json").read_bytes()
    name, text = member_text(export)
    i = text.index("leaf_value=") + len("leaf_value=")
    bad_member = (text[:i] + "1" + text[i:]).encode()  # LightGBM aborts the process parsing this
    plants = {
        "version text": (lambda d: d.update(model_version="abc"), None, "model_version"),
        "no members": (lambda d: d.update(members=[]), None, "members"),
        "weight nan": (lambda d: d["members"][0].update(weight="nan"), None, "weight"),
        "class index": (lambda d: d["members"][0].update(class_index=[0, 7]), None, "class_index"),
        "malformed member": (lambda d: [m.update(file="members/bad.txt") for m in d["members"] if m["file"] == name],
                             {"members/bad.txt": bad_member}, "malformed"),
    }
    for case, (change, files, why) in plants.items():
        rewrite(export, change, files)
        r = httpx.post(service.url + "/reload", timeout=120).json()
        assert r["swapped"] is False and why in r["refused"]["error"], (case, r)
        assert len(r["refused"]["error"]) <= 1000
        assert httpx.get(service.url + "/model").json()["refused"]["error"] == r["refused"]["error"]
        answer = httpx.post(service.url + "/predict", json=body).json()
        assert answer["version"] == version, case
        assert np.array_equal(np.array(answer["probabilities"]), model.predict_proba(test.head(5)))
        (export / "manifest.json").write_bytes(manifest)
        for p in (export / "members").iterdir():
            if p.name not in saved:
                p.unlink()
    assert "refused the export" in service.logpath.read_text()
    assert service.alive()


def test_a_truncated_onnx_is_refused_with_its_reason(tmp_path):
    pytest.importorskip("onnxruntime")
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    path = tmp_path / "m.onnx"
    model.export(path, format="onnx")
    service = Service(path, tmp_path)
    try:
        data = path.read_bytes()
        tmp = tmp_path / "m.tmp"
        tmp.write_bytes(data[: len(data) // 2])
        os.replace(tmp, path)
        r = httpx.post(service.url + "/reload", timeout=60)
        assert r.status_code == 200 and r.json()["swapped"] is False and r.json()["refused"]["error"]
        assert httpx.get(service.url + "/model").json()["refused"] is not None
        assert httpx.post(service.url + "/predict", json={"rows": rows(test.head(3))}).status_code == 200
        assert service.alive()
    finally:
        service.close()


def test_a_token_guards_predict_and_reload_and_turns_the_docs_off(tmp_path):
    X, y, ids, test = make_table("regression", n=240)
    model = cf.ForgetRegressor(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    export = tmp_path / "bundle"
    model.export(export, key=KEY)
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "key").write_text(KEY.hex())
    service = Service(export, tmp_path, "--token-file", str(tmp_path / "token"), "--key-file", str(tmp_path / "key"))
    try:
        body = {"rows": rows(test.head(4))}
        assert httpx.post(service.url + "/predict", json=body).status_code == 401
        assert httpx.post(service.url + "/predict", json=body,
                          headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status_code == 401
        assert httpx.post(service.url + "/reload").status_code == 401
        for doc in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(service.url + doc).status_code == 404
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.post(service.url + "/predict", json=body, headers=auth)
        assert r.status_code == 200 and np.array_equal(np.array(r.json()["value"]), model.predict(test.head(4)))
        assert httpx.get(service.url + "/model").status_code == 401
        assert httpx.get(service.url + "/model", headers=auth).json()["authenticated"] is True
        model.forget_rows(ids[:5])
        with pytest.raises(cf.ExportError, match="refused it"):  # no key: the service says why, notify= raises
            model.export(export, key=None, notify=service.url, token=TOKEN)
        model.export(export, key=KEY, notify=service.url, token=TOKEN)
        r = httpx.post(service.url + "/predict", json=body, headers=auth).json()
        assert r["version"] == model.version_ and np.array_equal(np.array(r["value"]), model.predict(test.head(4)))
    finally:
        service.close()


# ---------------------------------------------------------------------------------------------------- fuzz

SCHEMA = Schema(("region", "a", "b", "colour"), ("categorical", "numeric", "numeric", "categorical"), True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=8), st.just("north"))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)
row = st.dictionaries(st.sampled_from(["region", "a", "b", "colour", "zzz", ""]), scalars, max_size=5)
json_bodies = st.one_of(
    st.builds(lambda rs: json.dumps({"rows": rs}).encode(), st.lists(row, max_size=6)),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.binary(max_size=64),
    st.builds(lambda rs, cut: json.dumps({"rows": rs}).encode()[:cut], st.lists(row, min_size=1, max_size=4),
              st.integers(0, 200)),
)
arrow_types = {"str": pa.string(), "dict": pa.dictionary(pa.int32(), pa.string()), "f64": pa.float64(),
               "i64": pa.int64(), "bool": pa.bool_(), "null": pa.null(), "bin": pa.binary()}


@st.composite
def arrow_bodies(draw):
    n = draw(st.integers(0, 6))
    cols, names = [], []
    for name in draw(st.lists(st.sampled_from(["region", "a", "b", "colour", "zzz"]), max_size=5, unique=True)):
        kind = draw(st.sampled_from(sorted(arrow_types)))
        if kind in ("str", "dict", "bin"):
            vals = draw(st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=n, max_size=n))
            arr = pa.array([None if v is None else (v.encode() if kind == "bin" else v) for v in vals],
                           pa.binary() if kind == "bin" else pa.string())
            arr = arr.dictionary_encode() if kind == "dict" else arr
        elif kind == "null":
            arr = pa.nulls(n)
        else:
            vals = draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, width=64)), min_size=n, max_size=n))
            arr = pa.array(vals, pa.float64())
            arr = arr.cast(pa.int64(), safe=False) if kind == "i64" and arr.null_count == n else (
                arr if kind != "bool" else pa.array([None if v is None else bool(v) for v in vals], pa.bool_()))
        cols.append(arr)
        names.append(name)
    body = arrow_body(pa.table(cols, names=names) if names else pa.table({}),
                      draw(st.sampled_from([None, "zstd", "lz4"])))
    if draw(st.booleans()):  # damaged on the way: a flipped byte or a cut
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1:] if draw(st.booleans()) \
            else body[:i]
    return body


@settings(max_examples=4000 if LONG else 400, deadline=None, derandomize=not LONG,
          suppress_health_check=list(HealthCheck))
@given(body=st.one_of(json_bodies, arrow_bodies()), arrow=st.booleans())
def test_fuzz_decode_gives_a_table_or_a_short_4xx(body, arrow):
    try:
        table, _ = decode(body, ARROW_STREAM if arrow else "application/json", SCHEMA, Limits(max_rows=50))
    except BodyError as exc:
        assert 400 <= exc.status < 500 and len(exc.message) <= 300
        return
    assert table.column_names == list(SCHEMA.names) and 0 < table.num_rows <= 50
    assert [str(t) for t in table.schema.types] == ["string", "double", "double", "string"]


@pytest.fixture(scope="module")
def fuzzed(served):
    return served[3], served[4], httpx.Client(timeout=60)


@settings(max_examples=1000 if LONG else 60, deadline=None, derandomize=not LONG,
          suppress_health_check=list(HealthCheck))
@given(body=st.one_of(json_bodies, arrow_bodies()), arrow=st.booleans(),
       content_type=st.sampled_from(["application/json", ARROW_STREAM, "APPLICATION/JSON", "text/plain", ""]))
def test_fuzz_the_live_service_answers_2xx_or_4xx_never_500(fuzzed, body, arrow, content_type):
    _, service, client = fuzzed
    headers = {"content-type": ARROW_STREAM if arrow else content_type}
    r = client.post(service.url + "/predict", content=body, headers=headers)
    assert r.status_code == 200 or (400 <= r.status_code < 500 and len(r.text) < 1000), (r.status_code, r.text[:300])
    if r.status_code == 200:
        answer = r.json()
        assert len(answer["label"]) == len(answer["probabilities"]) >= 1
        assert np.all(np.isfinite(np.array(answer["probabilities"])))


def test_fuzz_left_the_service_alive(fuzzed):
    assert fuzzed[1].alive()


# --------------------------------------------------------------------------------------------- load and fault


def test_load_and_faults_no_failed_request_no_version_regression(tmp_path):
    """Clients call the service while the model is forgotten and re-exported, a broken export and a malformed
    member are swapped in: every answer is 200 and bitwise one version's output, no client sees a version go
    back, the service is alive at the end."""
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    export = tmp_path / "bundle"
    model.export(export)
    probe = test.head(12)
    body = {"rows": rows(probe)}
    expected = {model.version_: model.predict_proba(probe)}
    service = Service(export, tmp_path)
    stop = threading.Event()
    seen: list[list[tuple[int, int, list]]] = []

    def client(k: int) -> None:
        mine: list[tuple[int, int, list]] = []
        seen.append(mine)
        with httpx.Client(timeout=60) as c:
            for _ in range(1000):  # bounded in count, and in time by `stop`
                if stop.wait(0.02):  # paced: the swaps under test need the same two cores
                    break
                r = c.post(service.url + "/predict", json=body)
                answer = r.json() if r.status_code == 200 else {}
                mine.append((r.status_code, answer.get("version", -1), answer.get("probabilities")))

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client, k) for k in range(4)]
            time.sleep(0.2)
            for step in range(3):
                model.forget_rows(ids[10 * step: 10 * step + 10])
                expected[model.version_] = model.predict_proba(probe)
                model.export(export, notify=service.url)
                time.sleep(0.2)
                if step == 0:  # a broken export: the manifest no longer matches its checksum
                    doc = json.loads((export / "manifest.json").read_text())
                    doc["model_version"] = 10_000
                    (export / "manifest.tmp").write_text(json.dumps(doc))
                    os.replace(export / "manifest.tmp", export / "manifest.json")
                if step == 1:  # a malformed member with every checksum recomputed (LightGBM would abort on it)
                    name, text = member_text(export)
                    i = text.index("leaf_value=") + len("leaf_value=")
                    replace_member(export, name, (text[:i] + "1" + text[i:]).encode(), model_version=10_001)
                r = httpx.post(service.url + "/reload", timeout=120).json()
                if step < 2:
                    assert r["swapped"] is False and r["refused"] is not None
                time.sleep(0.1)
            stop.set()
            for f in futures:
                f.result(timeout=120)
        answers = [a for mine in seen for a in mine]
        assert len(answers) >= 40 and all(code == 200 for code, _, _ in answers), \
            [a[:2] for a in answers if a[0] != 200][:5]
        for mine in seen:
            versions = [v for _, v, _ in mine]
            assert versions == sorted(versions)  # no client ever sees an older version after a newer one
        for _, v, proba in answers:
            assert v in expected and np.array_equal(np.array(proba), expected[v])
        assert len({v for _, v, _ in answers}) >= 2  # the swaps happened under load
        assert service.alive()
    finally:
        stop.set()
        service.close()


def _depth(doc) -> int:
    if isinstance(doc, (list, dict)):
        inner = doc.values() if isinstance(doc, dict) else doc
        return 1 + max((_depth(v) for v in inner), default=0)
    return 0


# strings made of what a byte-level depth scan could mistake for structure: brackets, quotes, backslashes
tricky = st.text(alphabet='[]{}"\\ab', max_size=6)
json_trees = st.recursive(st.none() | st.integers() | tricky,
                          lambda kids: st.lists(kids, max_size=3) | st.dictionaries(tricky, kids, max_size=3),
                          max_leaves=30)


@settings(max_examples=4000 if LONG else 300, deadline=None, derandomize=not LONG)
@given(doc=json_trees, limit=st.integers(1, 9), indent=st.sampled_from([None, 1]))
def test_the_depth_scan_is_the_parsed_documents_depth(doc, limit, indent):
    from clusterforget.serve.bodies import nests_deeper

    body = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    assert nests_deeper(body, limit) == (_depth(doc) > limit)
    # a string's brackets never hide a level: "][" inside nine levels is still nine
    assert nests_deeper(b"[" * 9 + b'"][", 1' + b"]" * 9, 8)


def test_with_a_token_every_route_but_the_probes_needs_it_and_model_shows_no_path(tmp_path):
    from starlette.routing import Route  # FastAPI's APIRoutes and the service's plain scoring routes
    from fastapi.testclient import TestClient

    from clusterforget.serve.app import OPEN_ROUTES, Holder, make_app

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    export = tmp_path / "bundle"
    model.export(export)
    holder = Holder(export, isolate=False)
    try:
        app = make_app(holder, token=TOKEN)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with TestClient(app) as client:
            def walk(items):  # FastAPI flattens an included router into routes or keeps it whole
                for r in items:
                    if isinstance(r, Route):
                        yield from ((m, r.path.replace("{model_name}", "bundle")) for m in r.methods)
                    elif getattr(r, "original_router", None) is not None:
                        yield from walk(r.original_router.routes)

            routes = list(walk(app.routes))
            assert {p for _, p in routes} >= {"/predict", "/reload", "/model", "/metrics", "/invocations", "/v2",
                                              "/v2/models/bundle", "/v2/models/bundle/infer", *OPEN_ROUTES}
            for method, path in routes:
                r = client.request(method, path, json={"rows": rows(test.head(2))})
                if path in OPEN_ROUTES:
                    assert r.status_code == 200, path
                else:
                    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
                    assert "bearer token" in r.json()["error"]
            assert client.get("/v2/models/bundle", headers=auth).status_code == 200
            assert client.post("/predict", content=b"x" * (17 << 20), headers=auth).status_code == 413
            # a refusal names what is wrong with the export, never where it is on the host
            (export / "manifest.json").write_text((export / "manifest.json").read_text().replace(
                '"model_version"', '"model_versionx"', 1))
            r = client.post("/reload", headers=auth).json()
            assert r["swapped"] is False and r["refused"]["error"]
            info = client.get("/model", headers=auth).text
            assert info.count("refused") and str(tmp_path) not in info and str(export.resolve()) not in info
            assert str(tmp_path) not in client.post("/reload", headers=auth).text
    finally:
        holder.close()


def test_a_poll_between_the_hmac_and_the_graph_writes_refuses_nothing(tmp_path, monkeypatch):
    """``write_onnx`` writes ``.auth.json`` then the graph: a poll in between, or a load that a next writer's HMAC
    overtakes, must wait, not refuse."""
    pytest.importorskip("onnxruntime")
    import shutil

    from clusterforget.serve import app as app_module

    from clusterforget.export.onnx import auth_path
    from clusterforget.serve.app import Holder

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    served, staged = tmp_path / "m.onnx", tmp_path / "next" / "m.onnx"
    model.export(served, format="onnx", key=KEY)
    holder = Holder(served, key=KEY, isolate=False)
    try:
        model.forget_rows(ids[:5])
        model.export(staged, format="onnx", key=KEY)
        shutil.copyfile(auth_path(staged), auth_path(served))  # the writer's first step, as a poll sees it
        assert holder.check() is False
        assert holder.refused is None and holder.refusals == 0
        shutil.copyfile(staged, served)  # the second: the new graph
        assert holder.check() is True and holder.current.version == model.version_ and holder.refusals == 0

        # a next writer's HMAC lands while the graph is being read: the writer's race, not a refusal
        model.forget_rows(ids[5:10])
        model.export(staged, format="onnx", key=KEY)
        read = app_module.read_onnx

        def read_during_a_write(path, key=None):
            shutil.copyfile(auth_path(staged), auth_path(served))
            return read(path, key)

        monkeypatch.setattr(app_module, "read_onnx", read_during_a_write)
        served.touch()  # the poll sees the graph change (the earlier writer's last step)
        assert holder.check() is False and holder.refused is None and holder.refusals == 0
        monkeypatch.setattr(app_module, "read_onnx", read)
        shutil.copyfile(staged, served)
        assert holder.check() is True and holder.current.version == model.version_ and holder.refusals == 0
    finally:
        holder.close()


def _batch_buffers(body: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """(where the record batch's metadata starts, where its body starts, (offset position, offset) per buffer)."""
    import struct

    from clusterforget.serve.bodies import _table_field, _vector

    pos = 0
    while True:
        size = struct.unpack_from("<i", body, pos + 4)[0]
        meta = body[pos + 8:pos + 8 + size]
        root = struct.unpack_from("<I", meta, 0)[0]
        length_at = _table_field(meta, root, 3)  # absent: no body (the schema message)
        body_length = 0 if length_at is None else struct.unpack_from("<q", meta, length_at)[0]
        if meta[_table_field(meta, root, 1)] == 3:  # a RecordBatch message
            header = _table_field(meta, root, 2)
            header += struct.unpack_from("<I", meta, header)[0]
            start, n = _vector(meta, _table_field(meta, header, 2))
            buffers = [(start + 16 * i, struct.unpack_from("<q", meta, start + 16 * i)[0]) for i in range(n)]
            return pos + 8, pos + 8 + size, buffers
        pos += 8 + size + body_length


@pytest.mark.parametrize("plant", ["offset", "length", "prefix"])
def test_arrow_buffers_with_negative_offsets_lengths_or_sizes_are_refused(plant):
    """Planted in a record batch's metadata (a buffer's offset or length) or in a compressed buffer's length
    prefix: a negative size in one buffer must not cancel another's huge one in the decoded-bytes budget."""
    import struct

    table = pa.table({"a": np.arange(64, dtype=np.float64), "b": np.arange(64, dtype=np.float64)})
    body = bytearray(arrow_body(table, compression="zstd" if plant == "prefix" else None))
    meta_at, body_at, buffers = _batch_buffers(bytes(body))
    data = [(at, off) for at, off in buffers if struct.unpack_from("<q", body, meta_at + at + 8)[0] >= 8]
    (first_at, first), (second_at, second) = data[0], data[-1]
    if plant == "offset":
        struct.pack_into("<q", body, meta_at + first_at, -8)
    elif plant == "length":
        struct.pack_into("<q", body, meta_at + first_at + 8, -8)
    else:  # 1 TiB announced in one buffer, minus as much in another: the sum looks small
        struct.pack_into("<q", body, body_at + first, 1 << 40)
        struct.pack_into("<q", body, body_at + second, -(1 << 40))
    schema = Schema(("a", "b"), ("numeric", "numeric"), True)
    with pytest.raises(BodyError) as refused:
        decode(bytes(body), ARROW_STREAM, schema, Limits())
    assert refused.value.status in (400, 413) and len(refused.value.message) <= 300
    if plant == "prefix":
        assert "negative" in refused.value.message, refused.value.message


def test_arrow_string_offsets_that_go_negative_are_refused():
    """A string column's offsets buffer planted with a negative offset: refused before any kernel reads it."""
    import struct

    body = bytearray(arrow_body(pa.table({"s": ["ab", "cd", "ef", "gh"]})))
    _, body_at, buffers = _batch_buffers(bytes(body))
    offsets = buffers[1][1]  # validity, offsets, data
    struct.pack_into("<i", body, body_at + offsets + 8, -5)
    with pytest.raises(BodyError) as refused:
        decode(bytes(body), ARROW_STREAM, Schema(("s",), ("categorical",), True), Limits())
    assert refused.value.status == 400 and len(refused.value.message) <= 300


def test_a_corrupt_onnx_graph_is_parsed_in_the_child_first(tmp_path, monkeypatch):
    """onnxruntime parses the graph in the isolating child before this process does: a graph it cannot parse is
    refused from the child's answer, and this process never parses it."""
    pytest.importorskip("onnxruntime")
    from clusterforget.export import onnx as onnx_module
    from clusterforget.export.isolate import MemberChecker
    from clusterforget.serve import app as app_module

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    path = tmp_path / "m.onnx"
    model.export(path, format="onnx")
    good = path.read_bytes()
    checker = MemberChecker()
    try:
        app_module.load_export(path, checker=checker)  # a good graph passes the child
        parsed = []
        monkeypatch.setattr(app_module, "session", lambda *a, **k: parsed.append(a) or onnx_module.session(*a, **k))
        for bad in (good[: len(good) // 2], good[:100] + b"\xff" * 64 + good[164:]):
            path.write_bytes(bad)
            with pytest.raises(cf.ExportError, match="is malformed"):
                app_module.load_export(path, checker=checker)
        assert parsed == []
    finally:
        checker.close()


@pytest.mark.parametrize("fmt", ["bundle", "onnx"])
def test_a_small_json_body_is_scored_on_the_event_loop_by_a_bundle_only(fmt, tmp_path):
    """A bundle's scorer answers a few JSON rows on the loop (cheaper than the hop to a worker thread); an ONNX
    session never runs there (its run time is the graph's), nor does an Arrow body or a request for reasons."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from clusterforget.serve.app import Holder, make_app

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    export = tmp_path / ("m.onnx" if fmt == "onnx" else "bundle")
    model.export(export, format=fmt)
    holder = Holder(export, isolate=False)
    threads: list[str] = []
    score = holder.current.score
    holder.current = replace(holder.current, score=lambda t: (threads.append(threading.current_thread().name),
                                                              score(t))[1])
    try:
        with TestClient(make_app(holder)) as client:
            loop = client.portal.call(lambda: threading.current_thread().name)
            r = client.post("/predict", json={"rows": rows(test.head(2))})
            assert r.status_code == 200 and len(r.json()["label"]) == 2
            client.post("/predict", content=arrow_body(pa.Table.from_pandas(test.head(2), preserve_index=False)),
                        headers={"content-type": ARROW_STREAM}).raise_for_status()
    finally:
        holder.close()
    assert (threads[0] == loop) == (fmt == "bundle") and threads[1] != loop, (threads, loop)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_one_json_row_scored_as_values_answers_as_the_table_does(task, tmp_path):
    """A one-row JSON body goes to the scorer as values (``bodies.plain_row``), not as Arrow arrays: the answer is
    the table path's byte for byte, and every value the table path refuses (a bool, an integer float64 cannot
    hold, non-ASCII text Arrow checks, a missing or unknown column) still goes its way and is refused alike."""
    from dataclasses import replace

    from clusterforget.serve.app import Holder, _answer

    X, y, ids, test = make_table(task, n=200)
    est = cf.ForgetClassifier if task == "binary" else cf.ForgetRegressor
    model = est(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp_path / "bundle")
    holder = Holder(tmp_path / "bundle", isolate=False)
    calls: list[int] = []
    fast = replace(holder.current, row=lambda values: (calls.append(1), holder.current.row(values))[1])
    table_path = replace(fast, row=None)
    base = rows(test.head(1))[0]
    bodies = [json.dumps({"rows": [r]}).encode() for r in rows(test.head(40))]
    plants = [{"a": None}, {"region": None, "colour": None}, {"b": -0.0}, {"a": 2 ** 53}, {"a": -(2 ** 53)},
              {"a": 2 ** 53 + 1}, {"a": True}, {"a": "1"}, {"region": 3}, {"colour": "rouge-é"},
              {"region": "atlantis"}, {"extra": 1}]
    bodies += [json.dumps({"rows": [{**base, **p}]}).encode() for p in plants]
    bodies += [json.dumps({"rows": [{k: v for k, v in base.items() if k != "b"}]}).encode(),
               b'{"rows": [{"region": "north", "a": NaN, "b": Infinity, "colour": "red"}]}',
               b'{"rows": [{"region": "north", "a": NaN, "b": 1e400, "colour": null}]}',
               json.dumps({"rows": [base], "explain": 2}).encode()]

    def answer(cur, body):
        try:
            return _answer(cur, body, "application/json", Limits())
        except BodyError as exc:
            return exc.status, exc.message
        except cf.ClusterForgetError as exc:  # the service's 422
            return type(exc).__name__, str(exc)

    try:
        got = [answer(fast, b) for b in bodies]
        assert got == [answer(table_path, b) for b in bodies]
        assert sum(isinstance(g[0], bytes) for g in got) >= 40 + 6 and any(g[0] == 422 for g in got)
        assert len(calls) >= 40 + 6  # the plain rows went the values' way
        assert b'"reasons"' in got[-1][0]
    finally:
        holder.close()


def test_scoring_posts_go_past_the_stack_keeping_their_guards_counts_and_500(tmp_path, monkeypatch):
    """A POST to a scoring route's own path is served by the route directly (FastAPI's middleware stack and router
    are skipped), with its token check, body bound and /metrics count; what it raises is a 500, as the stack gives.
    A middleware the caller adds to the app (their authentication, logging) sees every request: then none skips."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    import clusterforget.serve.app as service
    from clusterforget.serve.app import Holder, make_app

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.export(tmp_path / "bundle")
    holder = Holder(tmp_path / "bundle", isolate=False)
    direct: list[str] = []
    served = service._served

    async def counted(app, scope, receive, send):
        direct.append(scope["path"])
        await served(app, scope, receive, send)

    monkeypatch.setattr(service, "_served", counted)
    seen: list[str] = []

    class Seen:  # a middleware in the stack: it sees what the stack serves
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        one = {"rows": rows(test.head(1))}
        guarded = make_app(holder, token=TOKEN, limits=Limits(max_body_bytes=4096))
        guarded.add_middleware(Seen)
        with TestClient(guarded, raise_server_exceptions=False) as client:
            assert client.post("/predict", json=one, headers=auth).status_code == 200
            assert client.post("/predict", json=one).status_code == 401
            assert seen == ["/predict", "/predict"] and direct == []  # the caller's middleware saw both
        seen.clear()
        app = make_app(holder, token=TOKEN, limits=Limits(max_body_bytes=4096))
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.post("/predict", json=one, headers=auth)
            assert r.status_code == 200 and np.array_equal(r.json()["probabilities"], model.predict_proba(test.head(1)))
            assert client.post("/predict", json=one).status_code == 401
            assert client.post("/predict", content=b"x" * 5000, headers=auth).status_code == 413
            assert client.post("/v2/models/bundle/infer", content=b"[" * 40, headers=auth).status_code == 400
            assert client.post("/invocations", json={"instances": rows(test.head(2))}, headers=auth).status_code == 200
            assert direct == ["/predict"] * 3 + ["/v2/models/bundle/infer", "/invocations"]  # all past the stack
            assert client.post("/v2/models/other/infer", json={}, headers=auth).status_code == 404  # the stack's
            assert client.get("/health").status_code == 200 and len(direct) == 5
            holder.current = replace(holder.current, row=lambda values: 1 / 0)
            r = client.post("/predict", json=one, headers=auth)
            assert r.status_code == 500 and r.text == "Internal Server Error"
            text = client.get("/metrics", headers=auth).text
        for line in ('clusterforget_requests_total{code="200",endpoint="/predict",method="POST"} 1.0',
                     'clusterforget_requests_total{code="401",endpoint="/predict",method="POST"} 1.0',
                     'clusterforget_requests_total{code="413",endpoint="/predict",method="POST"} 1.0',
                     'clusterforget_requests_total{code="500",endpoint="/predict",method="POST"} 1.0',
                     'clusterforget_rows_scored_total{endpoint="/predict"} 1.0',
                     'clusterforget_requests_total{code="400",endpoint="/v2/models/{model_name}/infer",method="POST"} 1.0'):
            assert line in text, line
    finally:
        holder.close()
