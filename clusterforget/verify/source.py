"""Where a verification reads from: a model and, if it has one, its store (opened read-only) and ledger.

An audit must not change what it audits: ``open_store`` builds the model from the verified files like
``cf.load`` does, but takes no lock and deletes nothing (``cf.load`` removes unreferenced files, which are
exactly what the purge check looks for). It authenticates like ``cf.load`` too: a store written with a key
is refused without it, and with it the manifest's and every ledger line's HMAC are checked before anything
is read (``Store.authenticated``, the sequence ``cf.load`` runs); a bound model's store is authenticated again on disk before a check reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CertificateError, StoreError
from ..estimators import store_of
from ..store.codec import decode, encode
from ..store import ledger
from ..store.commit import Store, read_manifest
from ..store.fs import LEDGER
from ..store.keys import reader_key


@dataclass
class Source:
    """A model and its store as one verification reads them: the ledger is read once per source (every check
    and the certificate read the same lines, checked against the same manifest)."""

    model: Any
    store: Store | None = None
    _lines: list[tuple[dict, bytes]] | None = field(default=None, init=False, repr=False)

    @property
    def doc(self) -> dict | None:
        return None if self.store is None else self.store.manifest

    def lines(self) -> list[tuple[dict, bytes]]:
        """The committed ledger entries with their raw bytes, oldest first (the hash chain checked against the
        manifest this source holds)."""
        if self._lines is None:
            entries = ledger.read(self.store.path, self.doc)
            with open(self.store.path / LEDGER, "rb") as f:
                raw = f.read(int(self.doc["ledger"]["size"])).splitlines()
            self._lines = list(zip(entries, raw))
        return self._lines


def opening_key(path: Any, store_key: Any = None, default: Any = None) -> Any:
    """The key to open the store at ``path`` with (``open_store``'s ``key``); the one rule for every reader.

    A key given for the store (``store_key``: bytes, hex, a key file) is binding: ``open_store`` refuses the
    store unless it is authenticated by that key, so a store whose ``auth`` section was stripped is never read
    as a store saved without a key. ``store_key=False`` reads without a key. Without ``store_key``,
    ``default`` (a signing key, which doubles as the store's key) opens a store whose manifest says it is
    authenticated, and a store saved without a key is read as it is (its result says it is not authenticated).
    """
    if store_key is not None:
        return store_key
    if default is None:
        return None  # as cf.load: $CLUSTERFORGET_KEY / $CLUSTERFORGET_KEY_FILE, or no key
    return default if read_manifest(Path(path)).get("auth") is not None else False


def open_store(path: Any, key: Any = None) -> Source:
    """The model in a store and the store, read-only (verified and authenticated like ``cf.load``; no lock,
    no cleanup)."""
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{str(p)!r} is not a directory; pass the directory given to model.save")
    store = Store(p, encoder=encode, key=reader_key(key))
    doc, files = store.authenticated()  # as cf.load
    store.manifest = doc
    return Source(decode(doc, files), store)


def source_of(model_or_path: Any, key: Any = None) -> Source:
    if isinstance(model_or_path, (str, Path)):
        return open_store(model_or_path, key)
    store = store_of(model_or_path)
    if store is not None and store.key is not None:
        # the model was authenticated when loaded; what the checks read now is the directory as it is
        doc, _ = Store(store.path, key=store.key).authenticated(files=False)
        if doc.get("commit") != (store.manifest or {}).get("commit"):
            raise StoreError(
                f"the store {str(store.path)!r} is at version {doc.get('version')}, not the version "
                f"{store.version} this model is bound to; cf.load it again and verify that")
    return Source(model_or_path, store)


def request_lines(src: Source, request_id: str) -> list[tuple[int, dict, bytes]]:
    """(position, entry, raw line) of every committed operation that served ``request_id``, oldest first.

    A request may take several operations (a deferred forget, then ``retrain_pending``; two batches of ids):
    checks and certificates cover all of them, never only the last."""
    lines = src.lines()
    found = [(i, e, raw) for i, (e, raw) in enumerate(lines) if e.get("request_id") == request_id]
    if not found:
        known = sorted({e["request_id"] for e, _ in lines if e.get("request_id")})
        raise CertificateError(
            f"no committed operation in the ledger of {str(src.store.path)!r} has request_id={request_id!r}; "
            f"requests recorded there: {known[:20]!r}. Pass the request_id given to forget_rows"
        )
    return found


def request_line(src: Source, request_id: str) -> tuple[int, dict, bytes]:
    """(position, entry, raw line) of the last committed deletion that served ``request_id``."""
    found = request_lines(src, request_id)
    deletions = [f for f in found if f[1].get("is_deletion") and f[1].get("rows_removed")]
    return (deletions or found)[-1]


__all__ = ["Source", "open_store", "opening_key", "source_of", "request_lines", "request_line"]
