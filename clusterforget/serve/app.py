"""The FastAPI application of the scoring service, and the watcher that swaps exports in (see ``serve``)."""

from __future__ import annotations

import hmac
import json
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
from ..data import Schema
from ..errors import ClusterForgetError
from ..export import Scorer
from ..export.bundle import MANIFEST
from ..export.onnx import auth_path, feeds, metadata, read_onnx, session
from .bodies import ARROW_STREAM, BodyError, Limits, decode, is_arrow, short

fastapi = optional("fastapi", "the scoring service")
Request = fastapi.Request  # at module level: FastAPI resolves the endpoints' annotations here
log = logging.getLogger("clusterforget.serve")
TOKEN_ENV = "CLUSTERFORGET_TOKEN"
# JSON bodies up to this size (a few rows; at most a few hundred empty ones) are scored on the event loop by a
# bundle's scorer: they take less time than the hop to a worker thread and back (0.2 ms of a one-row request's
# 4.4 ms median, measured side by side); an Arrow body of this size can decode to much more. An ONNX session
# never runs on the loop: its run time is the graph's, which the service does not bound
SMALL_BODY = 2048
# what /model shows of a manifest: provenance, never a path of the serving host
INFO_KEYS = ("export_format", "model_version", "store", "exported_at", "library_version", "estimator", "task",
             "classes", "combine", "auth")


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
    scorer: Any = None  # a bundle's Scorer: the next swap reuses its unchanged members
    on_loop: bool = False  # small JSON bodies may be scored on the event loop (a bundle's scorer only)
    # one row of canonical values (``bodies.plain_row``) -> the same document ``score`` gives (a bundle's only)
    row: Callable[[list[Any]], dict[str, Any] | None] | None = None

    @property
    def version(self) -> int:
        return int(self.info["model_version"])


def _signature(path: Path) -> tuple | None:
    """What changes when an export is replaced: the inode, size and mtime of the file its writer writes last.

    A bundle's manifest is renamed in after its members; an ONNX graph after its ``.auth.json`` (``write_onnx``):
    a poll between the two writes sees the old graph unchanged and waits, where a signature including the
    sidecar would load the old graph with the new HMAC and refuse it.
    """
    return _stat(path / MANIFEST if path.is_dir() else path)


def _stat(target: Path) -> tuple | None:
    try:
        st = target.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _written(path: Path) -> tuple:
    """Every file a writer of the export replaces: a load that fails while this changes met a writer midway."""
    return (_signature(path),) if path.is_dir() else (_stat(path), _stat(auth_path(path)))


def load_export(path: Path, key: bytes | None = None, trust_code: bool = False, checker: Any = None,
                previous: Loaded | None = None) -> Loaded:
    """Load and verify the export at ``path``; raises (and changes nothing) if it is broken.

    Bundles: every manifest field checked, every file verified (and the HMAC with ``key``), member files parsed
    by ``checker`` (a child process) before they are parsed here, probe rows scored. ONNX: the graph's bytes
    verified (HMAC with ``key``), parsed and probed by ``checker``, then loaded from those bytes.
    """
    if path.is_dir():
        # members unchanged since ``previous`` (same verified files, meta, schema) are reused, not parsed again
        scorer = Scorer(path, key=key, trust_code=trust_code, checker=checker,
                        previous=None if previous is None else previous.scorer)
        spec = scorer.spec

        def rendered(values: np.ndarray) -> dict[str, Any]:  # class probabilities, or a regressor's values
            if spec.task == "classification":
                return {"label": scorer.classes_[np.argmax(values, axis=1)].tolist(), "probabilities": values.tolist()}
            return {"value": values.reshape(-1).tolist()}

        def score(table: pa.Table) -> dict[str, Any]:
            return rendered(scorer.predict_proba(table) if spec.task == "classification" else scorer.predict(table))

        def score_row(values: list[Any]) -> dict[str, Any] | None:
            raw = scorer.raw_row(values)  # what ``score`` gives for that row as a one-row table, bit for bit
            return None if raw is None else rendered(raw)

        info = {k: scorer.manifest[k] for k in INFO_KEYS if k in scorer.manifest}
        info["authenticated"] = scorer.authenticated
        return Loaded(info, spec.schema, spec.task, score, scorer.reasons, scorer=scorer, on_loop=True, row=score_row)
    data = read_onnx(path, key)
    if checker is not None:
        checker.check_graph(data, path)  # onnxruntime's parser first in the child, where its crash is a refusal
    sess = session(path, n_threads=1, data=data)
    meta = metadata(sess)
    if type(meta.get("model_version")) is not int or meta.get("task") not in ("classification", "regression"):
        raise ValueError(f"the ONNX export's metadata is not a clusterforget export's ({short(meta, 120)})")
    schema = Schema.from_dict(meta["schema"])

    def score_onnx(table: pa.Table) -> dict[str, Any]:
        out = sess.run(None, feeds(table, schema))
        if meta["task"] == "classification":
            return {"label": out[0].tolist(), "probabilities": out[1].tolist()}
        return {"value": out[0].tolist()}

    info = {k: v for k, v in meta.items() if k in INFO_KEYS}
    info["authenticated"] = key is not None
    return Loaded(info, schema, meta["task"], score_onnx)


class Holder:
    """The model being served, swapped by replacing one reference; a request keeps the one it read."""

    def __init__(self, path: Any, poll: float = 0.2, key: bytes | None = None, trust_code: bool = False,
                 isolate: bool = True, source: Any = None):
        from ..export.isolate import MemberChecker

        self.path = Path(path)
        self.source = source  # None: the export at ``path``; else a registry (``registry.RegistrySource``)
        self.name = None if source is None else source.name
        self.poll = poll
        self.key = key
        self.trust_code = trust_code
        self.checker = MemberChecker() if isolate else None
        if self.checker is not None:
            self.checker.start()
        self.lock = threading.Lock()  # one reload at a time (watcher and /reload)
        self.signature = self._sig()
        self.current: Loaded = self._load()  # the first export must load: fail at start-up
        self.refused: dict[str, Any] | None = None
        self.reloads = 0  # swaps and refusals, for /metrics
        self.refusals = 0
        self.stop = threading.Event()

    def _sig(self) -> Any:
        """What changes when the export is replaced (a registry source: the version its alias points to)."""
        return _signature(self.path) if self.source is None else self.source.signature()

    def _load(self) -> Loaded:
        def load(path: Path) -> Loaded:
            return load_export(path, self.key, self.trust_code, self.checker, getattr(self, "current", None))

        return load(self.path) if self.source is None else self.source.load(load, self.signature)

    def check(self) -> bool:
        """Load the export if it changed since the last attempt; True if a new model was swapped in."""
        with self.lock:
            sig = self._sig()
            if sig is None or sig == self.signature:
                return False
            self.signature = sig  # taken before loading: a newer export written meanwhile changes it again
            before = None if self.source is not None else _written(self.path)
            try:
                new = self._load()
            except Exception as exc:  # noqa: BLE001 - any failure to load is a refusal; the old model keeps serving
                if before is not None and _written(self.path) != before:
                    # a writer replaced files while they were read (a new HMAC beside the graph read, members
                    # deleted after a newer manifest): no refusal; its last write changes the signature again
                    log.info("the export changed while it was loaded; waiting for its writer to finish")
                    return False
                message = f"{type(exc).__name__}: {exc}"
                # /model and /reload show it to clients: never a path of the serving host (the log keeps it)
                self.refused = {"error": short(self.without_paths(message), 1000), "at": time.time(),
                                "serving": self.current.version}
                self.refusals += 1
                log.error("refused the export, still serving version %s: %s", self.current.version,
                          short(message, 1000))
                return False
            old = self.current
            self.current = new  # the swap: requests that already read `old` finish on it
            self.refused = None
            self.reloads += 1
            log.info("serving version %s (was %s)", new.version, old.version)
            return True

    def without_paths(self, message: str) -> str:
        """``message`` with the export's location (as given, absolute, resolved) and temporary folders replaced."""
        import re
        import tempfile

        places = {str(self.path), str(self.path.absolute()), str(self.path.resolve())}
        for place in sorted(places, key=len, reverse=True):
            if len(place) > 1:
                message = message.replace(place, "<export>")
        tmp = re.escape(tempfile.gettempdir())  # a registry version is downloaded there
        return re.sub(tmp + r"[^\s'\"]*", "<download>", message)

    def watch(self) -> None:
        while not self.stop.wait(self.poll):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad export
                log.exception("watching the export")

    def close(self) -> None:
        self.stop.set()
        if self.checker is not None:
            self.checker.close()


def read_token(token_file: Any = None) -> str | None:
    """The bearer token: the first line of ``token_file``, else ``$CLUSTERFORGET_TOKEN``; None when neither."""
    if token_file is not None:
        token = Path(token_file).read_text(encoding="utf-8-sig").strip()
        if len(token) < 16:
            raise ValueError(f"the token in {str(token_file)!r} has {len(token)} characters; use at least 16 random ones")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


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


# the probes an orchestrator polls without credentials; every other route needs the token when one is set
OPEN_ROUTES = ("/health", "/v2/health/live", "/v2/health/ready")


class Refused(Exception):
    """A request refused before its endpoint runs (no token, a body over the limit): answered as ``{"error"}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, short(message), headers


def make_app(holder: Holder, limits: Limits | None = None, token: str | None = None, name: str | None = None) -> Any:
    from types import SimpleNamespace

    from fastapi.responses import JSONResponse, Response
    from starlette.routing import Match, Route

    from .metrics import instrument
    from .protocols import add_protocols

    limits = limits or Limits()
    # the interactive docs describe every endpoint to whoever asks: off when the service is protected
    docs = {} if token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    direct: dict[str, tuple[Any, Any]] = {}  # path -> (a scoring route, its app counted): POSTs past the stack
    own_middleware = [-1]  # how many middleware this module adds (set below; none are bypassed until then)

    class App(fastapi.FastAPI):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            # only while the stack holds just this module's middleware: one a caller adds to the app (their own
            # authentication, CORS, logging) must see every request, so then every request takes the stack
            found = (direct.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
                     and len(self.user_middleware) == own_middleware[0] else None)
            if found is not None:
                match, child = found[0].matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    return await _served(found[1], scope, receive, send)
            await super().__call__(scope, receive, send)

    app = App(title="clusterforget scoring service", **docs)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Any:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    def refused(status: int, message: str) -> Any:
        return JSONResponse({"error": short(message)}, status_code=status)

    async def require_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())):
            raise Refused(401, "this service needs a bearer token: Authorization: Bearer <token>",
                          {"WWW-Authenticate": "Bearer"})

    async def bounded_body(request: Request) -> bytes:
        """The body, read in chunks under ``max_body_bytes`` (never more is held), or the 413."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise Refused(413, f"the body has {declared} bytes, over the limit of {limits.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise Refused(413, f"the body is over the limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # one dependency guards every FastAPI route but the probes: a route added later is covered without a call of
    # its own
    routes = fastapi.APIRouter(dependencies=[fastapi.Depends(require_token)])
    probes = fastapi.APIRouter()
    # The scoring routes are plain Starlette routes, first in the router: FastAPI's dependency solving and route
    # matching took most of a one-row request's time (measured). Each takes the token and the bounded body through
    # the same two functions, before its handler sees a byte; the tests try every route of both kinds.
    scoring: list[Any] = []
    described: dict[str, dict[str, Any]] = {}

    def scoring_route(path: str, handler: Callable[[Request, bytes], Any], summary: str,
                      doc: dict[str, Any] | None = None) -> None:
        async def endpoint(request: Request) -> Any:
            request.scope["route"] = route  # what /metrics labels it by (FastAPI sets it for its own routes only)
            try:
                await require_token(request)
                body = await bounded_body(request)
            except Refused as exc:  # answered here: the direct path (below) has no exception handlers
                return await _refused(request, exc)
            return await handler(request, body)

        route = Route(path, endpoint, methods=["POST"])
        scoring.append(route)
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in route.param_convertors]
        described[path] = {"summary": summary, **({"parameters": params} if params else {}), **(doc or {}),
                           "responses": {"200": {"description": "Successful Response"}}}

    # the standard protocols and /metrics take the same token, body limit and off-the-loop decoding
    # (the v2 name: the registered model's, or the export's file name)
    model_name = name or holder.name or holder.path.stem
    add_protocols(app, routes, probes, holder, model_name,
                  SimpleNamespace(run=_run, limits=limits, route=scoring_route))
    counted = instrument(app, holder, routes)

    @probes.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": holder.current.version}

    @routes.get("/model")
    def model() -> dict[str, Any]:
        cur = holder.current
        return {**cur.info, "version": cur.version, "loaded_at": cur.loaded_at, "refused": holder.refused,
                "limits": limits.__dict__, "token_required": token is not None}

    @routes.post("/reload")
    async def reload() -> Any:
        swapped = await _run(holder.check)  # loading is file and CPU work: off the event loop
        return {"swapped": swapped, "version": holder.current.version, "refused": holder.refused}

    async def predict(request: Request, body: bytes) -> Any:
        cur = holder.current  # this request's model, whatever is swapped in meanwhile
        try:
            # decoding, scoring and rendering are CPU work: off the event loop, so /health and other requests
            # keep being answered during a large one
            args = (cur, body, request.headers.get("content-type", ""), limits, request.query_params.get("explain"))
            if (cur.on_loop and len(body) <= SMALL_BODY and not is_arrow(args[2])
                    and "explain" not in request.query_params and b'"explain"' not in body):
                # a few JSON rows cost less than the hop to a worker thread and back (tens of microseconds)
                content, request.scope["clusterforget.rows"] = _answer(*args)
            else:
                content, request.scope["clusterforget.rows"] = await _run(_answer, *args)  # Arrow: no field
        except BodyError as exc:
            return refused(exc.status, exc.message)
        except ClusterForgetError as exc:
            return refused(422, str(exc))
        return Response(content, media_type="application/json")

    scoring_route("/predict", predict, "Score rows: {\"rows\": [{column: value}]} as JSON, or an Arrow IPC stream")

    app.include_router(routes)
    app.include_router(probes)
    app.router.routes[:0] = scoring
    # A POST to a scoring route's own path goes to the route directly, counted, past FastAPI's middleware stack and
    # router (most of what the framework added to a one-row request, measured); every other request, and any other
    # path (another model's name, a trailing slash), takes the stack. The route keeps every guard: the token and the
    # bounded body are its own first steps.
    for route in scoring:
        direct[route.path.replace("{model_name}", model_name)] = (route, counted(route.app))
    own_middleware[0] = len(app.user_middleware)
    inner = app.openapi

    def openapi() -> dict[str, Any]:
        schema = inner()
        for path, doc in described.items():  # FastAPI describes its own routes only
            schema.setdefault("paths", {}).setdefault(path, {}).setdefault("post", doc)
        return schema

    app.openapi = openapi
    return app


async def _served(app: Any, scope: Any, receive: Any, send: Any) -> None:
    """``app`` called as the stack calls it: a 500 for what it raises before answering, as Starlette's
    ServerErrorMiddleware does (then the server logs it)."""
    from starlette.responses import PlainTextResponse

    started = False

    async def sent(message: Any) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, sent)
    except Exception:
        if not started:
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
        raise


def _answer(cur: Loaded, body: bytes, content_type: str, limits: Limits, explain: Any = None) -> tuple[bytes, int]:
    # one plain JSON row goes to the scorer as values, not as Arrow arrays and back (most of its time otherwise);
    # reasons need the table, so a request for them takes the table path from the start
    data, options = decode(body, content_type, cur.schema, limits, plain=cur.row is not None and not explain)
    try:
        top = _explain_count(options.get("explain", explain), cur)
    except ValueError as exc:
        raise BodyError(422, str(exc)) from None
    if isinstance(data, list):
        out = cur.row(data)
        if out is not None:
            return json.dumps({**out, "version": cur.version}).encode(), 1
        data = decode(body, content_type, cur.schema, limits)[0]  # no member can predict: the table path says why
    out = cur.score(data)
    if top:
        out["reasons"] = cur.reasons(data, top)
    return json.dumps({**out, "version": cur.version}).encode(), data.num_rows


async def _run(fn: Callable, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(export_path: Any, host: str, port: int, poll: float = 0.2, key: Any = None, token_file: Any = None,
          trust_code: bool = False, limits: Limits | None = None) -> None:
    """Run the service in this process (``run_server`` makes sure OpenMP was configured first)."""
    from ..store.keys import resolve_key

    uvicorn = optional("uvicorn", "the scoring service")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = read_token(token_file)
    source = None
    if isinstance(export_path, str) and export_path.startswith("models:/"):
        from .registry import RegistrySource

        source, poll = RegistrySource(export_path), max(poll, 0.5)  # each poll is a call to the registry
    holder = Holder(export_path, poll, key=resolve_key(key), trust_code=trust_code, source=source)
    watcher = threading.Thread(target=holder.watch, name="clusterforget-watch", daemon=True)
    watcher.start()
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a bearer token: anyone who reaches the port can score and reload; "
                    "pass --token-file or set $%s", host, TOKEN_ENV)
    log.info("serving %s version %s on %s:%s (pid %s)", export_path, holder.current.version, host, port, os.getpid())
    try:
        # no access log: at level warning its lines are dropped anyway, after being built for every request
        uvicorn.run(make_app(holder, limits, token), host=host, port=port, log_level="warning", access_log=False)
    finally:
        holder.close()


__all__ = ["make_app", "serve", "Holder", "load_export", "Loaded", "Limits", "read_token", "ARROW_STREAM"]
