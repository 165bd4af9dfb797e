"""The FastAPI application of the scoring service, and the watcher that swaps exports in (see ``serve``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from .._compat import optional
from ..data import CATEGORICAL, Schema
from ..errors import ClusterForgetError
from ..export import Scorer
from ..export.bundle import MANIFEST
from ..export.onnx import feeds, metadata, session

fastapi = optional("fastapi", "the scoring service")
Request = fastapi.Request  # at module level: FastAPI resolves the endpoints' annotations here
log = logging.getLogger("clusterforget.serve")
ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass
class Loaded:
    """One loaded export: how to score a canonical table, and what it is (version, provenance)."""

    info: dict[str, Any]
    schema: Schema
    task: str
    score: Callable[[pa.Table], dict[str, Any]]
    # reason codes (``Scorer.reasons``): bundles only; an ONNX graph has no contributions
    reasons: Callable[[pa.Table, int], list[dict[str, Any]]] | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> int:
        return int(self.info["model_version"])


def _signature(path: Path) -> tuple | None:
    """What changes when an export is replaced: the manifest's (or the file's) inode, size and mtime."""
    target = path / MANIFEST if path.is_dir() else path
    try:
        st = target.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_export(path: Path) -> Loaded:
    """Load and verify the export at ``path``; raises (and changes nothing) if it is broken."""
    if path.is_dir():
        scorer = Scorer(path)
        spec = scorer.spec

        def score(table: pa.Table) -> dict[str, Any]:
            if spec.task == "classification":
                proba = scorer.predict_proba(table)
                return {"label": scorer.classes_[np.argmax(proba, axis=1)].tolist(), "probabilities": proba.tolist()}
            return {"value": scorer.predict(table).tolist()}

        info = {k: v for k, v in scorer.manifest.items() if k not in ("members", "files", "schema", "grouping", "state")}
        return Loaded(info, spec.schema, spec.task, score, scorer.reasons)
    sess = session(path, n_threads=1)
    meta = metadata(sess)
    schema = Schema.from_dict(meta["schema"])

    def score_onnx(table: pa.Table) -> dict[str, Any]:
        out = sess.run(None, feeds(table, schema))
        if meta["task"] == "classification":
            return {"label": out[0].tolist(), "probabilities": out[1].tolist()}
        return {"value": out[0].tolist()}

    return Loaded({k: v for k, v in meta.items() if k != "schema"}, schema, meta["task"], score_onnx)


class Holder:
    """The model being served, swapped by replacing one reference; a request keeps the one it read."""

    def __init__(self, path: Any, poll: float = 0.2):
        self.path = Path(path)
        self.poll = poll
        self.lock = threading.Lock()  # one reload at a time (watcher and /reload)
        self.signature = _signature(self.path)
        self.current: Loaded = load_export(self.path)  # the first export must load: fail at start-up
        self.refused: dict[str, Any] | None = None
        self.stop = threading.Event()

    def check(self) -> bool:
        """Load the export if it changed since the last attempt; True if a new model was swapped in."""
        with self.lock:
            sig = _signature(self.path)
            if sig is None or sig == self.signature:
                return False
            self.signature = sig  # taken before loading: a newer export written meanwhile changes it again
            try:
                new = load_export(self.path)
            except (ClusterForgetError, OSError, ValueError, KeyError, RuntimeError) as exc:
                self.refused = {"error": f"{type(exc).__name__}: {exc}", "at": time.time()}
                log.error("refused the export at %s, still serving version %s: %s", self.path,
                          self.current.version, exc)
                return False
            old = self.current
            self.current = new  # the swap: requests that already read `old` finish on it
            log.info("serving version %s (was %s)", new.version, old.version)
            return True

    def watch(self) -> None:
        while not self.stop.wait(self.poll):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad export
                log.exception("watching %s", self.path)


def _table(rows: Any, schema: Schema) -> pa.Table:
    """The rows of a JSON body as a table of the model's columns; ``ValueError`` names a bad column."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError('the body must be {"rows": [{"column": value, ...}, ...]} with at least one row')
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    if extra:
        raise ValueError(f"unknown column(s) {extra!r}; the model's columns are {list(schema.names)!r}")
    cols = []
    for name, kind in zip(schema.names, schema.kinds):
        if not any(name in r for r in rows):
            raise ValueError(f"column {name!r} is missing from every row; send it (null for a missing value)")
        values = [r.get(name) for r in rows]
        try:
            cols.append(pa.array(values, pa.string() if kind == CATEGORICAL else pa.float64()))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            want = "strings" if kind == CATEGORICAL else "numbers"
            raise ValueError(f"column {name!r} must hold {want} or null, got {values[:3]!r} ({exc})") from None
    return pa.table(cols, names=list(schema.names))


def _explain_count(explain: Any, cur: Loaded) -> int:
    """The request's ``"explain": k`` (reasons per row; 0 or absent: none), or ``ValueError`` saying why not."""
    if explain is None:
        return 0
    n = len(cur.schema.names)
    if isinstance(explain, str) and explain.isascii() and explain.isdigit() and len(explain) <= 4:
        explain = int(explain)
    if isinstance(explain, bool) or not isinstance(explain, int) or not 0 <= explain <= n:
        shown = repr(explain)[:40]
        raise ValueError(f"explain={shown} is not usable; pass the number of reasons per row, 0 to {n}")
    if explain and cur.reasons is None:
        raise ValueError("this export (ONNX) has no contributions to give reasons from; serve a bundle export")
    return explain


def make_app(holder: Holder) -> Any:
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI(title="clusterforget scoring service")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": holder.current.version}

    @app.get("/model")
    def model() -> dict[str, Any]:
        cur = holder.current
        return {**cur.info, "version": cur.version, "loaded_at": cur.loaded_at, "path": str(holder.path),
                "refused": holder.refused}

    @app.post("/reload")
    def reload() -> dict[str, Any]:
        swapped = holder.check()
        return {"swapped": swapped, "version": holder.current.version, "refused": holder.refused}

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        cur = holder.current  # this request's model, whatever is swapped in meanwhile
        body = await request.body()
        explain = request.query_params.get("explain")  # an Arrow body has no field for it
        try:
            if request.headers.get("content-type", "").startswith(ARROW_STREAM):
                table = pa.ipc.open_stream(body).read_all()
                table = _table(table.to_pylist(), cur.schema)
            else:
                import json

                doc = json.loads(body)
                table = _table(doc.get("rows") if isinstance(doc, dict) else None, cur.schema)
                explain = doc.get("explain", explain)
            top = _explain_count(explain, cur)
        except (ValueError, pa.ArrowInvalid) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        try:
            # scoring is CPU work: off the event loop, so other requests keep being accepted
            out = await _run(cur.score, table)
            if top:
                out["reasons"] = await _run(cur.reasons, table, top)
        except ClusterForgetError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return {**out, "version": cur.version}

    return app


async def _run(fn: Callable, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(export_path: Any, host: str, port: int, poll: float = 0.2) -> None:
    """Run the service in this process (``run_server`` makes sure OpenMP was configured first)."""
    uvicorn = optional("uvicorn", "the scoring service")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    holder = Holder(export_path, poll)
    watcher = threading.Thread(target=holder.watch, name="clusterforget-watch", daemon=True)
    watcher.start()
    log.info("serving %s version %s on %s:%s (pid %s)", export_path, holder.current.version, host, port, os.getpid())
    try:
        uvicorn.run(make_app(holder), host=host, port=port, log_level="warning")
    finally:
        holder.stop.set()


__all__ = ["make_app", "serve", "Holder", "load_export", "Loaded"]
