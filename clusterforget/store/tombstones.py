"""Tombstones: keyed hashes (HMAC-SHA256) of every id ever forgotten from a store.

They let ``add_rows`` refuse a forgotten id without keeping the id: only whoever holds the key can test a
guessed id against them. Files are sorted 32-byte digests, written once and merged when there are many.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Iterable

DIGEST = 32
COMPACT_AFTER = 16  # merge tombstone files when there are more than this many


def id_message(v: Any) -> bytes:
    """The bytes an id is hashed as: type-tagged, so the int 1 and the string "1" differ."""
    if isinstance(v, str):
        return b"s:" + v.encode("utf-8")
    return b"i:" + str(int(v)).encode("ascii")


def digest(secret: bytes, row_id: Any) -> bytes:
    return hmac.new(secret, id_message(row_id), hashlib.sha256).digest()


def digests(secret: bytes, ids: Iterable[Any]) -> list[bytes]:
    """Sorted distinct digests of ``ids`` (the content of one tombstone file)."""
    return sorted({digest(secret, v) for v in ids})


def group_digest(secret: bytes, name: str) -> str:
    """How the ledger names a group whose key is a value of forgotten rows."""
    return "hmac:" + hmac.new(secret, b"g:" + name.encode("utf-8"), hashlib.sha256).hexdigest()


def parse(data: bytes) -> set[bytes]:
    return {data[i : i + DIGEST] for i in range(0, len(data), DIGEST)}


__all__ = ["DIGEST", "COMPACT_AFTER", "id_message", "digest", "digests", "group_digest", "parse"]
