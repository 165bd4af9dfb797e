"""Authenticated stores: the manifest and every ledger line carry an HMAC under a key kept outside the store.

Checksums (sha256 of every file, the manifest's own checksum, the ledger's hash chain) catch accidents: a
torn write, a flipped bit, a file from another version. They do not stop someone with write access to the
directory, who can change a file and recompute them all. With a key (``store.keys.resolve_key``: an
argument, ``$CLUSTERFORGET_KEY`` or ``$CLUSTERFORGET_KEY_FILE``) that is not in the store:

* the manifest records ``auth`` (scheme, the ledger line from which lines are signed, a key id) and a
  ``mac``: HMAC-SHA256 of its checksum, which covers every file's sha256, the tombstone list and the ledger
  tail; so no file, tombstone or committed ledger line can change without the key;
* every ledger line from ``auth.since`` on carries a ``mac`` over the rest of the line; its ``prev`` field
  chains every earlier line, so lines written before the store was authenticated are covered too;
* tombstones, the ledger's forgotten-id digests and hashed group names are keyed with the key, so a copy of
  the directory cannot be used to test guessed ids.

A store written with a key is refused without it, and a store without ``auth`` is refused with a key
(stripping the authentication is a modification). Not covered: replacing the whole store by an older
authenticated version of itself (keep the latest version number elsewhere to detect a rollback).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from ..errors import AuthenticationError, quoted
from . import tombstones
from .fs import LEDGER, dumps

SCHEME = "hmac-sha256"


def mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


key_id = tombstones.key_id


def sign_line(line: dict, key: bytes) -> dict:
    """The ledger line with its ``mac`` (over the line's canonical JSON without it)."""
    body = {k: v for k, v in line.items() if k != "mac"}
    return {**body, "mac": mac(key, b"ledger:" + dumps(body))}


def sign_manifest(doc: dict, key: bytes) -> None:
    """Add ``mac`` to a manifest whose ``checksum`` is set (the checksum excludes ``mac``)."""
    doc["mac"] = mac(key, b"manifest:" + doc["checksum"].encode("ascii"))


# How a refusal names what it refuses: a store (cf.load, verify) or an export (cf.Scorer, the service)
_WORDS = {
    "store": {
        "subject": "the store {p}", "manifest": "the manifest of {p}", "made": "written",
        "pass": "cf.load(path, key=...), or set $CLUSTERFORGET_KEY / $CLUSTERFORGET_KEY_FILE",
        "unsigned": "the store was written without a key, or its authentication was removed. Load it with "
                    "key=False only if you trust everyone who could write to it",
        "modified": " (file checksums, tombstones or the ledger tail changed); do not use this store",
    },
    "export": {
        "subject": "the export {p}", "manifest": "the manifest of the export {p}", "made": "exported",
        "pass": "cf.Scorer(path, key=...), clusterforget serve EXPORT --key-file F, or "
                "$CLUSTERFORGET_KEY / $CLUSTERFORGET_KEY_FILE",
        "unsigned": "it was exported without a key, or its authentication was removed; export it again with key=...",
        "modified": "; do not serve it",
    },
}


def check_manifest(doc: dict, key: bytes | None, path: Path, what: str = "store") -> bool:
    """Refuse a manifest (of a ``what``: ``"store"`` or ``"export"``) whose authentication does not match the key
    given (or not given); True if it was verified under the key."""
    words = {k: v.replace("{p}", repr(str(path))) for k, v in _WORDS[what].items()}
    auth = doc.get("auth")
    kid = quoted(auth.get("key_id") if isinstance(auth, dict) else auth)
    if key is None:
        if auth is not None:
            raise AuthenticationError(f"{words['subject']} is authenticated (key id {kid}); pass its key: "
                                      f"{words['pass']}")
        return False
    if not isinstance(auth, dict) or "mac" not in doc:
        raise AuthenticationError(f"{words['manifest']} is not authenticated, but a key was given: "
                                  f"{words['unsigned']}")
    if auth.get("scheme") != SCHEME or auth.get("key_id") != key_id(key):
        raise AuthenticationError(
            f"{words['subject']} was authenticated with another key (key id {kid}, this key's id is "
            f"{key_id(key)!r}); pass the key it was {words['made']} with"
        )
    if not hmac.compare_digest(str(doc["mac"]), mac(key, b"manifest:" + str(doc.get("checksum")).encode("ascii"))):
        raise AuthenticationError(f"{words['manifest']} fails its HMAC under the key: it was modified without the "
                                  f"key{words['modified']}")
    return True


def check_ledger(path: Path, doc: dict, key: bytes) -> None:
    """Every committed ledger line from ``auth.since`` on carries a valid ``mac`` (the chain is checked by
    ``ledger.read``; the manifest's mac covers its tail)."""
    size, since = int(doc["ledger"]["size"]), int(doc["auth"].get("since", 0))
    with open(path / LEDGER, "rb") as f:
        data = f.read(size)
    for i, raw in enumerate(data.splitlines()):
        if i < since:
            continue
        line: Any = json.loads(raw)
        if not isinstance(line, dict) or not hmac.compare_digest(
            str(line.get("mac")), sign_line(line, key)["mac"]
        ):
            raise AuthenticationError(
                f"{LEDGER} line {i + 1} in {str(path)!r} fails its HMAC under the key: the ledger was modified "
                "without the key; do not use this store"
            )


__all__ = ["SCHEME", "mac", "key_id", "sign_line", "sign_manifest", "check_manifest", "check_ledger"]
