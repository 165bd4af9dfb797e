"""The commit protocol: a store directory, its manifest, and atomic all-or-nothing versions.

This module knows documents and files, not models: ``Store.commit(state, change)`` takes an ensemble state and
the change that made it (an ``ensemble.Outcome``: its report, and the ids it removed, added and reweighted); the
codec (``store.codec``) turns the state into the manifest's content through the ``Encoder`` it hands to
``Store``, and builds a model from verified bytes.

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
rows, if the crash hit between steps 4 and 5) are deleted by the next ``load`` or commit, under the lock —
and only after every referenced file has been verified (``Store.audit``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from ..ensemble import Outcome
from ..errors import ChecksumError, ClusterForgetError, RowsLostError, StoreError
from ..members import KINDS, library_names
from ..report import Report
from ..version import __version__
from . import auth, ledger, tombstones
from .fs import (
    CLEAN,
    DEFAULT_LOCK_TIMEOUT,
    LEDGER,
    LOCK,
    MANIFEST,
    MEMBERS_DIR,
    ROWS_DIR,
    SECRET,
    SUBDIRS,
    TMP_PREFIX,
    TOMB_DIR,
    WriterLock,
    crash_point,
    dumps,
    fsync_dir,
    read_parquet,
    safe_path,
    sha,
    store_files,
    write_durable,
)

FORMAT_VERSION = 1
FORMAT = "clusterforget-store"

# content that decides whether a commit changes anything (version, time and ledger excluded)
_VOLATILE = ("checksum", "mac", "commit", "version", "time", "ledger", "library_version", "format", "format_version",
             "environment", "superseded")
_ATTEMPT = re.compile(r"(\d+)-[0-9a-f]{16}\.[a-z]+")  # how a commit names its new files: <version>-<token>.<ext>
# what bitwise exactness depends on: a retrain reproduces a member byte for byte only under the same versions
# (the core; every registered learner's libraries come too: ``members.LearnerKind.libraries``)
CORE_ENVIRONMENT = ("clusterforget", "numpy", "pyarrow", "scikit-learn")


def environment_names() -> tuple[str, ...]:
    """The libraries a store records the versions of: the core and every registered learner's."""
    return (CORE_ENVIRONMENT[0], *library_names(), *CORE_ENVIRONMENT[1:])


def environment() -> dict[str, str | None]:
    """The installed version of every library in ``environment_names()`` (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    distributions = library_names()
    for name in environment_names():
        if name == "clusterforget":
            out[name] = __version__
            continue
        out[name] = None
        for dist in sorted(distributions.get(name, (name,)), key=lambda d: d != name):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def environment_mismatch(doc: dict, learner: str | None = None) -> list[tuple[str, str, str | None]]:
    """(library, version the store was written with, version here) for every difference that matters: the
    core libraries, and the learner's own (an XGBoost version is irrelevant to a LightGBM model)."""
    recorded = doc.get("environment")
    if not isinstance(recorded, dict):
        return []  # written before versions were recorded: nothing to compare with
    here = environment()
    mine = set(KINDS[learner].libraries) if learner in KINDS else set()
    learners = set(library_names())
    return [(name, str(recorded[name]), here.get(name)) for name in environment_names()
            if recorded.get(name) is not None and recorded[name] != here.get(name)
            and (name not in learners or learner is None or name in mine)]


def describe_mismatch(diff: list[tuple[str, str, str | None]]) -> str:
    """Each difference, and the pip line that reproduces the store's environment."""
    parts = ", ".join(f"{n} {old} (here {new or 'not installed'})" for n, old, new in diff)
    install = {lib: dists[0] for lib, dists in library_names().items()}  # xgboost: xgboost-cpu
    pins = " ".join(f"'{install.get(n, n)}=={old}'" for n, old, _ in diff)
    return (f"the store was written under {parts}; retrained members need not be byte-identical across versions. "
            f"Reproduce the store's environment: pip install {pins}")


def manifest_checksum(doc: dict) -> str:
    return sha(dumps({k: v for k, v in doc.items() if k not in ("checksum", "mac")}))


def _content(doc: dict | None) -> Any:
    if doc is None:
        return None
    return json.loads(dumps({k: v for k, v in doc.items() if k not in _VOLATILE}))


def unreferenced(path: Path, doc: dict, files: list[str] | None = None) -> list[str]:
    """Every file under the store at ``path`` that ``doc`` does not reference: what the purge check fails on
    and ``remove_unreferenced`` removes. ``files``: the store's listing (``fs.store_files``), if made already."""
    known = set(doc["files"]) | {MANIFEST, LEDGER, LOCK, CLEAN}
    return [f for f in (store_files(path) if files is None else files) if f not in known]


def read_manifest(path: Path) -> dict:
    """Parse and check ``manifest.json`` (format, version, its own checksum); reads nothing else."""
    p = path / MANIFEST
    try:
        if p.is_symlink():
            raise StoreError(f"{MANIFEST} in {str(path)!r} is a symbolic link; a store's files must be inside it")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise StoreError(
            f"{str(path)!r} is not a clusterforget store (no {MANIFEST}); pass the directory given to "
            "model.save, or an incomplete save: delete it and save again"
        ) from None
    except IsADirectoryError:
        raise StoreError(f"{MANIFEST} in {str(path)!r} is a directory; this is not a clusterforget store") from None
    except OSError as exc:
        raise StoreError(f"cannot read {MANIFEST} in {str(path)!r}: {exc}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ChecksumError(f"{MANIFEST} in {str(path)!r} is corrupt (not JSON: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"{MANIFEST} in {str(path)!r} is not a clusterforget manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"the store {str(path)!r} has format version {doc.get('format_version')!r}; this clusterforget "
            f"reads version {FORMAT_VERSION}. Use the clusterforget version that wrote it "
            f"({doc.get('library_version')!r})"
        )
    if doc.get("checksum") != manifest_checksum(doc):
        raise ChecksumError(f"{MANIFEST} in {str(path)!r} does not match its own checksum; the store is corrupt")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise StoreError(f"{MANIFEST} in {str(path)!r} has no valid file list")
    for name in files:
        safe_path(path, name)
    return doc


class Writer:
    """Writes one commit's new files; reuses the files of objects the current version already stored.

    The caches map an object's identity to the file that holds it: a group whose rows object is unchanged
    keeps its file, so a commit writes only what changed.
    """

    def __init__(self, store: "Store", version: int):
        self.store = store
        self.version = version
        self.written: list[str] = []
        self.rows_cache: dict[int, tuple[pa.Table, str, str]] = {}
        self.member_cache: dict[int, tuple[Any, str, str, dict]] = {}

    def new_file(self, rel: str, data: bytes) -> str:
        self.written.append(rel)
        write_durable(self.store.path / rel, data)
        return sha(data)

    def rows_file(self, rows: pa.Table, to_bytes: Callable[[pa.Table], bytes]) -> tuple[str, str]:
        hit = self.store.rows_cache.get(id(rows))
        if hit is not None and hit[0] is rows:
            self.rows_cache[id(rows)] = hit
            return hit[1], hit[2]
        rel = f"{ROWS_DIR}/{self.version}-{secrets.token_hex(8)}.parquet"
        digest = self.new_file(rel, to_bytes(rows))
        self.rows_cache[id(rows)] = (rows, rel, digest)
        return rel, digest

    def member_file(self, member: Any, meta: dict) -> tuple[str, str, dict]:
        hit = self.store.member_cache.get(id(member))
        if hit is not None and hit[0] is member:
            self.member_cache[id(member)] = hit
            return hit[1], hit[2], hit[3]
        ext = KINDS[member.learner].ext if member.learner in KINDS else ".bin"
        rel = f"{MEMBERS_DIR}/{self.version}-{secrets.token_hex(8)}{ext}"
        digest = self.new_file(rel, member.model_bytes())
        self.member_cache[id(member)] = (member, rel, digest, meta)
        return rel, digest, meta

    def discard(self) -> None:
        for rel in self.written:
            try:
                (self.store.path / rel).unlink()
            except OSError:
                pass


# encode(state, writer) -> the manifest content of an ensemble state (new files written through the writer)
Encoder = Callable[[Any, Writer], dict]


class Store:
    """A store directory bound to one in-memory model: commits its states and answers tombstone queries."""

    def __init__(self, path: Any, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, encoder: Encoder | None = None,
                 key: bytes | None = None):
        self.path = Path(path)
        self.key = key  # kept outside the store (store.keys.resolve_key); None: an unauthenticated store
        self.lock_timeout = float(lock_timeout)
        self.lock = WriterLock(self.path, lock_timeout)
        self.encoder = encoder
        self.manifest: dict | None = None
        self._secret: bytes | None = None
        self._tomb: set[bytes] | None = None
        self._tomb_secret: set[bytes] | None = None  # carried from an unauthenticated store, under secret.key
        # what the current manifest's files hold, by object identity: id(obj) -> (obj, file name, sha256, ...)
        self.rows_cache: dict[int, tuple[pa.Table, str, str]] = {}
        self.member_cache: dict[int, tuple[Any, str, str, dict]] = {}
        self.last_commit_seconds: float | None = None  # wall time of the last commit (writing, not training)
        self.recovered: list[str] = []  # files the crash clean-up removed; the next ledger line records them

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, version={self.version})"

    # ------------------------------------------------------------------ public
    @property
    def version(self) -> int | None:
        return None if self.manifest is None else int(self.manifest["version"])

    def tombstoned(self, ids: Iterable[Any] | pa.Array | pa.ChunkedArray) -> list:
        """The ids among ``ids`` that belong to rows forgotten earlier (as Python values, in input order)."""
        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            values = ids.to_pylist()
        else:
            values = [v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v for v in ids]
        tomb, old = self.tombstones(), self.secret_tombstones()
        if not tomb and not old:
            return []
        names = self.names()
        secret = self.secret() if old else b""
        return [v for v in values
                if names.id(v) in tomb or (old and tombstones.digest(secret, v) in old)]

    def is_forgotten(self, row_id: Any) -> bool:
        """Whether a row with this id was forgotten from this store (or the store it was saved from)."""
        return bool(self.tombstoned([row_id]))

    def ledger(self) -> list[dict]:
        """The committed ledger entries, oldest first."""
        return ledger.read(self.path, read_manifest(self.path))

    def digest(self, row_id: Any) -> str:
        """The keyed hash (hex) under which this store's ledger and tombstones record an id."""
        return self.names().id(row_id).hex()

    def commit(self, state: Any, change: Outcome) -> int:
        """Write ``state`` (an ensemble state, through the encoder) as a new version; all or nothing. Returns the
        store version.

        ``change``: what made it. Its report is the ledger line; its ids, never read from a user-facing report,
        become keyed hashes only: ``forgotten`` the tombstones, ``added`` the ids put back that had been
        tombstoned, ``reweighted`` the rows whose weight was set."""
        with self.lock.held():
            self._check_current()
            return self.commit_locked(state, change)

    def stored_rows(self, rows: pa.Table, name: str) -> pa.Table:
        """The full rows of the current version's file that holds the table ``rows`` (its skeleton, for rows on a
        cluster), verified against the manifest; ``RowsLostError`` naming group ``name`` if no file holds it."""
        hit = self.rows_cache.get(id(rows))
        if hit is None or hit[0] is not rows:
            raise RowsLostError(
                f"the cluster lost the rows of group {name!r} and the store {str(self.path)!r} holds no file of "
                "its current rows; nothing was changed. cf.load the store, or fit again"
            )
        return read_parquet(self.read_file(hit[1]))

    # ------------------------------------------------------------------ reading
    def read_file(self, name: str, doc: dict | None = None) -> bytes:
        """A file the manifest lists, verified against its sha256."""
        doc = doc if doc is not None else self.manifest
        expected = doc["files"].get(name)
        if expected is None:
            raise StoreError(f"file {name!r} is not listed in the manifest of {str(self.path)!r}")
        data = self.file_path(name).read_bytes()
        if sha(data) != expected:
            raise ChecksumError(
                f"file {name!r} in the store {str(self.path)!r} does not match its sha256 in the manifest; the store "
                "is corrupt or was modified outside clusterforget"
            )
        return data

    def audit(self, doc: dict, elsewhere: Iterable[str] = ()) -> dict[str, bytes]:
        """Read and verify every file ``doc`` references, and the ledger's committed tail. Deletes nothing.

        ``elsewhere``: files verified by whoever reads them instead (group rows that a cluster's workers read and
        check against their sha256, ``codec.load(rows="cluster")``); only their presence is checked here."""
        skip = set(elsewhere)
        files = {name: self.read_file(name, doc) for name in sorted(doc["files"]) if name not in skip}
        for name in sorted(skip):
            self.file_path(name)
        ledger.check_tail(self.path, doc)
        return files

    def authenticated(self, *, files: bool = True, elsewhere: Callable[[dict], Iterable[str]] | None = None,
                      chain: bool = False) -> tuple[dict, dict[str, bytes]]:
        """(the manifest on disk, the verified bytes of every file it references): the one open-and-authenticate
        sequence of every reader (``cf.load``, ``remove_unreferenced``, the checks). Deletes nothing.

        Parse; refuse a manifest whose authentication does not match this store's key (a keyed store needs its
        key, a key given needs a store authenticated by it); with ``files``, ``audit`` (``elsewhere(doc)``: the
        files whoever reads them verifies); with a key (or ``chain``) the whole ledger chain, and with a key every
        committed line's HMAC."""
        doc = read_manifest(self.path)
        auth.check_manifest(doc, self.key, self.path)
        found = self.audit(doc, elsewhere(doc) if elsewhere is not None else ()) if files else {}
        if self.key is not None or chain:
            ledger.read(self.path, doc)
        if self.key is not None:
            auth.check_ledger(self.path, doc, self.key)
        return doc, found

    def file_path(self, name: str) -> Path:
        """The absolute path of a file in the store (inside it, not a symbolic link, a file that is there)."""
        p = safe_path(self.path, name)
        if p.is_symlink():
            raise StoreError(f"file {name!r} in the store {str(self.path)!r} is a symbolic link; refusing it")
        if p.is_dir():
            raise ChecksumError(f"file {name!r} in the store {str(self.path)!r} is a directory")
        if not p.is_file():
            raise ChecksumError(f"file {name!r} listed in the manifest is missing from the store {str(self.path)!r}")
        return p.resolve()

    def hmac_key(self) -> bytes:
        """What tombstones, forgotten-id digests and hashed group names are keyed with: the key kept outside
        the store if there is one, else the store's own ``secret.key``."""
        return self.key if self.key is not None else self.secret()

    def names(self) -> tombstones.Names:
        """How this store names ids and groups (ledger, tombstones, checks, certificates): the one place that
        picks the key."""
        return tombstones.Names(self.hmac_key(), self.key is not None)

    def _readded(self, added: pa.ChunkedArray | pa.Array | None) -> list[bytes]:
        """Digests of the tombstoned ids among the ids a change ``added`` (``add_rows(...,
        allow_forgotten=True)``): the ledger records them, so a certificate of the request that forgot them
        fails naming this version. Only the added ids are hashed, and only when the store has tombstones."""
        if added is None or not len(added) or not (self.tombstones() or self.secret_tombstones()):
            return []
        return sorted(self.names().ids(set(self.tombstoned(added))))

    def _digests(self, listed: str) -> set[bytes]:
        """The digests in the tombstone files the manifest lists under ``listed``."""
        out: set[bytes] = set()
        for name in self.manifest.get(listed, []) if self.manifest else []:
            out |= tombstones.parse(self.read_file(name))
        return out

    def secret_tombstones(self) -> set[bytes]:
        """Tombstones carried from an unauthenticated store, under its ``secret.key``."""
        if self._tomb_secret is None:
            self._tomb_secret = self._digests("tombstones_secret")
        return self._tomb_secret

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = bytes.fromhex(self.read_file(SECRET).decode("ascii").strip())
        return self._secret

    def tombstones(self) -> set[bytes]:
        if self._tomb is None:
            self._tomb = self._digests("tombstones")
        return self._tomb

    def _check_current(self) -> None:
        doc = read_manifest(self.path)
        if self.manifest is None or doc.get("commit") != self.manifest.get("commit"):
            raise StoreError(
                f"the store {str(self.path)!r} was changed by another writer (now at version {doc.get('version')}) "
                f"since this model last committed (version {self.version}); nothing was changed. Reload it with "
                "cf.load and redo the change"
            )

    # ------------------------------------------------------------------ recovery
    def leftovers(self, doc: dict) -> list[str]:
        """The unreferenced files an interrupted commit could have written or left: temp manifests; files of an
        attempted version (named ``<version>-<token>`` with a version at or above ``doc``'s, which no committed
        version can have referenced); and, unless ``doc``'s own clean-up finished (``CLEAN`` holds its commit),
        the files the previous version referenced and ``doc`` supersedes. Any other unreferenced file (an older
        version's file put back, a copy, an export) is not a leftover: it is kept, and fails the purge check."""
        keep = set(doc["files"])
        version = int(doc["version"])
        marker = self.path / CLEAN
        try:
            done = not marker.is_symlink() and marker.read_text().strip() == doc.get("commit")
        except (OSError, UnicodeDecodeError):
            done = False
        superseded = set() if done else set(doc.get("superseded", []))
        out: list[str] = []
        for sub in SUBDIRS:
            d = self.path / sub
            if d.is_symlink():
                raise StoreError(
                    f"{sub!r} in the store {str(self.path)!r} is a symbolic link; a store's directories must be real "
                    "directories inside it. Replace the link with a copy of the directory"
                )
            if not d.is_dir():
                continue
            for entry in sorted(os.listdir(d)):
                rel = f"{sub}/{entry}"
                if rel in keep or (d / entry).is_dir():
                    continue
                m = _ATTEMPT.fullmatch(entry)
                if rel in superseded or (m is not None and int(m.group(1)) >= version):
                    out.append(rel)
        out += sorted(e for e in os.listdir(self.path) if e.startswith(TMP_PREFIX))
        return out

    def remove(self, names: list[str]) -> None:
        """Unlink store-relative ``names`` (never following a link), fsync their directories."""
        dirs = set()
        for rel in names:
            crash_point("delete")
            p = self.path / rel
            p.unlink()
            dirs.add(p.parent)
        for d in sorted(dirs):
            fsync_dir(d)

    def cleanup(self, doc: dict) -> list[str]:
        """Finish what an interrupted commit left (``leftovers``): delete those files, cut an uncommitted ledger
        tail, then mark ``doc``'s clean-up done. Leaves every other file in place.

        Call only after ``audit(doc)`` passed. Returns the store-relative names it removed; ``recovered``
        keeps them until the next commit records them in its ledger line.
        """
        removed = self.leftovers(doc)
        self.remove(removed)
        ledger.truncate(self.path, doc["ledger"]["size"])
        marker = self.path / CLEAN
        try:
            current = marker.read_text().strip() if marker.is_file() and not marker.is_symlink() else None
        except (OSError, UnicodeDecodeError):
            current = None
        if current != doc.get("commit"):
            if marker.is_symlink() or marker.is_dir():
                raise StoreError(f"{CLEAN} in the store {str(self.path)!r} is not a regular file; remove it")
            write_durable(marker, str(doc.get("commit")).encode("ascii") + b"\n")
        if removed:
            self.recovered = sorted(set(self.recovered) | set(removed))
        return removed

    def remove_unreferenced_locked(self, doc: dict, confirm: Callable[[list[str]], bool] | None = None) -> list[str]:
        """Delete every unreferenced file and record their names in a new ledger line (a version that changes
        nothing else). The caller holds the lock and verified ``doc``; ``confirm(names)`` must return True for
        anything to be removed."""
        self.cleanup(doc)
        extra = unreferenced(self.path, doc)
        if not extra or (confirm is not None and confirm(list(extra)) is not True):
            return []
        self.remove(extra)
        note = f"removed {len(extra)} file(s) the manifest did not reference"
        self.record_locked(Report(operation="remove_unreferenced", is_deletion=False, note=note), {"removed": extra})
        return extra

    def record_locked(self, report: Report, fields: dict) -> int:
        """A new version with the same files and one more ledger line (``fields`` added to it)."""
        old = self.manifest
        version = int(old["version"]) + 1
        commit = secrets.token_hex(16)
        ledger.truncate(self.path, int(old["ledger"]["size"]))
        entry = ledger.entry(report, old_version=int(old["version"]), version=version, commit=commit,
                             prev=old["ledger"]["tail"], forgotten=[], live_names=set(), live_keys=set(),
                             n_rows=int(old["n_rows"]), names=self.names())
        entry.update(fields)
        line = self._append_line(entry)
        doc = dict(old)
        doc.update(version=version, commit=commit, time=entry["time"], superseded=[],
                   ledger={"size": int(old["ledger"]["size"]) + len(line) + 1, "tail": sha(line),
                           "lines": int(old["ledger"]["lines"]) + 1})
        self._swap_manifest(doc, commit)
        fsync_dir(self.path)
        self.manifest = doc
        self.recovered = []
        self.cleanup(doc)
        return version

    # ------------------------------------------------------------------ writing
    def _append_line(self, entry: dict) -> bytes:
        """Append a version's ledger line (with what the last load's crash clean-up removed, on the record;
        signed under the key); returns the line's bytes."""
        if self.recovered:
            entry["recovered"] = list(self.recovered)
        if self.key is not None:
            entry = auth.sign_line(entry, self.key)
        return ledger.append(self.path, entry)

    def _swap_manifest(self, doc: dict, commit: str) -> None:
        """The commit point: ``doc`` checksummed (and signed), written to a temp name, fsync'd, renamed onto the
        manifest."""
        doc.pop("mac", None)
        doc["checksum"] = manifest_checksum(doc)
        if self.key is not None:
            auth.sign_manifest(doc, self.key)
        tmp = self.path / f"{TMP_PREFIX}{commit}"
        write_durable(tmp, dumps(doc))
        crash_point("manifest-staged")
        os.replace(tmp, self.path / MANIFEST)
        crash_point("manifest-renamed")

    def commit_locked(self, state: Any, change: Outcome, *, initial: dict | None = None) -> int:
        """Steps 2-5 of the protocol (the caller holds the lock and checked the store is current).

        ``initial``: for a new store, ``{"ledger": bytes, "tombstones": set}`` carried over (or empty).
        """
        report, forgotten = change.report, change.forgotten
        t0 = time.perf_counter()
        old = self.manifest
        old_version = None if old is None else int(old["version"])
        ens_version = int(state.version)
        version = ens_version if old_version is None or ens_version > old_version else old_version + 1
        writer = Writer(self, version)
        committed_size = 0 if old is None else int(old["ledger"]["size"])
        ledger_touched = False
        try:
            doc = self.encoder(state, writer)
            # tombstones of the ids this operation removed
            digests: list[bytes] = []
            if forgotten is not None and len(forgotten):
                digests = sorted(self.names().ids(forgotten.to_pylist()))
            tomb_files = list(old.get("tombstones", [])) if old is not None else []
            tomb_sha = {n: old["files"][n] for n in tomb_files} if old is not None else {}
            carried = (initial or {}).get("tombstones") or set()
            # tombstones of an unauthenticated store saved with a key: they stay under its secret (the ids
            # they hash are gone, so they cannot be re-keyed), listed apart
            secret_tomb = list(old.get("tombstones_secret", [])) if old is not None else []
            secret_sha = {n: old["files"][n] for n in secret_tomb}
            if initial is not None and initial.get("secret_tombstones"):
                rel = f"{TOMB_DIR}/{version}-{secrets.token_hex(8)}.bin"
                secret_sha = {rel: writer.new_file(rel, b"".join(sorted(initial["secret_tombstones"])))}
                secret_tomb = [rel]
            new_tomb = sorted(set(digests) | set(carried))
            if len(tomb_files) + (1 if new_tomb else 0) > tombstones.COMPACT_AFTER:
                new_tomb = sorted(set(new_tomb) | self.tombstones())
                tomb_files, tomb_sha = [], {}
            if new_tomb:
                rel = f"{TOMB_DIR}/{version}-{secrets.token_hex(8)}.bin"
                tomb_sha[rel] = writer.new_file(rel, b"".join(new_tomb))
                tomb_files.append(rel)
            doc["tombstones"] = tomb_files
            doc["files"].update(tomb_sha)
            if secret_tomb:
                doc["tombstones_secret"] = secret_tomb
                doc["files"].update(secret_sha)
            if self.key is not None:
                since = old["auth"]["since"] if old is not None and "auth" in old else None
                doc["auth"] = {"scheme": auth.SCHEME, "key_id": auth.key_id(self.key), "since": since}
            doc["files"][SECRET] = old["files"][SECRET] if old is not None else sha((self.path / SECRET).read_bytes())
            if old is not None and _content(doc) == _content(old) and ens_version == old_version and not digests:
                writer.discard()
                return old_version  # nothing changed: no new version, no ledger line
            for sub in sorted({rel.split("/")[0] for rel in writer.written}):
                fsync_dir(self.path / sub)  # the new files' directory entries are durable too
            crash_point("files-written")

            # ledger: cut an uncommitted tail, append this version's line, fsync
            if initial is not None:
                base = initial.get("ledger", b"")
                write_durable(self.path / LEDGER, base)
                committed_size = len(base)
                prev = sha(base.splitlines()[-1]) if base else ""
                n_lines = len(base.splitlines())
                if self.key is not None:
                    doc["auth"]["since"] = n_lines  # this line and every later one carry a mac
            else:
                ledger.truncate(self.path, committed_size)
                prev = old["ledger"]["tail"]
                n_lines = int(old["ledger"]["lines"])
            commit = secrets.token_hex(16)
            live_names = {g["name"] for g in doc["groups"]}
            live_keys = {n.split(" [shard ")[0] for n in live_names}
            entry = ledger.entry(report, old_version=old_version, version=version, commit=commit, prev=prev,
                                 forgotten=digests, readded=self._readded(change.added),
                                 reweighted=sorted(self.names().ids(change.reweighted.to_pylist()))
                                 if change.reweighted is not None and len(change.reweighted) else [],
                                 live_names=live_names, live_keys=live_keys,
                                 n_rows=int(doc["n_rows"]), names=self.names(),
                                 keys_are_data=doc["ensemble"]["grouping"].get("kind") == "key")
            ledger_touched = True
            line = self._append_line(entry)
            crash_point("ledger-appended")

            # what this version supersedes: the clean-up (or, after a crash, the next load) deletes exactly these
            doc["superseded"] = sorted(set(old["files"]) - set(doc["files"])) if old is not None else []
            doc.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                library_version=__version__,
                environment=environment(),
                version=version,
                commit=commit,
                time=entry["time"],
                ledger={"size": committed_size + len(line) + 1, "tail": sha(line), "lines": n_lines + 1},
            )
            self._swap_manifest(doc, commit)
        except BaseException as exc:
            # the old manifest is still in force: remove what this attempt wrote
            writer.discard()
            try:
                for entry_name in os.listdir(self.path):
                    if entry_name.startswith(TMP_PREFIX):
                        (self.path / entry_name).unlink()
                if ledger_touched:
                    ledger.truncate(self.path, committed_size)
            except OSError:
                pass  # the next commit or load cleans up
            if isinstance(exc, OSError) and not isinstance(exc, ClusterForgetError):
                raise StoreError(f"could not commit to the store {str(self.path)!r}: {exc}; nothing was changed") from exc
            raise
        # ---- committed: from here on nothing may raise (the caller installs the state it committed)
        self.manifest = doc
        self.recovered = []
        self.rows_cache = writer.rows_cache
        self.member_cache = writer.member_cache
        if self._tomb is not None or initial is not None:
            self._tomb = (self._tomb or set()) | set(digests) | set(carried)
        if initial is not None:
            self._tomb_secret = None
        try:
            fsync_dir(self.path)
        except OSError as exc:
            warnings.warn(f"fsync of the store directory failed after commit: {exc}", RuntimeWarning, stacklevel=3)
        crash_point("manifest-swapped")
        try:
            self.cleanup(doc)
        except OSError as exc:
            warnings.warn(
                f"committed version {version}, but deleting the previous version's files failed: {exc}; "
                "the next commit or load deletes them",
                RuntimeWarning,
                stacklevel=3,
            )
        crash_point("cleaned")
        self.last_commit_seconds = time.perf_counter() - t0
        return version


def same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def create(path: Any, lock_timeout: float, encoder: Encoder, key: bytes | None = None) -> Store:
    """A directory for a new store (created if missing); ``StoreError`` if it exists and is not a directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise StoreError(f"{str(p)!r} exists and is not a directory; pass a new or empty directory to save into")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {str(p)!r}: {exc}") from exc
    return Store(p, lock_timeout, encoder, key=key)


def initialise(store: Store, state: Any, bound: Store | None, report: Report) -> int:
    """First commit into an empty directory (the caller holds its lock); carries a bound model's history.

    Saving a bound model to a new directory copies its secret, tombstones and ledger, so forgotten ids stay
    refused there. A failed first save leaves nothing behind but the lock file.
    """
    p = store.path
    existing = sorted(e for e in os.listdir(p) if e != LOCK)
    if existing:
        what = "a clusterforget store of another model" if MANIFEST in existing else "not empty"
        raise StoreError(
            f"{str(p)!r} is {what} and is not this model's store; nothing was written. Save to a new or empty "
            "directory, or delete that one first (cf.load it instead to keep working on that model)"
        )
    carried: dict[str, Any] = {"ledger": b"", "tombstones": set(), "secret_tombstones": set()}
    if bound is not None:
        if bound.key is not None and bound.key != store.key:
            raise StoreError(
                f"this model's store {str(bound.path)!r} is authenticated, and its tombstones are keyed with its "
                "key; save it with the same key (nothing was written)"
            )
        secret = bound.secret()
        if bound.key is None and store.key is not None:
            carried["secret_tombstones"] = set(bound.tombstones())  # under secret.key; cannot be re-keyed
        else:
            carried["tombstones"] = set(bound.tombstones())
            carried["secret_tombstones"] = set(bound.secret_tombstones())
        with open(bound.path / LEDGER, "rb") as f:
            carried["ledger"] = f.read(int(bound.manifest["ledger"]["size"]))
    else:
        secret = secrets.token_bytes(32)
    try:
        for sub in SUBDIRS:
            (p / sub).mkdir(exist_ok=True)
        write_durable(p / SECRET, secret.hex().encode("ascii") + b"\n")
        os.chmod(p / SECRET, 0o600)
        store._secret = secret
        return store.commit_locked(state, Outcome(state, report), initial=carried)
    except BaseException:
        for e in os.listdir(p):
            if e != LOCK:
                q = p / e
                shutil.rmtree(q) if q.is_dir() and not q.is_symlink() else q.unlink()
        raise


def verify(path: Any) -> int:
    """Check every file of a store against its manifest and the ledger's hash chain; returns the version.

    Read-only: takes no lock and deletes nothing.
    """
    p = Path(path)
    store = Store(p)
    doc = read_manifest(p)
    store.audit(doc)
    ledger.read(p, doc)
    return int(doc["version"])


def read_ledger(path: Any, *, verify: bool = True) -> list[dict]:
    """The committed ledger entries of a store, oldest first (an uncommitted tail left by a crash is skipped).

    With ``verify`` the hash chain is checked against the manifest (``ChecksumError`` if it was altered).
    """
    p = Path(path)
    return ledger.read(p, read_manifest(p), verify=verify)


__all__ = ["Store", "Writer", "FORMAT_VERSION", "unreferenced", "CORE_ENVIRONMENT", "environment_names", "environment", "environment_mismatch",
           "describe_mismatch", "read_manifest", "verify", "read_ledger", "create", "initialise"]
