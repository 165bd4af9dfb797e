"""Exports of a fitted ensemble for scoring services; every format reads ``scoring.ScoringSpec``.

``export(model, path, format)`` is ``model.export`` (registered as the estimators' ``export`` hook, so the
estimators never import this layer); ``export_store`` is what ``clusterforget export STORE`` calls. Formats:

* ``"bundle"`` (``bundle.py``): a JSON manifest + native member files, scored by ``Scorer`` bitwise as
  ``predict_proba``;
* ``"onnx"`` (``onnx.py``): one self-contained ONNX graph (``ai.onnx.ml`` TreeEnsemble, double precision);
* ``"compiled"`` (``compiled.py``): a bundle whose members are also treelite/tl2cgen shared libraries.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .. import estimators as _estimators
from ..errors import ExportError
from .bundle import Scorer, write_bundle
from .compiled import write_compiled


def _onnx(model: Any, path: Any) -> dict[str, Any]:
    from .onnx import write_onnx

    return write_onnx(model, path)


FORMATS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {"bundle": write_bundle, "onnx": _onnx,
                                                              "compiled": write_compiled}


def _notify(url: str, info: dict[str, Any]) -> None:
    """Tell a scoring service at ``url`` to reload now instead of at its next poll of the export."""
    req = urllib.request.Request(url.rstrip("/") + "/reload", data=json.dumps(info).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
    except OSError as exc:
        raise ExportError(
            f"the export at {info['path']!r} was written, but the service at {url!r} could not be notified ({exc}); "
            "it will pick the export up when it next polls, or pass notify=None"
        ) from exc


def export(model: Any, path: Any, format: str = "bundle", notify: str | None = None) -> dict[str, Any]:
    """Write ``model`` for a scoring service; returns what was written (format, path, versions, seconds).

    Parameters
    ----------
    path : str or Path
        A directory for ``"bundle"``, a file for ``"onnx"``. The export is written atomically: a reader (a
        watching service) sees the previous export or the new one, never a part.
    format : {"bundle", "onnx", "compiled"}
    notify : str, optional
        Base URL of a ``clusterforget serve`` service (``"http://127.0.0.1:8000"``) to tell to reload now.
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not an export format; use one of {sorted(FORMATS)!r}")
    t0 = time.perf_counter()
    doc = FORMATS[format](model, path)
    info = {
        "format": format,
        "path": str(Path(path)),
        "model_version": doc["model_version"],
        "store": doc["store"],
        "members": len(doc["members"]),
        "seconds": time.perf_counter() - t0,
    }
    if notify is not None:
        _notify(notify, info)
    return info


def export_store(store_path: Any, format: str, out: Any) -> dict[str, Any]:
    """Export the model in a store (``clusterforget export STORE --format F -o OUT``); see ``export``."""
    from ..store import load

    return export(load(store_path), out, format=format)


_estimators.register_hook("export", export)

__all__ = ["export", "export_store", "Scorer", "FORMATS"]
