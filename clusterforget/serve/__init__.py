"""The scoring service: serves an export over HTTP and swaps in each new export atomically.

``run_server(export_path, host, port)`` is what ``clusterforget serve EXPORT`` calls. The service

* answers ``POST /predict`` (``{"rows": [{"col": value, ...}, ...]}`` as JSON, or an Arrow IPC stream with
  content type ``application/vnd.apache.arrow.stream``) with ``{"label", "probabilities", "version"}``
  (regressors: ``{"value", "version"}``); input errors are 422 naming the column, never 500;
* ``GET /health``, ``GET /model`` (model version, store version and ledger head, export time, format, the
  last refused export and why);
* watches the export (a bundle directory's manifest, or an ``.onnx`` file; ``POST /reload`` checks at once,
  which ``model.export(..., notify=URL)`` calls): a new export is loaded and verified off to the side, then
  swapped in by replacing one reference; a request holds the model it started with, so in-flight requests
  finish on the old one; an export that does not load is refused, logged, and the old model keeps serving.

Bundles are scored by ``cf.Scorer`` (bitwise as ``predict_proba``), ONNX files by onnxruntime with one
intra-op thread per request (see ``export.onnx.session``).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def run_server(export_dir: Any, host: str = "127.0.0.1", port: int = 8000, poll: float = 0.2) -> None:
    """Serve the export at ``export_dir`` (a bundle directory or an ``.onnx`` file) until interrupted.

    OpenMP reads ``OMP_WAIT_POLICY`` when it is loaded, and ``import clusterforget`` loads it (scikit-learn),
    so when the variable is not set the process re-executes itself with ``OMP_WAIT_POLICY=PASSIVE``: spinning
    OpenMP threads would otherwise burn the cores the request threads need.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        args = [sys.executable, "-m", "clusterforget.serve", str(export_dir), "--host", host, "--port", str(port),
                "--poll", str(poll)]
        os.execve(sys.executable, args, env)
    from .app import serve

    serve(export_dir, host, port, poll)


__all__ = ["run_server"]
