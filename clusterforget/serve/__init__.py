"""The scoring service: serves an export over HTTP and swaps in each new export atomically.

``run_server(export_path, host, port)`` is what ``clusterforget serve EXPORT`` calls. The service

* answers ``POST /predict`` (``{"rows": [{"col": value, ...}, ...]}`` as JSON, or an Arrow IPC stream with
  content type ``application/vnd.apache.arrow.stream``) with ``{"label", "probabilities", "version"}``
  (regressors: ``{"value", "version"}``); input errors are 422 naming the column, never 500;
* ``GET /health``, ``GET /model`` (model version, store version and ledger head, export time, format, the
  last refused export and why);
* requires a bearer token on every route but the health probes (``/health``, ``/v2/health/live``,
  ``/v2/health/ready``: ``app.OPEN_ROUTES``) when one is set (``--token-file``, ``$CLUSTERFORGET_TOKEN``;
  ``/docs`` and ``/openapi.json`` are then off); bodies are bounded (``bodies.Limits``:
  413 past a size limit, a short 4xx for anything malformed, decoded off the event loop);
* watches the export (a bundle directory's manifest, or an ``.onnx`` file; ``POST /reload`` checks at once,
  which ``model.export(..., notify=URL)`` calls): a new export is loaded and verified off to the side, then
  swapped in by replacing one reference; a request holds the model it started with, so in-flight requests
  finish on the old one; an export that does not load is refused, logged, shown by ``/model`` and returned by
  ``/reload``, and the old model keeps serving. Loading checks every manifest field, verifies every file (and,
  with ``--key-file``, the HMAC), parses member files in a child process first (``export.isolate``: a file that
  makes LightGBM abort kills the child, not the service) and scores probe rows before the swap.

* speaks the standard protocols too (``protocols.py``, behind the same token and limits): MLflow's
  ``POST /invocations`` and KServe's v2 (``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``,
  ``/v2/models/{name}/infer``), with typed request schemas in the OpenAPI description; ``GET /metrics`` in
  Prometheus' format (``metrics.py``);
* serves a registered model: ``models:/NAME@ALIAS`` (``registry.py``) polls the alias and swaps in the version it
  moves to, with the same atomic swap and refusal rules.

Bundles are scored by ``cf.Scorer`` (bitwise as ``predict_proba``), ONNX files by onnxruntime with one
intra-op thread per request (see ``export.onnx.session``).
"""

from __future__ import annotations

import os
import sys
from typing import Any


LIMIT_OPTIONS = ("max_body_bytes", "max_rows", "max_decoded_bytes", "max_json_depth")


def run_server(export_dir: Any, host: str = "127.0.0.1", port: int = 8000, poll: float = 0.2,
               key_file: Any = None, token_file: Any = None, trust_code: bool = False,
               **limits: int | None) -> None:
    """Serve the export at ``export_dir`` (a bundle directory or an ``.onnx`` file) until interrupted.

    ``key_file``: the key the export was written with (default ``$CLUSTERFORGET_KEY(_FILE)``): every export is
    then refused unless authenticated with it. ``token_file``: a bearer token every route but the health probes requires
    (default ``$CLUSTERFORGET_TOKEN``; none: open to whoever reaches the port). ``trust_code``: load the shared
    libraries of unauthenticated compiled exports. ``limits``: ``max_body_bytes``, ``max_rows``,
    ``max_decoded_bytes``, ``max_json_depth`` (``serve.bodies.Limits``).

    OpenMP reads ``OMP_WAIT_POLICY`` when it is loaded, and ``import clusterforget`` loads it (scikit-learn),
    so when the variable is not set the process re-executes itself with ``OMP_WAIT_POLICY=PASSIVE``: spinning
    OpenMP threads would otherwise burn the cores the request threads need.
    """
    unknown = set(limits) - set(LIMIT_OPTIONS)
    if unknown:
        raise TypeError(f"run_server() got unknown limits {sorted(unknown)!r}; limits are {list(LIMIT_OPTIONS)!r}")
    if "OMP_WAIT_POLICY" not in os.environ:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        args = [sys.executable, "-m", "clusterforget.serve", str(export_dir), "--host", host, "--port", str(port),
                "--poll", str(poll)]
        if key_file is not None:
            args += ["--key-file", str(key_file)]
        if token_file is not None:
            args += ["--token-file", str(token_file)]
        if trust_code:
            args += ["--trust-code"]
        for name, value in limits.items():
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(int(value))]
        os.execve(sys.executable, args, env)
    from .app import serve
    from .bodies import Limits

    serve(export_dir, host, port, poll, key=key_file, token_file=token_file, trust_code=trust_code,
          limits=Limits.from_env(**limits))


__all__ = ["run_server"]
