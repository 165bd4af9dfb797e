"""Keys kept outside the store: where a caller's secret comes from.

A key held only inside the store directory protects nothing against whoever holds the directory. A key
*outside* it (a file path, or an environment variable) lets the store authenticate its manifest and ledger,
key its tombstones, and sign deletion certificates, so that holding the directory is not enough to forge
or test anything. ``resolve_key`` is the one place that reads such a key.

Sources, first found wins: the ``key`` argument (bytes; a hex string; or a path to a file holding hex or raw
bytes), then ``$CLUSTERFORGET_KEY`` (hex), then ``$CLUSTERFORGET_KEY_FILE`` (a path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

KEY_ENV = "CLUSTERFORGET_KEY"
KEY_FILE_ENV = "CLUSTERFORGET_KEY_FILE"
MIN_KEY_BYTES = 16


def _from_text(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"the key from {where} is not hex; write 32 random bytes as hex, e.g. "
                         "python -c \"import secrets; print(secrets.token_hex(32))\"") from None
    return _checked(key, where)


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"the key from {where} has {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes (32 advised)")
    return key


def _from_file(path: Path, where: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the key file {str(path)!r} ({where}): {exc}") from exc
    try:
        return _from_text(data.decode("ascii"), f"{where} {str(path)!r}")
    except (UnicodeDecodeError, InputError):
        return _checked(data, f"{where} {str(path)!r}")


def resolve_key(key: Any = None, *, env: bool = True) -> bytes | None:
    """The caller's key as bytes, or None when none is given anywhere (see the module docstring)."""
    if key is not None:
        if isinstance(key, (bytes, bytearray)):
            return _checked(bytes(key), "the key argument")
        if isinstance(key, os.PathLike) or (isinstance(key, str) and (os.sep in key or Path(key).is_file())):
            return _from_file(Path(key), "the key argument")
        if isinstance(key, str):
            return _from_text(key, "the key argument")
        raise InputError(f"key={key!r} is not a key; pass bytes, a hex string or the path of a key file")
    if env and os.environ.get(KEY_ENV):
        return _from_text(os.environ[KEY_ENV], f"${KEY_ENV}")
    if env and os.environ.get(KEY_FILE_ENV):
        return _from_file(Path(os.environ[KEY_FILE_ENV]), f"${KEY_FILE_ENV}")
    return None


def reader_key(key: Any) -> bytes | None:
    """A store reader's or writer's ``key=``: ``False`` is no key, not even from the environment (for a store
    saved without a key while one is set); anything else goes through ``resolve_key``."""
    return None if key is False else resolve_key(key)


__all__ = ["resolve_key", "reader_key", "KEY_ENV", "KEY_FILE_ENV"]
