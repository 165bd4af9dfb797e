"""Tombstones: keyed hashes (HMAC-SHA256) of every id ever forgotten from a store, and ``Names``, the one way
a store names ids and groups.

They let ``add_rows`` refuse a forgotten id without keeping the id: only whoever holds the key can test a
guessed id against them. Files are sorted 32-byte digests, written once and merged when there are many.

``Names`` (got from ``Store.names()``, which picks the key: the one kept outside the store when there is one,
else the store's ``secret.key``) is what the ledger, the tombstones, the purge and exact checks, certificates
and the command line all hash ids and group names with; two keys in one store would make a check look for
digests nobody wrote.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
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


def group_digest(secret: bytes, name: str) -> str:
    """How the ledger names a group whose key is a value of forgotten rows."""
    return "hmac:" + hmac.new(secret, b"g:" + name.encode("utf-8"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short name of a key (not the key): says which key a store, a digest, an export or a certificate's
    signature expects, without revealing it. The one derivation of a key's id."""
    return hmac.new(key, b"clusterforget key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Names:
    """Ids and group names as a store records them: HMAC-SHA256 under its naming key."""

    key: bytes
    keyed: bool  # the key is kept outside the store (an authenticated store)

    def __repr__(self) -> str:  # never print the key
        return f"Names(key_id={self.key_id!r}, keyed={self.keyed})"

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def id(self, row_id: Any) -> bytes:
        return digest(self.key, row_id)

    def ids(self, values: Iterable[Any]) -> set[bytes]:
        return {digest(self.key, v) for v in values}

    def group(self, name: str) -> str:
        return group_digest(self.key, name)

    def group_names(self, name: str) -> set[str]:
        """Every way a ledger line can name the group ``name``: plain (shards and clusters) or hashed."""
        return {name, self.group(name)}


def parse(data: bytes) -> set[bytes]:
    return {data[i : i + DIGEST] for i in range(0, len(data), DIGEST)}


__all__ = ["DIGEST", "COMPACT_AFTER", "Names", "key_id", "id_message", "digest", "group_digest", "parse"]
