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
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from ..errors import ExportError
from .bundle import Scorer, write_bundle
from .compiled import write_compiled


def _onnx(model: Any, path: Any, key: Any = None) -> dict[str, Any]:
    from .onnx import write_onnx

    return write_onnx(model, path, key=key)


FORMATS: dict[str, Callable[..., dict[str, Any]]] = {"bundle": write_bundle, "onnx": _onnx,
                                                      "compiled": write_compiled}


def _notify(url: str, info: dict[str, Any], token: Any = None) -> dict[str, Any]:
    """Tell a scoring service at ``url`` to reload now instead of at its next poll of the export; returns its
    answer (``swapped``, ``version``, ``refused``: why the export was refused, if it was)."""
    headers = {"Content-Type": "application/json"}
    token = token if token is not None else os.environ.get("CLUSTERFORGET_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url.rstrip("/") + "/reload", data=json.dumps(info).encode(), method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read(1 << 20) or b"{}")
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"the export at {info['path']!r} was written, but the service at {url!r} could not be notified ({exc}); "
            "it will pick the export up when it next polls, or pass notify=None"
        ) from exc
    if isinstance(answer, dict) and answer.get("refused") and not answer.get("swapped"):
        raise ExportError(
            f"the export at {info['path']!r} was written, but the service at {url!r} refused it and keeps serving "
            f"version {answer.get('version')!r}: {answer['refused'].get('error') if isinstance(answer['refused'], dict) else answer['refused']}"
        )
    return answer if isinstance(answer, dict) else {}


def export(model: Any, path: Any, format: str = "bundle", notify: str | None = None, key: Any = None,
           token: Any = None) -> dict[str, Any]:
    """Write ``model`` for a scoring service; returns what was written (format, path, versions, seconds).

    Parameters
    ----------
    path : str or Path
        A directory for ``"bundle"``, a file for ``"onnx"``. The export is written atomically: a reader (a
        watching service) sees the previous export or the new one, never a part.
    format : {"bundle", "onnx", "compiled"}
    notify : str, optional
        Base URL of a ``clusterforget serve`` service (``"http://127.0.0.1:8000"``) to tell to reload now.
        The service's answer (swapped, or why the export was refused) is returned under ``"reload"``.
    key : bytes, str or path, optional
        Authenticate the export with this key (as ``model.save(path, key=...)``; default
        ``$CLUSTERFORGET_KEY`` / ``$CLUSTERFORGET_KEY_FILE``): the manifest (bundle, compiled) or a
        ``<file>.auth.json`` beside the graph (onnx, in the manifest's format) carries an HMAC-SHA256 under it, and ``cf.Scorer(path,
        key=...)`` / ``clusterforget serve --key-file`` refuse anything changed without it.
    token : str, optional
        The service's bearer token for ``notify`` (default ``$CLUSTERFORGET_TOKEN``).
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not an export format; use one of {sorted(FORMATS)!r}")
    t0 = time.perf_counter()
    doc = FORMATS[format](model, path, key=key)
    info = {
        "format": format,
        "path": str(Path(path)),
        "model_version": doc["model_version"],
        "store": doc["store"],
        "members": len(doc["members"]),
        "seconds": time.perf_counter() - t0,
    }
    if notify is not None:
        info["reload"] = _notify(notify, info, token)
    return info


def export_store(store_path: Any, format: str, out: Any, key: Any = None) -> dict[str, Any]:
    """Export the model in a store (``clusterforget export STORE --format F -o OUT``); see ``export``."""
    from ..store import load

    return export(load(store_path), out, format=format, key=key)


def register() -> None:
    """Plug ``export`` into the estimators as ``model.export`` (the package does it when it loads the estimators;
    this module does not import them, so that ``cf.Scorer`` never loads scikit-learn)."""
    from .. import estimators
    from .bundle import bundle_document, spec_from_bundle

    estimators.register_hook("export", export)
    # what a fitted model pickles as (``_ForgetBase.__getstate__``): the bundle's manifest and files, in memory
    estimators.register_hook("scoring_document", bundle_document)
    estimators.register_hook("scoring_spec", spec_from_bundle)

__all__ = ["export", "export_store", "Scorer", "FORMATS", "register"]
