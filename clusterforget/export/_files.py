"""What every export format shares: where the export's provenance comes from, and atomic writes.

An export is read by a watcher (the scoring service) while it is written, so it must never be seen half
done: single files are written to a temporary name in the same directory, fsync'd and renamed over the
target; bundle directories are content-addressed and switched by renaming their manifest last.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..store.fs import fsync_dir, now
from ..version import __version__


def provenance(model: Any, fmt: str) -> dict[str, Any]:
    """Which model state an export holds: model version, and the bound store's version and ledger head."""
    from ..estimators import ensemble_of, store_of  # here: scoring a bundle never loads the estimators
    ens = ensemble_of(model)
    store = store_of(model)
    bound = None
    if store is not None and store.manifest is not None:
        ledger = store.manifest.get("ledger", {})
        bound = {
            "version": int(store.manifest["version"]),
            "ledger_head": ledger.get("tail"),
            "ledger_lines": ledger.get("lines"),
        }
    return {
        "export_format": fmt,
        "model_version": int(ens.version),
        "store": bound,
        "exported_at": now(),
        "library_version": __version__,
        "estimator": type(model).__name__,
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a part (temp + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
