"""The model store: a directory that holds a fitted model, commits every change atomically, and keeps a ledger.

Layout
------
::

    store/
      manifest.json        the root: format and library version, parameters, fitted state, groups, the files
                           of the current version with their sha256, the committed ledger length; replaced
                           atomically (write temp + fsync, os.replace, fsync directory) on every commit
      rows/<tok>.parquet   one file per group: __cf_id__, __cf_hash__, the features, __cf_label__ (id order)
      members/<tok>.txt    one native model file per member: LightGBM text, XGBoost JSON (.json), or the
                           JSON of a constant member; the member's small metadata lives in the manifest
      tombstones/<tok>.bin sorted HMAC-SHA256 digests (32 bytes each) of every id ever forgotten
      secret.key           the store's random HMAC key (hex)
      ledger.jsonl         append-only JSON lines, one per committed operation, hash-chained
      .lock                the writer lock (``filelock``)

No file name contains a group key, and nothing in the store holds raw ids or feature values of forgotten
rows: data files are immutable and content changes produce new files, so after a commit the files of the
previous version that held forgotten rows are unreferenced and deleted.

Commit protocol (``Store.commit``), under the writer lock
--------------------------------------------------------
1. check the manifest on disk is the one this model was loaded from / last committed (else ``StoreError``:
   another writer changed the store; lost updates could resurrect forgotten rows);
2. write the new files (changed groups' rows and members, new tombstones) under fresh random names, fsync
   each, fsync their directories;
3. cut the ledger back to the committed length recorded in the manifest (drops a tail left by a crashed
   commit), append the entry for the new version, fsync;
4. write the manifest (recording the new ledger length and the hash of the new ledger line) to a temp
   name, fsync, ``os.replace`` onto ``manifest.json``, fsync the directory — the commit point;
5. delete every file the new manifest does not reference (old versions, crash leftovers), fsync dirs.

Crash ordering: before step 4's rename the old manifest is in force; it references only old files (all
still present) and counts only the old ledger lines, so the store loads at the old version and the new
ledger line, if any, is an uncommitted tail that ``read_ledger`` ignores and the next writer truncates.
After the rename the store loads at the new version: its files were fsynced before, and its ledger line
is inside the committed length. Files a crash left unreferenced (including old files that held forgotten
rows, if the crash hit between steps 4 and 5) are deleted by the next ``load`` or commit, under the lock.
Every committed version therefore has exactly one ledger line, and no ledger line counts without its version.

Loading parses only JSON, Parquet and the learners' native model formats, verifies every sha256 against the
manifest (``ChecksumError`` names the file), and never unpickles or evaluates anything.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from .data import HASH, ID, LABEL, Schema
from .errors import ChecksumError, ClusterForgetError, LockError, StoreError
from .report import Report

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LEDGER = "ledger.jsonl"
SECRET = "secret.key"
LOCK = ".lock"
ROWS_DIR = "rows"
MEMBERS_DIR = "members"
TOMB_DIR = "tombstones"
_SUBDIRS = (ROWS_DIR, MEMBERS_DIR, TOMB_DIR)
_TMP_PREFIX = MANIFEST + ".tmp-"
_DIGEST = 32
_COMPACT_TOMBSTONES = 16  # merge tombstone files when there are more than this many
_CRASH_ENV = "CLUSTERFORGET_TEST_CRASH_AT"  # test hook: os._exit at a named commit stage
DEFAULT_LOCK_TIMEOUT = 10.0

_ARROW_TYPES = {
    str(t): t
    for t in (
        pa.int8(), pa.int16(), pa.int32(), pa.int64(),
        pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
        pa.float16(), pa.float32(), pa.float64(),
        pa.bool_(), pa.string(), pa.large_string(), pa.null(),
    )
}
_MEMBER_EXT = {"lightgbm": ".txt", "xgboost": ".json", "constant": ".json"}
_KEEP = object()


# ---------------------------------------------------------------------------------------------- helpers
def _crash_point(stage: str) -> None:
    """Test-only fault injection: ``CLUSTERFORGET_TEST_CRASH_AT=<stage>`` kills the process there."""
    if os.environ.get(_CRASH_ENV) == stage:
        os._exit(86)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} value {v!r} cannot be stored as JSON")


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_jsonable).encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _type_name(t: pa.DataType | None) -> str | None:
    if t is None:
        return None
    name = str(t)
    if name not in _ARROW_TYPES:
        raise StoreError(f"Arrow type {t} cannot be stored; use int, float, bool or string ids and labels")
    return name


def _parse_type(name: str | None) -> pa.DataType | None:
    if name is None:
        return None
    if name not in _ARROW_TYPES:
        raise StoreError(f"the manifest names an unknown Arrow type {name!r}")
    return _ARROW_TYPES[name]


def _encode_param(v: Any) -> Any:
    from .grouping import Grouping

    if isinstance(v, Grouping):
        return {"$grouping": v.to_dict()}
    if isinstance(v, tuple):
        return {"$tuple": [_encode_param(x) for x in v]}
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise StoreError(f"parameter dict {v!r} has non-string keys and cannot be stored")
        return {"$dict": {k: _encode_param(x) for k, x in v.items()}}
    if isinstance(v, list):
        return [_encode_param(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise StoreError(
        f"parameter value {v!r} of type {type(v).__name__} cannot be stored (the store holds JSON only, never "
        "pickled objects); use numbers, strings, lists and dicts in parameters"
    )


def _decode_param(v: Any) -> Any:
    from .grouping import grouping_from_dict

    if isinstance(v, dict):
        if set(v) == {"$grouping"}:
            return grouping_from_dict(v["$grouping"])
        if set(v) == {"$tuple"}:
            return tuple(_decode_param(x) for x in v["$tuple"])
        if set(v) == {"$dict"}:
            return {k: _decode_param(x) for k, x in v["$dict"].items()}
        raise StoreError(f"the manifest holds an unknown parameter encoding {sorted(v)!r}")
    if isinstance(v, list):
        return [_decode_param(x) for x in v]
    return v


def _key_to_json(key: tuple) -> list:
    return [_jsonable(v) if isinstance(v, np.generic) else v for v in key]


def _key_from_json(key: list) -> tuple:
    return tuple(key)


def _id_message(v: Any) -> bytes:
    if isinstance(v, str):
        return b"s:" + v.encode("utf-8")
    return b"i:" + str(int(v)).encode("ascii")


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _read_parquet(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data))


def _manifest_checksum(doc: dict) -> str:
    return _sha(_dumps({k: v for k, v in doc.items() if k != "checksum"}))


# content that decides whether a commit changes anything (version, time and ledger excluded)
_VOLATILE = ("checksum", "commit", "version", "time", "ledger", "library_version", "format", "format_version")


def _content(doc: dict | None) -> Any:
    if doc is None:
        return None
    return json.loads(_dumps({k: v for k, v in doc.items() if k not in _VOLATILE}))


# ---------------------------------------------------------------------------------------------- the store
class Store:
    """A store directory bound to one in-memory model: commits its changes and answers tombstone queries."""

    def __init__(self, path: Any, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        from filelock import FileLock

        self.path = Path(path)
        self.lock_timeout = float(lock_timeout)
        self._lock = FileLock(str(self.path / LOCK))
        self._manifest: dict | None = None
        self._secret: bytes | None = None
        self._tomb: set[bytes] | None = None
        # what the current manifest's files hold, by object identity: id(obj) -> (obj, file name, sha256)
        self._rows_cache: dict[int, tuple[pa.Table, str, str]] = {}
        self._member_cache: dict[int, tuple[Any, str, str, dict]] = {}
        self.last_commit_seconds: float | None = None  # wall time of the last commit (writing, not training)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, version={self.version})"

    # ------------------------------------------------------------------ public
    @property
    def version(self) -> int | None:
        return None if self._manifest is None else int(self._manifest["version"])

    def tombstoned(self, ids: Iterable[Any] | pa.Array | pa.ChunkedArray) -> list:
        """The ids among ``ids`` that belong to rows forgotten earlier (as Python values, in input order)."""
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            values = ids.to_pylist()
        else:
            values = [v.item() if isinstance(v, np.generic) else v for v in ids]
        tomb = self._tombstones()
        if not tomb:
            return []
        secret = self._get_secret()
        return [v for v in values if hmac.new(secret, _id_message(v), hashlib.sha256).digest() in tomb]

    def is_forgotten(self, row_id: Any) -> bool:
        """Whether a row with this id was forgotten from this store (or the store it was saved from)."""
        return bool(self.tombstoned([row_id]))

    def ledger(self) -> list[dict]:
        """The committed ledger entries, oldest first."""
        return read_ledger(self.path)

    def digest(self, row_id: Any) -> str:
        """The keyed hash (hex) under which this store's ledger and tombstones record an id."""
        return hmac.new(self._get_secret(), _id_message(row_id), hashlib.sha256).hexdigest()

    def commit(self, model: Any, report: Report) -> int:
        """Write the model's current state as a new version; all or nothing. Returns the store version."""
        ens = model._ensemble()
        with self._locked():
            self._check_current()
            return self._commit_locked(model, ens, report)

    # ------------------------------------------------------------------ locking
    def _acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise LockError(
                f"another writer holds the lock of the store {str(self.path)!r} (waited {self.lock_timeout:g}s); "
                "nothing was changed. Retry when it is done, or pass a longer lock_timeout to cf.load"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot take the lock of the store {str(self.path)!r}: {exc}") from exc

    @contextmanager
    def _locked(self):
        self._acquire()
        try:
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ reading
    def _read_manifest(self) -> dict:
        p = self.path / MANIFEST
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"{str(self.path)!r} is not a clusterforget store (no {MANIFEST}); pass the directory given to "
                "model.save, or an incomplete save: delete it and save again"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {MANIFEST} in {str(self.path)!r}: {exc}") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ChecksumError(f"{MANIFEST} in {str(self.path)!r} is corrupt (not JSON: {exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != "clusterforget-store":
            raise StoreError(f"{MANIFEST} in {str(self.path)!r} is not a clusterforget manifest")
        if doc.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"the store {str(self.path)!r} has format version {doc.get('format_version')!r}; this clusterforget "
                f"reads version {FORMAT_VERSION}. Use the clusterforget version that wrote it "
                f"({doc.get('library_version')!r})"
            )
        if doc.get("checksum") != _manifest_checksum(doc):
            raise ChecksumError(f"{MANIFEST} in {str(self.path)!r} does not match its own checksum; the store is corrupt")
        return doc

    def _read_file(self, name: str, doc: dict | None = None) -> bytes:
        doc = doc if doc is not None else self._manifest
        expected = doc["files"].get(name)
        if expected is None:
            raise StoreError(f"file {name!r} is not listed in the manifest of {str(self.path)!r}")
        try:
            data = (self.path / name).read_bytes()
        except FileNotFoundError:
            raise ChecksumError(f"file {name!r} listed in the manifest is missing from the store {str(self.path)!r}") from None
        if _sha(data) != expected:
            raise ChecksumError(
                f"file {name!r} in the store {str(self.path)!r} does not match its sha256 in the manifest; the store "
                "is corrupt or was modified outside clusterforget"
            )
        return data

    def _get_secret(self) -> bytes:
        if self._secret is None:
            self._secret = bytes.fromhex(self._read_file(SECRET).decode("ascii").strip())
        return self._secret

    def _tombstones(self) -> set[bytes]:
        if self._tomb is None:
            tomb: set[bytes] = set()
            for name in self._manifest.get("tombstones", []) if self._manifest else []:
                data = self._read_file(name)
                tomb.update(data[i : i + _DIGEST] for i in range(0, len(data), _DIGEST))
            self._tomb = tomb
        return self._tomb

    def _check_current(self) -> None:
        doc = self._read_manifest()
        if self._manifest is None or doc.get("commit") != self._manifest.get("commit"):
            raise StoreError(
                f"the store {str(self.path)!r} was changed by another writer (now at version {doc.get('version')}) "
                f"since this model last committed (version {self.version}); nothing was changed. Reload it with "
                "cf.load and redo the change"
            )

    # ------------------------------------------------------------------ recovery
    def _cleanup(self, doc: dict) -> None:
        """Delete every file the manifest does not reference, and temp files; cut an uncommitted ledger tail."""
        keep = set(doc["files"])
        for sub in _SUBDIRS:
            d = self.path / sub
            if not d.is_dir():
                continue
            removed = False
            for entry in os.listdir(d):
                rel = f"{sub}/{entry}"
                if rel not in keep:
                    p = d / entry
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed = True
            if removed:
                _fsync_dir(d)
        removed = False
        for entry in os.listdir(self.path):
            if entry.startswith(_TMP_PREFIX):
                (self.path / entry).unlink()
                removed = True
        if removed:
            _fsync_dir(self.path)
        self._truncate_ledger(doc["ledger"]["size"])

    def _truncate_ledger(self, size: int) -> None:
        p = self.path / LEDGER
        actual = p.stat().st_size if p.exists() else 0
        if actual > size:
            with open(p, "r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
        elif actual < size:
            raise ChecksumError(
                f"{LEDGER} in {str(self.path)!r} is shorter than the committed length in the manifest; the ledger was "
                "truncated outside clusterforget"
            )

    # ------------------------------------------------------------------ writing
    def _write_new(self, rel: str, data: bytes, written: list[str]) -> str:
        written.append(rel)
        _write_durable(self.path / rel, data)
        return _sha(data)

    def _rows_entry(self, rows: pa.Table, version: int, written: list[str], cache: dict) -> tuple[str, str]:
        hit = self._rows_cache.get(id(rows))
        if hit is not None and hit[0] is rows:
            cache[id(rows)] = hit
            return hit[1], hit[2]
        rel = f"{ROWS_DIR}/{version}-{secrets.token_hex(8)}.parquet"
        sha = self._write_new(rel, _parquet_bytes(rows), written)
        cache[id(rows)] = (rows, rel, sha)
        return rel, sha

    def _member_entry(self, member: Any, version: int, written: list[str], cache: dict) -> tuple[str, str, dict]:
        hit = self._member_cache.get(id(member))
        if hit is not None and hit[0] is member:
            cache[id(member)] = hit
            return hit[1], hit[2], hit[3]
        meta = json.loads(_dumps(member.meta()))
        ext = _MEMBER_EXT.get(member.learner, ".bin")
        rel = f"{MEMBERS_DIR}/{version}-{secrets.token_hex(8)}{ext}"
        sha = self._write_new(rel, member.model_bytes(), written)
        cache[id(member)] = (member, rel, sha, meta)
        return rel, sha, meta

    def _state_doc(self, model: Any, ens: Any, version: int, written: list[str], rows_cache: dict,
                   member_cache: dict) -> dict:
        from .estimators import ForgetClassifier, ForgetRegressor

        if isinstance(model, ForgetClassifier):
            estimator = "ForgetClassifier"
        elif isinstance(model, ForgetRegressor):
            estimator = "ForgetRegressor"
        else:
            raise StoreError(f"cannot store a {type(model).__name__}; only ForgetClassifier and ForgetRegressor")
        files: dict[str, str] = {}
        groups = []
        for g in ens.groups.values():
            rows_rel, rows_sha = self._rows_entry(g.rows, version, written, rows_cache)
            files[rows_rel] = rows_sha
            entry: dict[str, Any] = {
                "key": _key_to_json(g.key),
                "shard": int(g.shard),
                "n_shards": int(g.n_shards),
                "n_rows": int(g.n_rows),
                "rows": rows_rel,
                "member": None,
            }
            if g.member is not None:
                m_rel, m_sha, meta = self._member_entry(g.member, version, written, member_cache)
                files[m_rel] = m_sha
                entry["member"] = {"file": m_rel, "meta": meta}
            groups.append(entry)
        learner = ens.learner
        params = {k: _encode_param(v) for k, v in model.get_params(deep=False).items()}
        learner_params = _encode_param(dict(learner.params))
        return {
            "estimator": estimator,
            "params": params,
            "ensemble": {
                "task": ens.task,
                "grouping": ens.grouping.to_dict(),
                "learner": learner.name,
                "learner_params": learner_params,
                "seed": int(learner.seed),
                "combine": ens.combine,
                "max_group_rows": ens.max_group_rows,
                "n_jobs": ens.n_jobs,
                "verbose": bool(ens.verbose),
                "schema": ens.schema.to_dict(),
                "id_type": _type_name(ens.id_type),
                "label_type": _type_name(ens.label_type),
                "state": None if ens.state is None else ens.state.to_dict(),
                "classes": None if ens.classes is None else ens.classes.tolist(),
                "weight_overrides": [[_key_to_json(k), float(w)] for k, w in ens.weight_overrides.items()],
                "overrides": [
                    {"rule_id": o.rule_id, "rule": o.text, "label": o.label} for o in ens.overrides
                ],
            },
            "groups": groups,
            "pending": [g.name for g in ens.groups.values() if g.member is None],
            "n_rows": int(ens.n_rows),
            "files": files,
        }

    def _ledger_entry(self, report: Report, old_version: int | None, new_version: int, commit: str,
                      prev: str, digests: list[bytes], live_names: set[str], live_keys: set[str],
                      n_rows: int) -> dict:
        secret = self._get_secret()

        def safe_name(name: str) -> str:
            # a dropped group's name is a key value of forgotten rows: record it as a keyed hash only
            base = name.split(" [shard ")[0]
            if name in live_names or base in live_keys:
                return name
            return "hmac:" + hmac.new(secret, b"g:" + name.encode("utf-8"), hashlib.sha256).hexdigest()

        entry = {
            "commit": commit,
            "prev": prev,
            "operation": report.operation,
            "time": _now(),
            "old_version": old_version,
            "version": new_version,
            "seconds": round(float(report.seconds), 6),
            "rows_removed": int(report.rows_removed),
            "rows_added": int(report.rows_added),
            "rows_relabeled": int(report.rows_relabeled),
            "groups_retrained": [safe_name(n) for n in report.groups_retrained],
            "groups_dropped": [safe_name(n) for n in report.groups_dropped],
            "groups_added": [safe_name(n) for n in report.groups_added],
            "groups_pending": [safe_name(n) for n in report.groups_pending],
            "clustering_refit": bool(report.clustering_refit),
            "clustering_changed": bool(report.clustering_changed),
            "rows_moved": int(report.rows_moved),
            "is_deletion": bool(report.is_deletion),
            "n_rows": n_rows,
        }
        if getattr(report, "rule", ""):
            entry["rule"] = report.rule
            entry["rows_matched"] = int(getattr(report, "rows_matched", 0))
        if report.note and not report.rows_removed and not report.groups_dropped:
            entry["note"] = report.note
        if digests:
            entry["forgotten"] = {"count": len(digests), "hmac_sha256": [d.hex() for d in digests]}
        return entry

    def _commit_locked(self, model: Any, ens: Any, report: Report, *, initial: dict | None = None) -> int:
        """Steps 2-5 of the protocol (the caller holds the lock and checked the store is current).

        ``initial``: for a new store, ``{"ledger": bytes, "tombstones": set}`` carried over (or empty).
        """
        t0 = time.perf_counter()
        old = self._manifest
        old_version = None if old is None else int(old["version"])
        ens_version = int(ens.version)
        version = ens_version if old_version is None or ens_version > old_version else old_version + 1
        written: list[str] = []
        rows_cache: dict = {}
        member_cache: dict = {}
        ledger_path = self.path / LEDGER
        committed_size = 0 if old is None else int(old["ledger"]["size"])
        ledger_touched = False
        try:
            doc = self._state_doc(model, ens, version, written, rows_cache, member_cache)
            # tombstones of the ids this operation removed
            digests: list[bytes] = []
            forgotten = getattr(report, "forgotten_ids", None)
            if forgotten is not None and len(forgotten):
                secret = self._get_secret()
                digests = sorted({hmac.new(secret, _id_message(v), hashlib.sha256).digest()
                                  for v in forgotten.to_pylist()})
            tomb_files = list(old.get("tombstones", [])) if old is not None else []
            tomb_sha = {n: old["files"][n] for n in tomb_files} if old is not None else {}
            carried = (initial or {}).get("tombstones") or set()
            new_tomb = sorted(set(digests) | set(carried))
            if len(tomb_files) + (1 if new_tomb else 0) > _COMPACT_TOMBSTONES:
                new_tomb = sorted(set(new_tomb) | self._tombstones())
                tomb_files, tomb_sha = [], {}
            if new_tomb:
                rel = f"{TOMB_DIR}/{version}-{secrets.token_hex(8)}.bin"
                tomb_sha[rel] = self._write_new(rel, b"".join(new_tomb), written)
                tomb_files.append(rel)
            doc["tombstones"] = tomb_files
            doc["files"].update(tomb_sha)
            doc["files"][SECRET] = old["files"][SECRET] if old is not None else _sha(
                (self.path / SECRET).read_bytes()
            )
            if old is not None and _content(doc) == _content(old) and ens_version == old_version and not digests:
                self._discard(written)
                return old_version  # nothing changed: no new version, no ledger line
            for sub in sorted({rel.split("/")[0] for rel in written}):
                _fsync_dir(self.path / sub)  # the new files' directory entries are durable too
            _crash_point("files-written")

            # ledger: cut an uncommitted tail, append this version's line, fsync
            if initial is not None:
                base = initial.get("ledger", b"")
                _write_durable(ledger_path, base)
                committed_size = len(base)
                prev = _sha(base.splitlines()[-1]) if base else ""
                n_lines = len(base.splitlines())
            else:
                self._truncate_ledger(committed_size)
                prev = old["ledger"]["tail"]
                n_lines = int(old["ledger"]["lines"])
            commit = secrets.token_hex(16)
            live_names = {g.name for g in ens.groups.values()}
            live_keys = {g.name.split(" [shard ")[0] for g in ens.groups.values()}
            entry = self._ledger_entry(report, old_version, version, commit, prev, digests, live_names, live_keys,
                                       int(ens.n_rows))
            line = _dumps(entry)
            ledger_touched = True
            with open(ledger_path, "ab") as f:
                f.write(line + b"\n")
                f.flush()
                os.fsync(f.fileno())
            _crash_point("ledger-appended")

            from . import __version__

            doc.update(
                format="clusterforget-store",
                format_version=FORMAT_VERSION,
                library_version=__version__,
                version=version,
                commit=commit,
                time=entry["time"],
                ledger={"size": committed_size + len(line) + 1, "tail": _sha(line), "lines": n_lines + 1},
            )
            doc["checksum"] = _manifest_checksum(doc)
            tmp = self.path / f"{_TMP_PREFIX}{commit}"
            _write_durable(tmp, _dumps(doc))
            _crash_point("manifest-staged")
            os.replace(tmp, self.path / MANIFEST)
        except BaseException as exc:
            # the old manifest is still in force: remove what this attempt wrote
            self._discard(written)
            try:
                for entry_name in os.listdir(self.path):
                    if entry_name.startswith(_TMP_PREFIX):
                        (self.path / entry_name).unlink()
                if ledger_touched:
                    self._truncate_ledger(committed_size)
            except OSError:
                pass  # the next commit or load cleans up
            if isinstance(exc, OSError) and not isinstance(exc, ClusterForgetError):
                raise StoreError(f"could not commit to the store {str(self.path)!r}: {exc}; nothing was changed") from exc
            raise
        # ---- committed: from here on nothing may raise (the model must not be rolled back)
        self._manifest = doc
        self._rows_cache = rows_cache
        self._member_cache = member_cache
        if self._tomb is not None or initial is not None:
            self._tomb = (self._tomb or set()) | set(digests) | set((initial or {}).get("tombstones") or set())
        ens.version = version
        try:
            _fsync_dir(self.path)
        except OSError as exc:
            warnings.warn(f"fsync of the store directory failed after commit: {exc}", RuntimeWarning, stacklevel=3)
        _crash_point("manifest-swapped")
        try:
            self._cleanup(doc)
        except OSError as exc:
            warnings.warn(
                f"committed version {version}, but deleting the previous version's files failed: {exc}; "
                "the next commit or load deletes them",
                RuntimeWarning,
                stacklevel=3,
            )
        _crash_point("cleaned")
        self.last_commit_seconds = time.perf_counter() - t0
        return version

    def _discard(self, written: list[str]) -> None:
        for rel in written:
            try:
                (self.path / rel).unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ building a model
    def _build(self, doc: dict, n_jobs: Any = _KEEP, verbose: Any = _KEEP) -> Any:
        from .ensemble import Group, GroupedEnsemble, Override
        from .estimators import ForgetClassifier, ForgetRegressor
        from .grouping import ClusterState, grouping_from_dict
        from .members import CLASSIFICATION, make_learner, member_from_bytes

        classes = {"ForgetClassifier": ForgetClassifier, "ForgetRegressor": ForgetRegressor}
        if doc.get("estimator") not in classes:
            raise StoreError(f"the manifest names an unknown estimator {doc.get('estimator')!r}")
        params = {k: _decode_param(v) for k, v in doc["params"].items()}
        if n_jobs is not _KEEP:
            params["n_jobs"] = n_jobs
        if verbose is not _KEEP:
            params["verbose"] = verbose
        model = classes[doc["estimator"]](**params)
        e = doc["ensemble"]
        schema = Schema.from_dict(e["schema"])
        grouping = grouping_from_dict(e["grouping"])  # the ensemble's own copy, as fit makes it
        grouping.validate(schema)
        ens = GroupedEnsemble(
            task=e["task"],
            grouping=grouping,
            learner=make_learner(e["learner"], _decode_param(e["learner_params"]), int(e["seed"])),
            combine=e["combine"],
            max_group_rows=e["max_group_rows"],
            n_jobs=e["n_jobs"] if n_jobs is _KEEP else n_jobs,
            verbose=bool(e["verbose"] if verbose is _KEEP else verbose),
        )
        ens.schema = schema
        ens.id_type = _parse_type(e["id_type"])
        ens.label_type = _parse_type(e["label_type"])
        ens.state = None if e["state"] is None else ClusterState.from_dict(e["state"])
        expected_cols = [ID, HASH, *schema.names, LABEL]
        groups = {}
        for entry in doc["groups"]:
            rows = _read_parquet(self._read_file(entry["rows"], doc))
            if rows.column_names != expected_cols or rows.column(ID).type != ens.id_type or (
                rows.column(LABEL).type != ens.label_type
            ):
                raise StoreError(f"file {entry['rows']!r} does not hold the rows layout the manifest describes")
            member = None
            if entry["member"] is not None:
                m = entry["member"]
                member = member_from_bytes(m["meta"], self._read_file(m["file"], doc))
                self._member_cache[id(member)] = (member, m["file"], doc["files"][m["file"]], m["meta"])
            self._rows_cache[id(rows)] = (rows, entry["rows"], doc["files"][entry["rows"]])
            key = _key_from_json(entry["key"])
            g = Group(key, int(entry["shard"]), int(entry["n_shards"]), rows, member, ens._labels(rows))
            groups[g.gid] = g
        ens.groups = groups
        if ens.task == CLASSIFICATION:
            labels = [g.labels for g in groups.values()]
            ens.classes = np.unique(np.concatenate(labels)) if labels else None
        ens.weight_overrides = {_key_from_json(k): float(w) for k, w in e["weight_overrides"]}
        overrides = []
        if e["overrides"]:
            try:
                from .rules import compile_mask
            except ImportError as exc:
                raise StoreError(
                    "this store holds output overrides but clusterforget.rules is not available to compile them"
                ) from exc
            for o in e["overrides"]:
                overrides.append(Override(o["rule_id"], o["rule"], compile_mask(o["rule"], schema), o["label"]))
        ens.overrides = overrides
        ens.version = int(doc["version"])
        model.ensemble_ = ens
        model.n_features_in_ = len(schema.names)
        if schema.from_frame:
            model.feature_names_in_ = np.asarray(schema.names, dtype=object)
        return model


# ---------------------------------------------------------------------------------------------- public API
def _same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def save(model: Any, path: Any, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Report:
    """Write ``model`` to a new store directory and bind it there (see ``_ForgetBase.save``).

    Saving a bound model to its own store is a no-op (every change is already committed). Saving a bound
    model to a new directory copies its secret, tombstones and ledger, so forgotten ids stay refused there.
    """
    t0 = time.perf_counter()
    ens = model._ensemble()
    p = Path(path)
    bound: Store | None = getattr(model, "_store", None)
    if bound is not None and p.exists() and _same_dir(bound.path, p):
        version = bound.commit(model, Report(operation="save", is_deletion=False))
        return Report(operation="save", is_deletion=False, version=version, seconds=time.perf_counter() - t0,
                      note="the model is bound to this store: every change was already committed")
    if p.exists() and not p.is_dir():
        raise StoreError(f"{str(p)!r} exists and is not a directory; pass a new or empty directory to save into")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {str(p)!r}: {exc}") from exc
    store = Store(p, lock_timeout)
    with store._locked():
        existing = sorted(e for e in os.listdir(p) if e != LOCK)
        if existing:
            what = "a clusterforget store of another model" if MANIFEST in existing else "not empty"
            raise StoreError(
                f"{str(p)!r} is {what} and is not this model's store; nothing was written. Save to a new or empty "
                "directory, or delete that one first (cf.load it instead to keep working on that model)"
            )
        carried: dict[str, Any] = {"ledger": b"", "tombstones": set()}
        if bound is not None:
            secret = bound._get_secret()
            carried["tombstones"] = set(bound._tombstones())
            lp = bound.path / LEDGER
            with open(lp, "rb") as f:
                carried["ledger"] = f.read(int(bound._manifest["ledger"]["size"]))
        else:
            secret = secrets.token_bytes(32)
        try:
            for sub in _SUBDIRS:
                (p / sub).mkdir(exist_ok=True)
            _write_durable(p / SECRET, secret.hex().encode("ascii") + b"\n")
            os.chmod(p / SECRET, 0o600)
            store._secret = secret
            report = Report(operation="save", is_deletion=False,
                            note="saved from another store" if bound is not None else "")
            version = store._commit_locked(model, ens, report, initial=carried)
        except BaseException:
            # a failed first save leaves nothing behind but the lock file
            for e in os.listdir(p):
                if e != LOCK:
                    q = p / e
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
            raise
    model._store = store
    return Report(operation="save", is_deletion=False, version=version, seconds=time.perf_counter() - t0)


def load(path: Any, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, n_jobs: Any = _KEEP, verbose: Any = _KEEP) -> Any:
    """Load the model in a store and bind it there. Verifies every checksum; runs no stored code.

    Takes the writer lock while reading (waits up to ``lock_timeout`` seconds) and first finishes what a
    crashed writer left: unreferenced files are deleted and an uncommitted ledger tail is cut.
    ``n_jobs`` / ``verbose`` override the saved settings (they do not change predictions).
    """
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{str(p)!r} is not a directory; pass the directory given to model.save")
    store = Store(p, lock_timeout)
    locked = True
    try:
        store._acquire()
    except LockError:
        raise
    except StoreError:
        locked = False  # read-only location: read without recovery
    try:
        doc = store._read_manifest()
        store._manifest = doc
        if locked:
            _verify_ledger_tail(p, doc)
            store._cleanup(doc)
        try:
            model = store._build(doc, n_jobs=n_jobs, verbose=verbose)
            store._get_secret()
            store._tombstones()
        except ClusterForgetError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise StoreError(f"the store {str(p)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    finally:
        if locked:
            store._lock.release()
    model._store = store
    return model


def _verify_ledger_tail(path: Path, doc: dict) -> None:
    size, tail = int(doc["ledger"]["size"]), doc["ledger"]["tail"]
    lp = path / LEDGER
    if not lp.exists() or lp.stat().st_size < size:
        raise ChecksumError(f"{LEDGER} in {str(path)!r} is missing committed entries")
    with open(lp, "rb") as f:
        f.seek(max(0, size - 1))
        if size and f.read(1) != b"\n":
            raise ChecksumError(f"{LEDGER} in {str(path)!r} does not end its committed part with a full line")
        # find the start of the last committed line
        start = size - 1
        chunk = 4096
        while start > 0:
            lo = max(0, start - chunk)
            f.seek(lo)
            buf = f.read(start - lo)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                start = lo + nl + 1
                break
            start = lo
        f.seek(start)
        last = f.read(size - 1 - start)
    if _sha(last) != tail:
        raise ChecksumError(f"the last committed entry of {LEDGER} in {str(path)!r} does not match the manifest")


def read_ledger(path: Any, *, verify: bool = True) -> list[dict]:
    """The committed ledger entries of a store, oldest first (an uncommitted tail left by a crash is skipped).

    With ``verify`` the hash chain is checked against the manifest (``ChecksumError`` if it was altered).
    """
    p = Path(path)
    doc = Store(p)._read_manifest()
    size = int(doc["ledger"]["size"])
    try:
        with open(p / LEDGER, "rb") as f:
            data = f.read(size)
    except FileNotFoundError:
        raise ChecksumError(f"{LEDGER} is missing from the store {str(p)!r}") from None
    if len(data) < size:
        raise ChecksumError(f"{LEDGER} in {str(p)!r} is missing committed entries")
    lines = data.splitlines()
    out, prev = [], ""
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ChecksumError(f"{LEDGER} line {i + 1} in {str(p)!r} is not JSON: {exc}") from exc
        if verify and entry.get("prev") != prev:
            raise ChecksumError(f"{LEDGER} line {i + 1} in {str(p)!r} breaks the hash chain; the ledger was altered")
        prev = _sha(line)
        out.append(entry)
    if verify and (prev != doc["ledger"]["tail"] or len(lines) != int(doc["ledger"]["lines"])):
        raise ChecksumError(f"{LEDGER} in {str(p)!r} does not match the manifest; the ledger was altered")
    return out


def verify(path: Any) -> int:
    """Check every file of a store against its manifest and the ledger's hash chain; returns the version.

    Read-only: takes no lock and deletes nothing.
    """
    p = Path(path)
    store = Store(p)
    doc = store._read_manifest()
    for name in doc["files"]:
        store._read_file(name, doc)
    read_ledger(p)
    return int(doc["version"])


__all__ = ["Store", "save", "load", "read_ledger", "verify", "FORMAT_VERSION"]
