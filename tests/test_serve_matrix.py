"""The service's request refusals against each export format it serves: bundle, compiled and ONNX in turn.

One service per format (a subprocess on a loopback port, with a token and a key, as served in production), and
every plant against it: an Arrow stream whose compressed buffer has a negative length prefix (one buffer's 1 TiB
cancelled by another's -1 TiB), a buffer's negative offset or length in the record batch's metadata, a string
column's negative offset, JSON nested deeper than the limit and a body over the size limit (on every route that
takes a body; declared and streamed), and the token on every route but the health probes. Each is refused with its
4xx and a short message, the service answers an honest request with the model's output after all of them, and it
is alive. The decoder-level cases are in tests/test_serve_hostile.py; compiled and ONNX skip when their extra (or
gcc) is missing.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget._compat import available
from clusterforget.serve.bodies import ARROW_STREAM
from conftest import FAST, make_table
from test_serve import Service, rows
from test_serve_hostile import KEY, TOKEN, _batch_buffers, arrow_body

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_BODY = 1 << 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _missing(fmt: str) -> str | None:
    if fmt == "compiled" and not (available("tl2cgen") and available("treelite") and shutil.which("gcc")):
        return "the compiled export needs clusterforget[compiled] and gcc"
    if fmt == "onnx" and not (available("onnx") and available("onnxruntime")):
        return "the ONNX export needs clusterforget[onnx]"
    return None


@pytest.fixture(scope="module")
def fitted():
    X, y, ids, test = make_table("binary", n=240)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), combine="average", learner_params=FAST["lightgbm"],
                                n_jobs=1).fit(X, y, ids=ids)
    return model, test


@pytest.fixture(scope="module")
def routes(fitted, tmp_path_factory):
    """(method, path) of every route the service has, from the app itself (a route added later is tried too)."""
    from starlette.routing import Route  # FastAPI's APIRoutes and the service's plain scoring routes

    from clusterforget.serve.app import Holder, make_app

    export = tmp_path_factory.mktemp("routes") / "bundle"
    fitted[0].export(export)
    holder = Holder(export, isolate=False)
    try:
        app = make_app(holder, token=TOKEN)

        def walk(items):  # FastAPI flattens an included router into routes or keeps it whole
            for r in items:
                if isinstance(r, Route):
                    yield from ((m, r.path) for m in r.methods)
                elif getattr(r, "original_router", None) is not None:
                    yield from walk(r.original_router.routes)

        return sorted(set(walk(app.routes)))
    finally:
        holder.close()


# what each Arrow plant is refused for (the decoder's reason, as the service returns it)
REASONS = {"negative length prefix": "negative length", "negative offset": "outside the message body",
           "negative length": "outside the message body", "negative string offset": "non-monotonic offset"}


def _arrow_plants(table: pa.Table) -> dict[str, bytes]:
    """The model's columns as an Arrow stream with one negative size planted, by name."""
    plain = bytearray(arrow_body(table))
    meta_at, body_at, buffers = _batch_buffers(bytes(plain))
    sized = [(at, off) for at, off in buffers if struct.unpack_from("<q", plain, meta_at + at + 8)[0] >= 8]
    offset, length = bytearray(plain), bytearray(plain)
    struct.pack_into("<q", offset, meta_at + sized[0][0], -8)
    struct.pack_into("<q", length, meta_at + sized[0][0] + 8, -8)
    strings = bytearray(plain)  # the first column is "region": validity, offsets, data
    struct.pack_into("<i", strings, body_at + buffers[1][1] + 8, -5)
    packed = bytearray(arrow_body(table, compression="zstd"))
    packed_meta, packed_at, packed_buffers = _batch_buffers(bytes(packed))
    nonempty = [off for at, off in packed_buffers if struct.unpack_from("<q", packed, packed_meta + at + 8)[0] >= 8]
    struct.pack_into("<q", packed, packed_at + nonempty[0], 1 << 40)
    struct.pack_into("<q", packed, packed_at + nonempty[-1], -(1 << 40))
    return {"negative length prefix": bytes(packed), "negative offset": bytes(offset),
            "negative length": bytes(length), "negative string offset": bytes(strings)}


@pytest.mark.parametrize("fmt", ["bundle", "compiled", "onnx"])
def test_every_refusal_on_each_served_export_format(fitted, routes, tmp_path, fmt):
    if _missing(fmt):
        pytest.skip(_missing(fmt))
    model, test = fitted
    export = tmp_path / ("m.onnx" if fmt == "onnx" else fmt)
    model.export(export, format=fmt, key=KEY)
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "key").write_text(KEY.hex())
    service = Service(export, tmp_path, "--token-file", str(tmp_path / "token"), "--key-file", str(tmp_path / "key"),
                      "--max-body-bytes", str(MAX_BODY))
    name = Path(export).stem
    probe = test.head(6)
    table = pa.Table.from_pandas(probe, preserve_index=False)  # pandas 3 text is large_string: int64 offsets
    table = table.cast(pa.schema([(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
                                  for f in table.schema]))
    wrong: list[str] = []

    def expect(what, r, statuses, text=""):
        body = r.text
        if r.status_code not in statuses or len(body) > 1000 or text not in body:
            wrong.append(f"{what}: {r.status_code} {body[:200]!r}, expected {statuses} with {text!r}")

    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            honest = client.post("/predict", content=arrow_body(table), headers={**AUTH, "content-type": ARROW_STREAM})
            assert honest.status_code == 200, honest.text  # the Arrow path works here: a refusal below is the plant's
            for plant, body in _arrow_plants(table).items():
                r = client.post("/predict", content=body, headers={**AUTH, "content-type": ARROW_STREAM})
                expect(f"arrow {plant}", r, (400, 413), REASONS[plant])
            deep = b'{"rows": ' + b"[" * 50 + b"]" * 50 + b"}"
            big = b'{"rows": [' + b'{"a": 1.0},' * (MAX_BODY // 10) + b'{"a": 1.0}]}'
            bodies = {"/predict": (deep, big), "/invocations": (deep.replace(b"rows", b"instances"), big),
                      f"/v2/models/{name}/infer": (deep.replace(b"rows", b"inputs"), big)}
            for path, (nested, oversize) in bodies.items():
                json_type = {**AUTH, "content-type": "application/json"}
                expect(f"{path} JSON depth", client.post(path, content=nested, headers=json_type), (400,), "nests deeper")
                expect(f"{path} oversize", client.post(path, content=oversize, headers=json_type), (413,),
                       str(MAX_BODY))

                def chunks(data=oversize):  # no content-length: the limit holds while reading
                    for i in range(0, len(data), 8192):
                        yield data[i:i + 8192]

                expect(f"{path} oversize streamed", client.post(path, content=chunks(), headers=json_type), (413,),
                       str(MAX_BODY))
            from clusterforget.serve.app import OPEN_ROUTES

            for method, path in routes:
                path = path.replace("{model_name}", name)
                for headers in ({}, {"Authorization": "Bearer wrong-token-" + "y" * 20}, {"Authorization": TOKEN}):
                    r = client.request(method, path, json={"rows": rows(probe.head(2))}, headers=headers)
                    if path in OPEN_ROUTES:
                        expect(f"{method} {path} (a probe) {headers}", r, (200,))
                    else:
                        expect(f"{method} {path} {headers}", r, (401,), "bearer token")
                        if r.headers.get("www-authenticate") != "Bearer":
                            wrong.append(f"{method} {path}: no WWW-Authenticate: Bearer")
            r = client.post("/predict", json={"rows": rows(probe)}, headers=AUTH)
            assert r.status_code == 200, r.text
            got, want = np.array(r.json()["probabilities"]), model.predict_proba(probe)
            # bundle and compiled LightGBM members bitwise; the ONNX graph within 1e-15 (README, "Export")
            assert np.array_equal(got, want) if fmt != "onnx" else np.abs(got - want).max() <= 1e-15
        assert service.alive()
    finally:
        service.close()
    assert not wrong, "\n".join(wrong)
