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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from filelock import FileLock

from ..data import Schema, conform
from ..errors import ChecksumError, ExportError, InputError
from ..estimators import ensemble_of
from ..explain import contributions, lightgbm_layout, raw_scores, reasons, reasons_frame
from ..grouping import ClusterState, grouping_from_dict
from ..members import CLASSIFICATION, Member, member_from_bytes
from ..rules import compile_mask
from ..scoring import Override, ScoredMember, ScoringSpec, score
from ..store.commit import manifest_checksum
from ..store.fs import dumps, fsync_dir, safe_path, sha
from ._files import provenance, write_atomic

FORMAT = "clusterforget-bundle"
PROTOCOL = 1
MANIFEST = "manifest.json"
MEMBERS = "members"
LIBS = "libs"  # compiled members (format="compiled")
LOCK = ".export.lock"


def _json_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# extra kinds of member file a bundle can hold, by manifest key (``compiled.py`` registers "lib"):
# name -> function(member entry, verified file bytes, native member) -> the member scoring uses
MEMBER_LOADERS: dict[str, Callable[[dict[str, Any], bytes, Member], Member]] = {}


def bundle_document(model: Any, files: dict[str, bytes], fmt: str = "bundle") -> dict[str, Any]:
    """The manifest of ``model``'s scoring spec; member files go into ``files`` (name -> bytes)."""
    ens = ensemble_of(model)
    ens.check_ready()
    spec = ens.scoring_spec()
    members = []
    for sm in spec.members:
        data = sm.member.model_bytes()
        digest = sha(data)
        name = f"{MEMBERS}/{digest}.txt"
        files[name] = data
        members.append({
            "name": sm.name,
            "key": [_json_value(v) for v in sm.key],
            "shard": int(sm.shard),
            "n_shards": int(sm.n_shards),
            "weight": float(sm.weight),
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
                 add_files: Callable[[Path, dict[str, Any], dict[str, bytes]], None] | None = None) -> dict[str, Any]:
    """Export ``model`` as a bundle directory at ``path``; returns the manifest written.

    Member files are written first (fsync'd, under their content hash), the manifest is renamed into place
    last, then member files of earlier exports that the new manifest does not reference are deleted.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ExportError(f"bundle path {str(out)!r} is a file; pass a directory (new or a previous bundle)")
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
    # two exports into one directory at once would delete each other's new member files
    with FileLock(str(out / LOCK)):
        _write(out, doc, files)
    return doc


def _write(out: Path, doc: dict[str, Any], files: dict[str, bytes]) -> None:
    for sub in {Path(name).parent for name in files} | {Path(MEMBERS)}:
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = out / name
        if target.exists() and sha(target.read_bytes()) == doc["files"][name]:
            continue  # content-addressed: an unchanged member is already there
        write_atomic(target, data)
    for sub in {Path(name).parent for name in files}:
        fsync_dir(out / sub)
    doc["checksum"] = manifest_checksum(doc)
    write_atomic(out / MANIFEST, dumps(doc))
    for sub in (MEMBERS, LIBS):
        if not (out / sub).is_dir():
            continue
        for stale in (out / sub).iterdir():
            if f"{sub}/{stale.name}" not in doc["files"]:
                stale.unlink(missing_ok=True)  # earlier exports' members: may hold what forgotten rows taught
        fsync_dir(out / sub)


def read_bundle(path: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse and verify a bundle: the manifest's own checksum, then every file against its sha256."""
    root = Path(path)
    try:
        raw = (root / MANIFEST).read_bytes()
    except OSError as exc:
        raise ExportError(f"{str(root)!r} is not a bundle ({MANIFEST}: {exc}); pass a directory written by "
                          "model.export(path, format='bundle')") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ChecksumError(f"{MANIFEST} in {str(root)!r} is not JSON ({exc}); export the bundle again") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError(f"{MANIFEST} in {str(root)!r} is not a clusterforget bundle manifest")
    if doc.get("protocol") != PROTOCOL:
        raise ExportError(f"bundle {str(root)!r} has protocol {doc.get('protocol')!r}; this version reads "
                          f"protocol {PROTOCOL}: export it again with this version")
    if doc.get("checksum") != manifest_checksum(doc):
        raise ChecksumError(f"{MANIFEST} in {str(root)!r} does not match its own checksum; export again")
    files = {}
    for name, expected in doc["files"].items():
        try:
            data = safe_path(root, name).read_bytes()
        except OSError as exc:
            raise ChecksumError(f"bundle file {name!r} in {str(root)!r} cannot be read ({exc}); export again") from exc
        if sha(data) != expected:
            raise ChecksumError(f"bundle file {name!r} in {str(root)!r} does not match its sha256; export again")
        files[name] = data
    return doc, files


def _member(entry: dict[str, Any], files: dict[str, bytes]) -> Member:
    member = member_from_bytes(entry["meta"], files[entry["file"]])
    for key, load in MEMBER_LOADERS.items():
        if key in entry:
            member = load(entry, files[entry[key]], member)
    return member


def spec_from_bundle(doc: dict[str, Any], files: dict[str, bytes]) -> ScoringSpec:
    """The ``ScoringSpec`` a verified bundle describes."""
    schema = Schema.from_dict(doc["schema"])
    grouping = grouping_from_dict(doc["grouping"])
    grouping.validate(schema)
    members = tuple(
        ScoredMember(
            name=m["name"],
            key=tuple(m["key"]),
            shard=int(m["shard"]),
            n_shards=int(m["n_shards"]),
            member=_member(m, files),
            weight=float(m["weight"]),
            class_index=None if m["class_index"] is None else np.asarray(m["class_index"], dtype=np.int64),
        )
        for m in doc["members"]
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


class Scorer:
    """Scores rows with an exported bundle, bitwise as the exported model's ``predict`` / ``predict_proba``.

    Parameters
    ----------
    path : str or Path
        A directory written by ``model.export(path, format="bundle")``. Every file is verified against the
        manifest's sha256 before anything is built; a mismatch raises ``ChecksumError``.
    n_threads : int, default 1
        Threads each member predicts with (does not change the outputs).

    Attributes
    ----------
    manifest : dict
        The verified manifest: ``model_version``, ``store`` (version and ledger head), ``exported_at``, ...
    classes_ : ndarray or None
        Classes in the order of ``predict_proba`` columns (None for a regressor).

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

    def __init__(self, path: Any, n_threads: int = 1):
        self.path = Path(path)
        self.manifest, files = read_bundle(self.path)
        try:
            spec = spec_from_bundle(self.manifest, files)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"bundle {str(self.path)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
        self.spec = ScoringSpec(**{**spec.__dict__, "n_threads": int(n_threads)})
        self.classes_ = self.spec.classes

    @property
    def version(self) -> int:
        """The model version this bundle holds (``model.version_`` at export time)."""
        return int(self.manifest["model_version"])

    def _raw(self, X: Any) -> np.ndarray:
        return score(self.spec, conform(X, self.spec.schema, "Scorer"))

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


__all__ = ["Scorer", "write_bundle", "read_bundle", "spec_from_bundle", "FORMAT"]
