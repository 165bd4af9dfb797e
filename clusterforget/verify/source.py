"""Where a verification reads from: a model and, if it has one, its store (opened read-only) and ledger.

An audit must not change what it audits: ``open_store`` builds the model from the verified files like
``cf.load`` does, but takes no lock and deletes nothing (``cf.load`` removes unreferenced files, which are
exactly what the purge check looks for).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CertificateError, StoreError
from ..store.codec import decode, encode
from ..store.commit import Store, read_manifest
from ..store.fs import LEDGER, sha


@dataclass
class Source:
    model: Any
    store: Store | None = None

    @property
    def doc(self) -> dict | None:
        return None if self.store is None else self.store.manifest


def open_store(path: Any) -> Source:
    """The model in a store and the store, read-only (verified like ``cf.load``; no lock, no cleanup)."""
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{str(p)!r} is not a directory; pass the directory given to model.save")
    store = Store(p, encoder=encode)
    doc = read_manifest(p)
    files = store.audit(doc)
    store.manifest = doc
    return Source(decode(doc, files), store)


def source_of(model_or_path: Any) -> Source:
    if isinstance(model_or_path, (str, Path)):
        return open_store(model_or_path)
    return Source(model_or_path, getattr(model_or_path, "_store", None))


def ledger_lines(store: Store) -> list[tuple[dict, bytes]]:
    """The committed ledger entries with their raw bytes (the hash chain is checked first)."""
    entries = store.ledger()
    with open(store.path / LEDGER, "rb") as f:
        raw = f.read(int(store.manifest["ledger"]["size"])).splitlines()
    return list(zip(entries, raw))


def request_line(store: Store, request_id: str) -> tuple[int, dict, bytes]:
    """(position, entry, raw line) of the last committed deletion that served ``request_id``."""
    lines = ledger_lines(store)
    found = [(i, e, raw) for i, (e, raw) in enumerate(lines) if e.get("request_id") == request_id]
    deletions = [f for f in found if f[1].get("is_deletion") and f[1].get("rows_removed")]
    if not (deletions or found):
        known = sorted({e["request_id"] for e, _ in lines if e.get("request_id")})
        raise CertificateError(
            f"no committed operation in the ledger of {str(store.path)!r} has request_id={request_id!r}; "
            f"requests recorded there: {known[:20]!r}. Pass the request_id given to forget_rows"
        )
    return (deletions or found)[-1]


def line_hash(raw: bytes) -> str:
    return sha(raw)


__all__ = ["Source", "open_store", "source_of", "ledger_lines", "request_line", "line_hash"]
