"""Serving a registered model: ``models:/name@alias`` is polled, and a moved alias is swapped in.

``RegistrySource`` is the holder's source (``app.Holder(source=...)``): its signature is the version the alias
points to, resolved at every poll (one registry call). When it changes, that version's artifact is downloaded to a
fresh temporary folder and loaded as a bundle export is (``load_export``: every field checked, every file verified,
the key's HMAC when there is one), then swapped in by the holder's one-reference swap, or refused (logged, shown by
``/model``) with the old model still serving: the same rules as for a watched export directory. The download is
removed once loaded (a ``cf.Scorer`` holds its verified files in memory).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..mlflow import download_bundle, resolve


class RegistrySource:
    def __init__(self, uri: str):
        self.uri = uri
        self.name = resolve(uri)[0]  # resolved at start: a URI that names nothing fails the start-up

    def signature(self) -> Any:
        try:
            return resolve(self.uri)[1]
        except Exception:  # noqa: BLE001 - a registry that does not answer now: keep serving, ask again later
            return None

    def load(self, load_export: Callable[[Path], Any], version: Any) -> Any:
        version = version if isinstance(version, int) else resolve(self.uri)[1]
        tmp = tempfile.mkdtemp(prefix="clusterforget-registry-")
        try:
            loaded = load_export(download_bundle(self.name, version, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        loaded.info["registry"] = {"uri": self.uri, "name": self.name, "version": version}
        return loaded


__all__ = ["RegistrySource"]
