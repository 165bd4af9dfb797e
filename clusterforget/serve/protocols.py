"""The standard inference protocols on the service: MLflow's scoring protocol and KServe's Open Inference (v2).

* ``POST /invocations`` as MLflow's scoring server answers it: a JSON body with one of ``dataframe_split``
  (``{"columns": [...], "data": [[...], ...]}``), ``dataframe_records`` (``[{"col": value}, ...]``),
  ``instances`` or ``inputs`` (records, rows in column order, or ``{"col": [values]}``), and optional
  ``params`` (``{"output": "labels"}``); or ``text/csv`` with a header line. The answer is
  ``{"predictions": ...}``: class probabilities for a classifier (as the flavor's pyfunc), labels with
  ``output=labels``, values for a regressor; the model version is in the ``X-Model-Version`` header and
  ``"model_version"``.
* KServe v2: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{name}`` (metadata: one
  input per column, ``FP64`` or ``BYTES``), ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` with
  one input per column (shape ``[n]`` or ``[n, 1]``); outputs ``label`` and ``probabilities`` (``[n, k]``,
  row-major) or ``value``. Errors are ``{"error": "..."}`` with status 400, as the protocol says.

Bodies are decoded and checked off the event loop (the same ``_run`` as ``/predict``); every column is
converted by the model's schema (numbers as float64, categories as strings), never evaluated.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Literal, Optional, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # at module level: FastAPI resolves the endpoints' annotations here
from starlette.responses import Response

from ..data import CATEGORICAL, Schema
from ..errors import ClusterForgetError
from .bodies import BodyError, Limits, names, nests_deeper, rows_table, short

CSV = "text/csv"
OUTPUTS = ("probabilities", "labels")
Value = Union[float, int, str, bool, None]


# ------------------------------------------------------------------ typed request bodies (in the OpenAPI description)
class DataframeSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: list[str]
    data: list[list[Value]]
    index: Optional[list[Any]] = None


class InvocationsRequest(BaseModel):
    """MLflow's scoring protocol: exactly one of the four input fields, and optional params."""

    model_config = ConfigDict(extra="forbid")
    dataframe_split: Optional[DataframeSplit] = None
    dataframe_records: Optional[list[dict[str, Value]]] = None
    instances: Optional[Union[list[dict[str, Value]], list[list[Value]], dict[str, list[Value]]]] = None
    inputs: Optional[Union[list[dict[str, Value]], list[list[Value]], dict[str, list[Value]]]] = None
    params: Optional[dict[str, Any]] = None


class InferInput(BaseModel):
    name: str
    # one input per column: [n] or [n, 1]; a longer list is refused before any of it is multiplied
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                      "FP32", "FP64", "BYTES"]
    data: list[Any]
    parameters: Optional[dict[str, Any]] = None


class InferOutputRequest(BaseModel):
    name: str
    parameters: Optional[dict[str, Any]] = None


class InferRequest(BaseModel):
    """KServe v2 inference request: one input per feature column."""

    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: Optional[list[InferOutputRequest]] = None


def _openapi_body(model: type[BaseModel], content: str = "application/json") -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        content: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (InvocationsRequest, InferRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


# ------------------------------------------------------------------ bodies -> the model's table
def _records(columns: dict[str, list]) -> list[dict[str, Any]]:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise BodyError(400, f"every column must hold the same number of values; got lengths {sorted(lengths)!r}")
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def _tabular(value: Any, schema: Schema, field: str) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return _records({k: list(v) for k, v in value.items()})
    if value and all(isinstance(r, dict) for r in value):
        return value
    if value and all(isinstance(r, list) for r in value):
        if any(len(r) != len(schema.names) for r in value):
            raise BodyError(400, f"{field}: each row must hold {len(schema.names)} values, in the order of "
                            f"{names(list(schema.names), 20)}")
        return [dict(zip(schema.names, r)) for r in value]
    raise BodyError(400, f"{field} must be records, rows of values or {{column: [values]}}, with at least one row")


def _parse(model: type[BaseModel], body: bytes, limits: Limits, what: str) -> Any:
    if nests_deeper(body, limits.max_json_depth):
        raise BodyError(400, f"the JSON body nests deeper than {limits.max_json_depth} levels")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BodyError(400, f"the body is not {what}: {exc.errors(include_url=False, include_input=False)[:2]!r}") from None


def decode_invocations(body: bytes, content_type: str, schema: Schema,
                       limits: Limits) -> tuple[pa.Table, str | None]:
    """An ``/invocations`` body as the model's table, and the ``output`` parameter if given."""
    if content_type.split(";", 1)[0].strip().lower() == CSV:
        from pyarrow import csv

        types = {n: pa.string() if k == CATEGORICAL else pa.float64() for n, k in zip(schema.names, schema.kinds)}
        try:
            table = csv.read_csv(pa.py_buffer(body), convert_options=csv.ConvertOptions(column_types=types))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BodyError(400, f"the CSV body cannot be read with the model's columns ({exc})") from None
        if table.num_rows > limits.max_rows:
            raise BodyError(413, f"the body has {table.num_rows} rows, over the limit of {limits.max_rows}")
        return rows_table(table.to_pylist(), schema, limits), None
    req = _parse(InvocationsRequest, body, limits, "an MLflow scoring request")
    given = [f for f in ("dataframe_split", "dataframe_records", "instances", "inputs") if getattr(req, f) is not None]
    if len(given) != 1:
        raise BodyError(400, "send exactly one of dataframe_split, dataframe_records, instances, inputs; got "
                        f"{given or 'none'!r}")
    field = given[0]
    if field == "dataframe_split":
        split = req.dataframe_split
        if any(len(r) != len(split.columns) for r in split.data):
            raise BodyError(400, f"dataframe_split: each row of data must hold {len(split.columns)} values")
        rows = [dict(zip(split.columns, r)) for r in split.data]
    else:
        rows = _tabular(getattr(req, field), schema, field)
    output = (req.params or {}).get("output")
    if output is not None and output not in OUTPUTS:
        raise BodyError(400, f"params.output={short(repr(output), 40)} is not an option; use one of {list(OUTPUTS)!r}")
    return rows_table(rows, schema, limits), output


def decode_infer(body: bytes, schema: Schema, limits: Limits) -> tuple[pa.Table, InferRequest]:
    """A v2 infer body (one input per column) as the model's table."""
    req = _parse(InferRequest, body, limits, "a v2 inference request")
    columns: dict[str, list] = {}
    for inp in req.inputs:
        data = inp.data
        if data and isinstance(data[0], list):  # nested as its shape says
            data = [v for row in data for v in (row if isinstance(row, list) else [row])]
        # the shape is checked before any arithmetic on it: one or two dims, each in [0, max_rows]
        shape = inp.shape
        if (len(shape) not in (1, 2) or any(not 0 <= d <= limits.max_rows for d in shape)
                or (len(shape) == 2 and shape[1] != 1) or shape[0] != len(data)):
            raise BodyError(400, f"input {short(repr(inp.name), 60)}: shape {short(repr(shape), 60)} with {len(data)} value(s); "
                            "one input per column takes shape [n] or [n, 1]")
        if inp.name in columns:
            raise BodyError(400, f"input {short(repr(inp.name), 60)} is given twice")
        columns[inp.name] = data
    return rows_table(_records(columns), schema, limits), req


# ------------------------------------------------------------------ routes
def add_protocols(app: Any, routes: Any, probes: Any, holder: Any, name: str, service: Any) -> None:
    """Add ``/invocations`` and the v2 routes: the health probes to ``probes``, the scoring routes through
    ``service.route(path, handler, summary, openapi)`` (behind the service's token, the body bounded before the
    handler gets it), the rest to ``routes`` (the router behind the token); bodies are decoded off the event loop
    (``service``: ``run``, ``limits``, ``route``)."""
    from fastapi.responses import JSONResponse

    def _error(exc: Exception, status: int) -> Any:
        return JSONResponse({"error": short(exc)}, status_code=status)

    async def _scored(request: Request, body: bytes, cur: Any, decode: Any, *args: Any, status: int,
                      answer: Callable[[pa.Table, Any, dict[str, Any]], dict[str, Any]]) -> Any:
        """The answer to a scoring request: decoded, scored and rendered to JSON in one hop off the event loop (as
        ``/predict`` does), or the error response. ``answer(table, what the decoder said besides, outputs)`` is the
        protocol's document; it raises ``BodyError`` for a request it cannot answer."""

        def respond() -> tuple[bytes, int]:
            table, extra = decode(body, *args, service.limits)
            doc = answer(table, extra, cur.score(table))
            return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(), table.num_rows

        try:
            content, request.scope["clusterforget.rows"] = await service.run(respond)  # rows: for /metrics
        except BodyError as exc:
            return _error(exc.message, exc.status)
        except ClusterForgetError as exc:
            return _error(exc, status)
        return Response(content, media_type="application/json", headers={"X-Model-Version": str(cur.version)})

    async def invocations(request: Request, body: bytes) -> Any:
        cur = holder.current
        content_type = request.headers.get("content-type", "")

        def answer(table: pa.Table, output: Any, out: dict[str, Any]) -> dict[str, Any]:
            if cur.task != "classification":
                predictions = out["value"]
            else:
                predictions = out["label"] if output == "labels" else out["probabilities"]
            return {"predictions": predictions, "model_version": cur.version}

        return await _scored(request, body, cur, decode_invocations, content_type, cur.schema, status=422,
                             answer=answer)

    service.route("/invocations", invocations, "MLflow's scoring protocol (JSON as in the schema, or text/csv with "
                  "a header line)", _openapi_body(InvocationsRequest))

    @probes.get("/v2/health/live")
    def live() -> dict[str, Any]:
        return {"live": True}

    @probes.get("/v2/health/ready")
    def ready() -> dict[str, Any]:
        return {"ready": holder.current is not None}

    @routes.get("/v2")
    def server_metadata() -> dict[str, Any]:
        from ..version import __version__

        return {"name": "clusterforget", "version": __version__, "extensions": []}

    def _unknown(model_name: str) -> Any:
        return JSONResponse({"error": f"unknown model {model_name!r}; this service serves {name!r}"},
                            status_code=404)

    @routes.get("/v2/models/{model_name}")
    def model_metadata(model_name: str) -> Any:
        if model_name != name:
            return _unknown(model_name)
        cur = holder.current
        inputs = [{"name": n, "datatype": "BYTES" if k == CATEGORICAL else "FP64", "shape": [-1]}
                  for n, k in zip(cur.schema.names, cur.schema.kinds)]
        if cur.task == "classification":
            outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                       {"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]}]
        else:
            outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
        return {"name": name, "versions": [str(cur.version)], "platform": "clusterforget", "inputs": inputs,
                "outputs": outputs}

    @routes.get("/v2/models/{model_name}/ready")
    def model_ready(model_name: str) -> Any:
        if model_name != name:
            return _unknown(model_name)
        return {"name": name, "ready": True}

    async def infer(request: Request, body: bytes) -> Any:
        model_name = request.path_params["model_name"]
        if model_name != name:
            return _unknown(model_name)
        cur = holder.current

        def answer(table: pa.Table, req: InferRequest, out: dict[str, Any]) -> dict[str, Any]:
            n = table.num_rows
            if cur.task == "classification":
                labels = out["label"]
                probs = out["probabilities"]
                label_type = "BYTES" if any(isinstance(v, str) for v in labels) else "INT64" if all(
                    isinstance(v, int) and not isinstance(v, bool) for v in labels) else "FP64"
                outputs = [{"name": "label", "datatype": label_type, "shape": [n], "data": labels},
                           {"name": "probabilities", "datatype": "FP64", "shape": [n, len(probs[0]) if probs else 0],
                            "data": [p for row in probs for p in row]}]
            else:
                outputs = [{"name": "value", "datatype": "FP64", "shape": [n], "data": out["value"]}]
            if req.outputs:
                wanted = {o.name for o in req.outputs}
                unknown = sorted(wanted - {o["name"] for o in outputs})
                if unknown:
                    raise BodyError(400, f"unknown output(s) {unknown!r}; this model has "
                                     f"{[o['name'] for o in outputs]!r}")
                outputs = [o for o in outputs if o["name"] in wanted]
            doc = {"model_name": name, "model_version": str(cur.version), "outputs": outputs}
            if req.id is not None:
                doc["id"] = req.id
            return doc

        return await _scored(request, body, cur, decode_infer, cur.schema, status=400, answer=answer)

    service.route("/v2/models/{model_name}/infer", infer, "KServe v2 inference: one input per feature column",
                  _openapi_body(InferRequest))

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
        return app.openapi_schema

    app.openapi = openapi


__all__ = ["add_protocols", "decode_invocations", "decode_infer", "InvocationsRequest", "InferRequest"]
