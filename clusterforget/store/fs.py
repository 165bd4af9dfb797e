"""Durable file operations of the store: names, fsync'd writes, the writer lock, and path safety.

Everything the store writes goes through ``write_durable`` (data fsync'd before it counts) and every name
read from a manifest goes through ``safe_path`` (relative, inside the store, no ``..``, no symlink out).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from ..errors import LockError, StoreError

MANIFEST = "manifest.json"
LEDGER = "ledger.jsonl"
SECRET = "secret.key"
LOCK = ".lock"
CLEAN = ".clean"  # the commit id whose clean-up finished: unreferenced files after it are not crash leftovers
ROWS_DIR = "rows"
MEMBERS_DIR = "members"
TOMB_DIR = "tombstones"
SUBDIRS = (ROWS_DIR, MEMBERS_DIR, TOMB_DIR)
TMP_PREFIX = MANIFEST + ".tmp-"
DEFAULT_LOCK_TIMEOUT = 10.0
CRASH_ENV = "CLUSTERFORGET_TEST_CRASH_AT"  # test hook: os._exit at a named commit stage


_crash_hook: Callable[[str], None] | None = None


def set_crash_hook(hook: Callable[[str], None] | None) -> None:
    """Test-only: call ``hook(stage)`` at every write / fsync / rename / delete step of the store (the kill
    harness, ``tests/faults.py``, counts the steps and kills the process at one of them)."""
    global _crash_hook
    _crash_hook = hook


def crash_point(stage: str) -> None:
    """Test-only fault injection: ``CLUSTERFORGET_TEST_CRASH_AT=<stage>`` kills the process there."""
    if _crash_hook is not None:
        _crash_hook(stage)
    if os.environ.get(CRASH_ENV) == stage:
        os._exit(86)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there; NTFS journals renames itself
        return
    crash_point("fsync-dir")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    crash_point("create")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        crash_point("write-half")  # a torn write
        f.write(data[len(data) // 2 :])
        f.flush()
        crash_point("write-unsynced")
        os.fsync(f.fileno())
    crash_point("write-synced")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} value {v!r} cannot be stored as JSON")


def dumps(doc: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what checksums and hash chains are computed over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_jsonable).encode("utf-8")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """Only these columns of a Parquet file (the file's other columns are not read)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns, use_threads=False)


def read_parquet(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    # one small file per group: Arrow's thread pool buys nothing here, and its teardown at interpreter exit
    # can abort the process (apache/arrow#34314)
    return pq.read_table(pa.BufferReader(data), use_threads=False)


def store_files(root: Path) -> list[str]:
    """Every file under ``root`` (relative names, '/'-separated), symbolic links included, not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            out.append((rel_dir / name).as_posix())
    return sorted(out)


def safe_path(root: Path, rel: Any) -> Path:
    """The path of manifest entry ``rel`` inside ``root``; ``StoreError`` unless it is a plain relative name.

    A hostile manifest must not make the store read or delete anything outside its directory: absolute
    paths, ``..`` and backslashes are refused, and so is a name whose directory is a symlink.
    """
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        raise StoreError(f"the manifest of {str(root)!r} names a file {rel!r} outside the store; refusing to read it")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > 2:
        raise StoreError(f"the manifest of {str(root)!r} names a file {rel!r} outside the store; refusing to read it")
    if len(parts) == 2 and (root / parts[0]).is_symlink():
        raise StoreError(
            f"{parts[0]!r} in the store {str(root)!r} is a symbolic link; a store's directories must be real "
            "directories inside it. Replace the link with a copy of the directory"
        )
    return root / rel


class WriterLock:
    """The store's one-writer lock (``filelock``), with the store's error messages."""

    def __init__(self, root: Path, timeout: float = DEFAULT_LOCK_TIMEOUT):
        from filelock import FileLock

        self.root = root
        self.timeout = float(timeout)
        self._lock = FileLock(str(root / LOCK))

    def acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=self.timeout)
        except Timeout:
            raise LockError(
                f"another writer holds the lock of the store {str(self.root)!r} (waited {self.timeout:g}s); "
                "nothing was changed. Retry when it is done, or pass a longer lock_timeout to cf.load"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot take the lock of the store {str(self.root)!r}: {exc}") from exc

    def release(self) -> None:
        self._lock.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


__all__ = ["MANIFEST", "LEDGER", "SECRET", "LOCK", "CLEAN", "store_files", "SUBDIRS", "WriterLock", "write_durable", "fsync_dir", "sha",
           "dumps", "safe_path", "crash_point", "set_crash_hook"]
