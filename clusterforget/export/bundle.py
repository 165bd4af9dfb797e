"""The native bundle: a JSON manifest plus the members' native model files, scored by ``Scorer``.

Layout of a bundle directory::

    bundle/
      manifest.json          format, provenance (model version, store version, ledger head), schema,
                             grouping and its fitted state, members (key, shard, weight, class columns,
                             file, sha256), classes, override rules; its own sha256 in ``checksum``
      members/<sha256>.txt   one native model file per member (LightGBM text, XGBoost JSON, or the JSON of
                             a constant member), named by its content

Files are content-addressed, so a re-export after a forget writes only the retrained members; the manifest
is renamed into place last (the switch a watcher sees), then files no manifest references are deleted.

``Scorer`` reads a bundle the way ``cf.load`` reads a store: parse the manifest, read and verify every file
against its sha256, then build; nothing is unpickled or evaluated. It rebuilds the ``ScoringSpec`` and calls
``scoring.score``, the function ``predict_proba`` calls, so its outputs are bitwise those of the model.

An export is a file from elsewhere, so reading one is hostile-input handling (``check_manifest``): every field
is checked for type and range before anything is built (integer version, non-empty members, finite weights,
task, classes and class columns consistent with the members, file names inside the export); files are read
without following symbolic links, only if regular, and up to ``MAX_FILE_BYTES``. Checksums catch accidents;
with a key (``export(..., key=...)``, the store's HMAC code in ``store.auth``) the manifest carries an HMAC of
its checksum, so a byte changed without the key is refused before anything is built. A shared library
(``"lib"``) is loaded only from a ``format="compiled"`` export, and only from an authenticated one or with
``trust_code=True``: loading it runs its code.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from filelock import FileLock

from ..data import CATEGORICAL, NUMERIC, Schema, conform, one_row
from ..errors import AuthenticationError, ChecksumError, ExportError, InputError, StoreError, quoted
from ..explain import contributions, lightgbm_layout, raw_scores, reasons, reasons_frame
from ..grouping import ClusterState, grouping_from_dict
from ..members import CLASSIFICATION, MEMBERS as MEMBER_KINDS, REGRESSION, Member, member_from_bytes
from ..rules import compile_mask
from ..scoring import Override, RowScorer, ScoredMember, ScoringSpec, apply_overrides, score
from ..store.auth import SCHEME, check_manifest as check_manifest_auth, key_id, sign_manifest
from ..store.commit import manifest_checksum
from ..store.fs import dumps, fsync_dir, safe_path, sha
from ..store.keys import resolve_key
from ._files import provenance, write_atomic

FORMAT = "clusterforget-bundle"
PROTOCOL = 1
MANIFEST = "manifest.json"
MEMBERS = "members"
LIBS = "libs"  # compiled members (format="compiled")
LOCK = ".export.lock"
MAX_MANIFEST_BYTES = 64 << 20
MAX_FILE_BYTES = 1 << 30  # one member file; a bigger one is refused before it is read


def _json_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# extra kinds of member file a bundle can hold, by manifest key (``compiled.py`` registers "lib"):
# name -> function(member entry, verified file bytes, native member) -> the member scoring uses
MEMBER_LOADERS: dict[str, Callable[[dict[str, Any], bytes, Member], Member]] = {}


def bundle_document(model: Any, files: dict[str, bytes], fmt: str = "bundle") -> dict[str, Any]:
    """The manifest of ``model``'s scoring spec; member files go into ``files`` (name -> bytes)."""
    from ..estimators import ensemble_of  # here: scoring a bundle never loads the estimators
    ens = ensemble_of(model)
    ens.check_ready()
    spec = ens.scoring_spec()
    members = []
    for sm in spec.members:
        data = sm.member.scoring_bytes()  # no training range in an export (members.neutral_feature_infos)
        digest = sha(data)
        name = f"{MEMBERS}/{digest}.txt"
        files[name] = data
        members.append({
            "name": sm.name,
            "key": [_json_value(v) for v in sm.key],
            "shard": int(sm.shard),
            "n_shards": int(sm.n_shards),
            "weight": float(sm.weight),
            "weight_sum": None if sm.weight_sum is None else float(sm.weight_sum),
            "class_index": None if sm.class_index is None else [int(i) for i in sm.class_index],
            "meta": json.loads(dumps(sm.member.meta())),
            "file": name,
        })
    return {
        "format": FORMAT,
        "protocol": PROTOCOL,
        **provenance(model, fmt),
        "task": spec.task,
        "schema": spec.schema.to_dict(),
        "classes": None if spec.classes is None else [_json_value(c) for c in spec.classes.tolist()],
        "combine": spec.combine,
        "grouping": spec.grouping.to_dict(),
        "state": None if spec.state is None else spec.state.to_dict(),
        "members": members,
        "overrides": [
            {"rule_id": o.rule_id, "rule": o.text, "label": _json_value(o.label), "class_index": pos}
            for o, pos in zip(spec.overrides, spec.override_classes)
        ],
        "files": {name: sha(data) for name, data in sorted(files.items())},
    }


def write_bundle(model: Any, path: Any, fmt: str = "bundle",
                 add_files: Callable[[Path, dict[str, Any], dict[str, bytes]], None] | None = None,
                 key: Any = None) -> dict[str, Any]:
    """Export ``model`` as a bundle directory at ``path``; returns the manifest written.

    Member files are written first (fsync'd, under their content hash), the manifest is renamed into place
    last, then member files of earlier exports that the new manifest does not reference are deleted. With
    ``key`` (bytes, hex, a key file; default ``$CLUSTERFORGET_KEY(_FILE)``) the manifest is authenticated.
    """
    out = Path(path)
    secret = resolve_key(key)
    if out.exists() and not out.is_dir():
        raise ExportError(f"bundle path {str(out)!r} is a file; pass a directory (new or a previous bundle)")
    _refuse_links(out)
    # a directory that holds something other than a bundle (or the start of one a crash left) is not ours
    if out.is_dir() and not (out / MANIFEST).exists() and {p.name for p in out.iterdir()} - {MEMBERS, LIBS, LOCK}:
        raise ExportError(
            f"{str(out)!r} is a non-empty directory without a bundle manifest; pass a new directory or a bundle "
            "exported before (export never overwrites other files)"
        )
    files: dict[str, bytes] = {}
    doc = bundle_document(model, files, fmt)
    if add_files is not None:  # another format's files next to the native ones (compiled libraries)
        add_files(out, doc, files)
        doc["files"] = {name: sha(data) for name, data in sorted(files.items())}
    if secret is not None:
        doc["auth"] = {"scheme": SCHEME, "key_id": key_id(secret)}
    out.mkdir(parents=True, exist_ok=True)
    # two exports into one directory at once would delete each other's new member files
    with FileLock(str(out / LOCK)):
        _refuse_links(out)  # again, under the lock: what is deleted below must be inside the export
        _write(out, doc, files, secret)
    return doc


def _refuse_links(out: Path) -> None:
    """An export's folders and files must be real ones inside it: a writer following a link would write or
    delete elsewhere (stale member files are deleted), a reader would serve a file from outside."""
    for sub in (MEMBERS, LIBS):
        folder = out / sub
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise ExportError(f"{sub!r} in the export {str(out)!r} is a symbolic link or not a directory; an export's "
                              "folders must be real directories inside it. Remove it, or export to a new directory")
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_symlink():
                    raise ExportError(f"{sub}/{p.name} in the export {str(out)!r} is a symbolic link; remove it "
                                      "(export writes and deletes only real files inside the export)")


def _write(out: Path, doc: dict[str, Any], files: dict[str, bytes], secret: bytes | None = None) -> None:
    for sub in {Path(name).parent for name in files} | {Path(MEMBERS)}:
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = out / name
        if target.is_file() and sha(target.read_bytes()) == doc["files"][name]:
            continue  # content-addressed: an unchanged member is already there
        write_atomic(target, data)
    for sub in {Path(name).parent for name in files}:
        fsync_dir(out / sub)
    doc["checksum"] = manifest_checksum(doc)
    if secret is not None:
        sign_manifest(doc, secret)
    write_atomic(out / MANIFEST, dumps(doc))
    for sub in (MEMBERS, LIBS):
        if not (out / sub).is_dir():
            continue
        for stale in (out / sub).iterdir():
            if f"{sub}/{stale.name}" not in doc["files"] and not stale.is_symlink() and stale.is_file():
                stale.unlink(missing_ok=True)  # earlier exports' members: may hold what forgotten rows taught
        fsync_dir(out / sub)


def read_file(root: Path, name: Any, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the export's file ``name`` (manifest entry), inside the export; see ``read_regular``."""
    try:
        path = safe_path(root, name) if name != MANIFEST else root / MANIFEST
    except StoreError:
        raise ExportError(f"the export {str(root)!r} names a file {quoted(name)} outside it or through a symbolic "
                          "link; refusing to read it") from None
    return read_regular(path, limit)


def read_regular(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, not through a symbolic link, only if a regular file (a FIFO would block the reader
    for ever), at most ``limit`` bytes (``ExportError`` otherwise; ``OSError`` if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        if Path(path).is_symlink():
            raise ExportError(f"{str(path)!r} is a symbolic link; an export's files must be real files inside "
                              "it") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"{str(path)!r} is not a regular file; an export holds only regular files")
        if st.st_size > limit:
            raise ExportError(f"{str(path)!r} has {st.st_size} bytes, over the limit of {limit}; refusing to read it")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ExportError(f"{str(path)!r} grew over the limit of {limit} bytes while read; refusing it")
    return data


def read_bundle(path: Any, key: Any = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse and verify a bundle: its manifest's fields, its own checksum and (with a key) its HMAC, then every
    file against its sha256. Nothing is built; raises ``ExportError`` / ``ChecksumError``."""
    doc, files, _, _ = _read_bundle(Path(path), resolve_key(key))
    return doc, files


def _read_bundle(root: Path, key: bytes | None, held: dict[str, str] | None = None,
                 known: frozenset | set | None = None,
                 early: Callable[[dict[str, Any]], dict[str, bytes]] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, bytes], bool, list | None]:
    """As ``read_bundle``; ``held`` (file name -> sha256) names files the caller already read, verified and
    parsed: one the manifest lists under the same name and sha256 is not read again (the name is its content
    address, and the manifest holding that sha256 was verified above). ``known``: contents (``_contents``) of
    members the caller checked in a manifest before, whose meta ``check_manifest`` need not check again; then
    the manifest's ``_contents`` come fourth (else None). ``early(doc)``, called with the parsed manifest before
    any of it is verified, returns files it read meanwhile (name -> bytes, none of them held): they are verified
    as every other file is, those very bytes, and not read again."""
    try:
        raw = read_file(root, MANIFEST, MAX_MANIFEST_BYTES)
    except OSError as exc:
        raise ExportError(f"{str(root)!r} is not a bundle ({MANIFEST}: {exc}); pass a directory written by "
                          "model.export(path, format='bundle')") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ChecksumError(f"{MANIFEST} in {str(root)!r} is not JSON ({quoted(str(exc))}); export the bundle again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError(f"{MANIFEST} in {str(root)!r} is not a clusterforget bundle manifest")
    if doc.get("protocol") != PROTOCOL or type(doc.get("protocol")) is not int:
        raise ExportError(f"bundle {str(root)!r} has protocol {quoted(doc.get('protocol'))}; this version reads "
                          f"protocol {PROTOCOL}: export it again with this version")
    read = early(doc) if early is not None else {}
    if doc.get("checksum") != manifest_checksum(doc):
        raise ChecksumError(f"{MANIFEST} in {str(root)!r} does not match its own checksum; export again")
    verified = check_manifest_auth(doc, key, root, "export")
    contents = check_manifest(doc, root, known)
    files = {}
    for name, expected in doc["files"].items():
        if held is not None and held.get(name) == expected:
            continue
        try:
            data = read[name] if name in read else read_file(root, name)
        except OSError as exc:
            raise ChecksumError(f"bundle file {name!r} in {str(root)!r} cannot be read ({exc}); export again") from exc
        if sha(data) != expected:
            raise ChecksumError(f"bundle file {name!r} in {str(root)!r} does not match its sha256; export again")
        files[name] = data
    return doc, files, verified, contents


def _int(value: Any, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not (isinstance(value, float) and not math.isfinite(value))


def check_manifest(doc: dict[str, Any], root: Path, known: frozenset | set | None = None) -> list[tuple] | None:
    """Every field a scorer reads, checked for type and range, and against the others; ``ExportError`` naming
    the first bad one. Run before any member is parsed, so a hostile manifest builds nothing.

    ``known``: contents (``_contents``: files' sha256, meta, schema) of members checked in an earlier manifest.
    A member with one of them has that meta under that schema, which passed these checks then; its meta (the
    vocabularies, most of a manifest) is not walked again. Its place in this manifest (file, weight, class
    columns) is checked as every member's is. With ``known``, returns every member's content."""
    where = f"the export {str(root)!r}"

    def bad(field: str, value: Any, want: str) -> ExportError:
        return ExportError(f"{where}: {field} is {quoted(value)}, but must be {want}; export the model again")

    if not _int(doc.get("model_version")):
        raise bad("model_version", doc.get("model_version"), "a whole number >= 0")
    store = doc.get("store")
    if store is not None and not (isinstance(store, dict) and _int(store.get("version"))):
        raise bad("store", store, "null or {\"version\": a whole number, ...}")
    if doc.get("export_format") not in ("bundle", "compiled"):
        raise bad("export_format", doc.get("export_format"), "'bundle' or 'compiled'")
    task = doc.get("task")
    if task not in (CLASSIFICATION, REGRESSION):
        raise bad("task", task, f"{CLASSIFICATION!r} or {REGRESSION!r}")
    schema = doc.get("schema")
    if not (isinstance(schema, dict) and isinstance(schema.get("names"), list) and isinstance(schema.get("kinds"), list)
            and schema["names"] and len(schema["names"]) == len(schema["kinds"])
            and all(isinstance(n, str) and n for n in schema["names"]) and len(set(schema["names"])) == len(schema["names"])
            and all(k in (NUMERIC, CATEGORICAL) for k in schema["kinds"]) and isinstance(schema.get("from_frame"), bool)):
        raise bad("schema", schema, "names (distinct, non-empty) and kinds ('numeric' / 'categorical') of equal length")
    if doc.get("combine") not in ("average", "route"):
        raise bad("combine", doc.get("combine"), "'average' or 'route'")
    files = doc.get("files")
    if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items())):
        raise bad("files", files, "a map of file name to sha256")
    for name in files:
        parts = name.split("/")
        if len(parts) != 2 or parts[0] not in (MEMBERS, LIBS) or parts[1] in ("", ".", "..") or "\\" in name or "\x00" in name:
            raise bad("a file name", name, f"'{MEMBERS}/<name>' or '{LIBS}/<name>' inside the export")
    classes = doc.get("classes")
    if task == CLASSIFICATION:
        if not (isinstance(classes, list) and classes and all(_scalar(c) for c in classes)
                and len({(type(c).__name__, c) for c in classes}) == len(classes)):
            raise bad("classes", classes, "a non-empty list of distinct labels")
    elif classes is not None:
        raise bad("classes", classes, "null for a regressor")
    members = doc.get("members")
    if not (isinstance(members, list) and members and all(isinstance(m, dict) for m in members)):
        raise bad("members", members, "a non-empty list of members")
    schema_text = json.dumps(schema, sort_keys=True) if known else ""
    contents: list[tuple] = []
    total = 0.0
    for i, m in enumerate(members):
        field = f"members[{i}]"
        if not isinstance(m.get("name"), str) or not isinstance(m.get("key"), list) or not all(
                v is None or _scalar(v) or isinstance(v, bool) for v in m["key"]):
            raise bad(f"{field}.name/key", [m.get("name"), m.get("key")], "a name and a list of key values")
        if not (_int(m.get("n_shards"), 1) and _int(m.get("shard")) and m["shard"] < m["n_shards"]):
            raise bad(f"{field}.shard", [m.get("shard"), m.get("n_shards")], "0 <= shard < n_shards")
        w = m.get("weight")
        if type(w) not in (int, float) or not math.isfinite(w) or w < 0:
            raise bad(f"{field}.weight", w, "a finite number >= 0")
        total += w
        ws = m.get("weight_sum")  # absent from bundles written before it
        if ws is not None and (type(ws) not in (int, float) or not math.isfinite(ws) or ws < 0):
            raise bad(f"{field}.weight_sum", ws, "a finite number >= 0, or null")
        if m.get("file") not in files or not str(m["file"]).startswith(MEMBERS + "/"):
            raise bad(f"{field}.file", m.get("file"), f"a '{MEMBERS}/...' file listed in files")
        lib = m.get("lib")
        if "lib" in m and (doc["export_format"] != "compiled" or lib not in files or not str(lib).startswith(LIBS + "/")):
            raise bad(f"{field}.lib", lib, "absent: only a format='compiled' export lists shared libraries, under "
                      f"'{LIBS}/'")
        meta = m.get("meta")
        if known:
            contents.append(_content(doc, m, schema_text))  # its files are in ``files``: checked above
        if not (known and contents[-1] in known):
            if not (isinstance(meta, dict) and meta.get("learner") in MEMBER_KINDS and _int(meta.get("n_rows"))
                    and isinstance(meta.get("vocab"), dict)):
                raise bad(f"{field}.meta", meta, f"a member's meta (learner one of {sorted(MEMBER_KINDS)})")
            for col, values in meta["vocab"].items():
                if col not in schema["names"] or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    raise bad(f"{field}.meta.vocab", col, "a categorical column's list of strings")
        local, index = meta.get("classes"), m.get("class_index")
        if task == REGRESSION:
            if local is not None or index is not None:
                raise bad(f"{field}.class_index", index, "null for a regressor")
            continue
        if not (isinstance(local, list) and local and isinstance(index, list) and len(index) == len(local)
                and all(_int(j) and j < len(classes) for j in index) and len(set(index)) == len(index)):
            raise bad(f"{field}.class_index", index, f"distinct class columns in 0..{len(classes) - 1}, one per class "
                      "the member saw")
        if [classes[j] for j in index] != local:
            raise bad(f"{field}.meta.classes", local, f"the classes {quoted([classes[j] for j in index])} its class_index names")
    if total <= 0:
        raise bad("the members' weights", total, "positive in sum")
    overrides = doc.get("overrides")
    if not isinstance(overrides, list):
        raise bad("overrides", overrides, "a list")
    for i, o in enumerate(overrides):
        if not (isinstance(o, dict) and isinstance(o.get("rule_id"), str) and isinstance(o.get("rule"), str)
                and len(o["rule"]) <= 100_000):
            raise bad(f"overrides[{i}]", o, "a rule id and its rule text")
        pos = o.get("class_index")
        if task == CLASSIFICATION and not (pos is None or (_int(pos) and pos < len(classes))):
            raise bad(f"overrides[{i}].class_index", pos, f"null or a class column in 0..{len(classes) - 1}")
        if task == REGRESSION and not (type(o.get("label")) in (int, float) and math.isfinite(o["label"])):
            raise bad(f"overrides[{i}].label", o.get("label"), "a finite number")
    for field in ("grouping", "state"):
        if not (doc.get(field) is None or isinstance(doc.get(field), dict)) or (field == "grouping" and doc.get(field) is None):
            raise bad(field, doc.get(field), "an object")
    return contents if known else None


def _files_of(entry: dict[str, Any]) -> list[str]:
    return [entry[k] for k in ("file", *MEMBER_LOADERS) if k in entry]


def _contents(doc: dict[str, Any]) -> list[tuple]:
    """What each member is built from: its files' sha256, its meta and the schema."""
    schema = json.dumps(doc["schema"], sort_keys=True)
    return [_content(doc, entry, schema) for entry in doc["members"]]


def _content(doc: dict[str, Any], entry: dict[str, Any], schema_text: str) -> tuple:
    return (tuple(doc["files"][name] for name in _files_of(entry)), json.dumps(entry.get("meta"), sort_keys=True),
            schema_text)


def _member(entry: dict[str, Any], files: dict[str, bytes], allow_code: bool, schema: Schema) -> Member:
    member = member_from_bytes(entry["meta"], files[entry["file"]], schema)
    for key, load in MEMBER_LOADERS.items():
        if key in entry:
            if not allow_code:  # check_manifest let it through only in a compiled export
                raise ExportError(
                    f"member {entry['name']!r} is a compiled shared library, and loading it runs its code: score "
                    "an authenticated export (key=...), or pass trust_code=True if you trust whoever wrote it"
                )
            member = load(entry, files[entry[key]], member)
    return member


def spec_from_bundle(doc: dict[str, Any], files: dict[str, bytes], allow_code: bool = False,
                     reuse: dict[tuple, Member] | None = None, contents: list[tuple] | None = None) -> ScoringSpec:
    """The ``ScoringSpec`` a verified bundle describes; shared libraries loaded only when ``allow_code``.
    ``reuse`` maps a member's content (``_contents``, or ``contents`` when given) to a member built before from
    those verified bytes."""
    reuse = reuse or {}
    if contents is None:
        contents = _contents(doc) if reuse else [None] * len(doc["members"])
    schema = Schema.from_dict(doc["schema"])
    grouping = grouping_from_dict(doc["grouping"])
    grouping.validate(schema)
    members = tuple(
        ScoredMember(
            name=m["name"],
            key=tuple(m["key"]),
            shard=int(m["shard"]),
            n_shards=int(m["n_shards"]),
            member=reuse.get(content) or _member(m, files, allow_code, schema),
            weight=float(m["weight"]),
            weight_sum=None if m.get("weight_sum") is None else float(m["weight_sum"]),
            class_index=None if m["class_index"] is None else np.asarray(m["class_index"], dtype=np.int64),
        )
        for m, content in zip(doc["members"], contents)
    )
    overrides = tuple(
        Override(o["rule_id"], o["rule"], compile_mask(o["rule"], schema), o["label"]) for o in doc["overrides"]
    )
    return ScoringSpec(
        task=doc["task"],
        schema=schema,
        classes=None if doc["classes"] is None else np.asarray(doc["classes"]),
        combine=doc["combine"],
        grouping=grouping,
        state=None if doc["state"] is None else ClusterState.from_dict(doc["state"]),
        members=members,
        overrides=overrides,
        override_classes=tuple(o["class_index"] for o in doc["overrides"]),
    )


def probe_rows(schema: Schema) -> pa.Table:
    """A few rows every export must score to finite outputs: all missing, zeros / empty strings, ones / 'a'."""
    cols = []
    for kind in schema.kinds:
        if kind == CATEGORICAL:
            cols.append(pa.array([None, "", "a"], pa.string()))
        else:
            cols.append(pa.array([None, 0.0, 1.0], pa.float64()))
    return pa.table(cols, names=list(schema.names))


def _probe(spec: ScoringSpec, fresh: list[bool]) -> np.ndarray:
    """``score`` of the probe rows, every member scoring them; with members reused from a scorer that probed
    them (same files, meta and schema: the same outputs), only the fresh ones score, and the rows are routed
    (the grouping's state is checked) and the overrides applied as ``score`` would."""
    probe = probe_rows(spec.schema)
    if all(fresh):
        return score(spec, probe)
    spec.grouping.route(probe, spec.state, {k: i for i, k in enumerate(spec.routes())})
    members = tuple(sm for sm, new in zip(spec.members, fresh) if new and sm.weight > 0)
    if not members:
        return apply_overrides(spec, probe, np.zeros((probe.num_rows, spec.n_outputs)))
    return score(ScoringSpec(**{**spec.__dict__, "members": members, "combine": "average"}), probe)


def _shared_checker() -> Any:
    from .isolate import MemberChecker

    return MemberChecker.shared()


class Scorer:
    """Scores rows with an exported bundle, bitwise as the exported model's ``predict`` / ``predict_proba``.

    Parameters
    ----------
    path : str or Path
        A directory written by ``model.export(path, format="bundle")``. Every manifest field is checked and
        every file verified against the manifest's sha256 before anything is built (``ChecksumError``,
        ``ExportError``).
    n_threads : int, default 1
        Threads each member predicts with (does not change the outputs).
    key : bytes, str or path, optional
        The key the export was written with (``model.export(path, key=...)``; default
        ``$CLUSTERFORGET_KEY`` / ``$CLUSTERFORGET_KEY_FILE``). The manifest's HMAC is checked first: a byte
        changed without the key raises ``AuthenticationError``. An authenticated export needs its key.
    trust_code : bool, default False
        Load the shared libraries of an unauthenticated ``format="compiled"`` export. Loading a library runs
        its code; by default only an authenticated compiled export's libraries are loaded.
    isolate : bool, default False
        Parse the member files in a child process first (``export.isolate``), so that a malformed file that
        makes LightGBM or XGBoost abort kills the child, not this process. The scoring service always does.
    previous : Scorer, optional
        A scorer of an earlier export (the service's current one). Members whose files (same name and
        sha256, which ``previous`` verified when it read them), meta and schema are unchanged are taken from
        it, neither read nor parsed again; every other member is read, verified and checked as usual. The
        manifest is always read and verified in full.

    Attributes
    ----------
    manifest : dict
        The verified manifest: ``model_version``, ``store`` (version and ledger head), ``exported_at``, ...
    classes_ : ndarray or None
        Classes in the order of ``predict_proba`` columns (None for a regressor).
    authenticated : bool
        Whether the manifest's HMAC was verified under a key.

    Examples
    --------
    >>> import numpy as np, tempfile, clusterforget as cf
    >>> X = np.random.default_rng(0).normal(size=(80, 3))
    >>> model = cf.ForgetClassifier(grouping=cf.HashGroups(2)).fit(X, (X[:, 0] > 0).astype(int))
    >>> path = tempfile.mkdtemp()
    >>> _ = model.export(path, format="bundle")
    >>> bool(np.array_equal(cf.Scorer(path).predict_proba(X), model.predict_proba(X)))
    True
    """

    def __init__(self, path: Any, n_threads: int = 1, key: Any = None, trust_code: bool = False,
                 isolate: bool = False, checker: Any = None, previous: "Scorer | None" = None):
        self.path = Path(path)
        secret = resolve_key(key)
        reuse: dict[tuple, Member] = {}
        held = None
        if previous is not None:
            old = previous.manifest
            reuse = {c: sm.member for c, sm in zip(previous._contents, previous.spec.members)}
            held = dict(old["files"])
        check = (checker or _shared_checker()) if isolate or checker is not None else None
        early: list[Any] = []

        def begin(doc: dict[str, Any]) -> dict[str, bytes]:
            """The child parses and probes the members this export changes while this process verifies the
            manifest and their files; ``check`` below counts its verdicts only for the bytes verified."""
            try:
                fresh = [e for e, c in zip(doc["members"], _contents(doc))
                         if c not in reuse and (held or {}).get(e["file"]) != doc["files"][e["file"]]]
                read = {e["file"]: read_file(self.path, e["file"]) for e in fresh}
            except Exception:  # noqa: BLE001 - a manifest not verified yet may be anything: its checks say what
                return {}
            early.append(check.begin({**doc, "members": fresh}, read))
            return read

        self.manifest, files, self.authenticated, contents = _read_bundle(
            self.path, secret, held, None if previous is None else previous._checked,
            early=begin if check is not None else None)
        allow_code = self.authenticated or bool(trust_code)
        if not allow_code:  # a compiled member runs code: reused only where this export may load code
            reuse = {c: m for c, m in reuse.items() if len(c[0]) == 1}
        self._contents = contents if contents is not None else _contents(self.manifest)
        is_fresh = [c not in reuse for c in self._contents]
        fresh = [e for e, new in zip(self.manifest["members"], is_fresh) if new]
        if any(not set(_files_of(e)) <= set(files) for e in fresh):
            # a file held from before that a changed member needs (same bytes, other meta): read everything
            self.manifest, files, self.authenticated, _ = _read_bundle(self.path, secret)
            fresh, is_fresh, reuse = self.manifest["members"], [True] * len(self.manifest["members"]), {}
            self._contents = _contents(self.manifest)
        if check is not None:
            check.check({**self.manifest, "members": fresh}, files, self.path, early[0] if early else None)
        try:
            spec = spec_from_bundle(self.manifest, files, allow_code=allow_code, reuse=reuse, contents=self._contents)
            spec = ScoringSpec(**{**spec.__dict__, "n_threads": int(n_threads)})
            if previous is not None:  # the previous index serves the members it holds (a forget keeps vocabularies)
                index = previous.spec.vocabularies().extended(spec.schema, [sm.member for sm in spec.members])
                if index is not None:
                    spec.derived["vocabularies"] = index
            # what every batch reads, made here: the first request after a swap does not pay for it
            spec.vocabularies().stacked()
            spec.routing()
            # every export must score: a spec that does not (a member's outputs not matching its class columns,
            # a bad clustering state) is refused here, not at its first request
            out = _probe(spec, is_fresh)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything a hostile manifest makes the builders raise
            raise ExportError(f"bundle {str(self.path)!r} cannot be read: {type(exc).__name__}: {quoted(str(exc), 300)}") from exc
        if not np.all(np.isfinite(out)):
            raise ExportError(f"bundle {str(self.path)!r} scores probe rows to non-finite outputs; export it again")
        self.spec = spec
        self.classes_ = self.spec.classes
        self._row = RowScorer(spec)
        self._checked = frozenset(self._contents)  # members whose meta check_manifest passed

    @property
    def version(self) -> int:
        """The model version this bundle holds (``model.version_`` at export time)."""
        return int(self.manifest["model_version"])

    def _raw(self, X: Any) -> np.ndarray:
        if self._row.ready:  # one row (a dict, a one-row DataFrame): scored without building tables
            row = one_row(X, self.spec.schema)
            if row is not None:
                return self._row.score(row)
        return score(self.spec, conform(X, self.spec.schema, "Scorer"))

    def raw_row(self, values: list[Any]) -> np.ndarray | None:
        """``predict_proba`` (a regressor's ``predict``, as a column) of one row given as canonical values
        (``data.one_row``'s: a float, NaN for missing, per numeric column; a str or None per categorical one; in
        the schema's order), bitwise as for that row in a table; None when the one-row path does not apply (no
        member can predict: score a table, which says why)."""
        return self._row.score(values) if self._row.ready else None

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (columns in the order of ``classes_``), as the model's ``predict_proba``."""
        if self.spec.task != CLASSIFICATION:
            raise ExportError("predict_proba needs a classifier bundle; this bundle holds a regressor: use predict")
        return self._raw(X)

    def predict(self, X: Any, raw_score: bool = False, pred_contrib: bool = False) -> np.ndarray:
        """Labels (classifier) or values (regressor), as the model's ``predict``; ``raw_score`` /
        ``pred_contrib`` as the model's too (raw scores, TreeSHAP contributions; ``clusterforget.explain``)."""
        if raw_score or pred_contrib:
            if raw_score and pred_contrib:
                raise InputError("predict got raw_score=True and pred_contrib=True; ask for one of them")
            table = conform(X, self.spec.schema, "Scorer")
            return lightgbm_layout(contributions(self.spec, table) if pred_contrib else raw_scores(self.spec, table))
        raw = self._raw(X)
        if self.spec.task != CLASSIFICATION:
            return raw[:, 0]
        return self.classes_[np.argmax(raw, axis=1)]

    def reasons(self, X: Any, top: int = 4) -> list[dict[str, Any]]:
        """Reason codes as plain data, one entry per row (``clusterforget.explain.reasons``)."""
        return reasons(self.spec, conform(X, self.spec.schema, "Scorer"), top)

    def explain(self, X: Any, top: int = 4) -> Any:
        """Reason codes as a DataFrame, equal to the exported model's ``explain(X, top)``."""
        return reasons_frame(self.reasons(X, top))


__all__ = ["Scorer", "write_bundle", "read_bundle", "check_manifest", "spec_from_bundle", "FORMAT"]
