"""Model <-> document: what the manifest says about a model, and how a model is built from verified bytes.

The only store module that knows the estimators. Loading follows parse -> audit -> construct: the manifest
is parsed and checked, every file it references is read and verified against its sha256 (``Store.audit``),
then the model is built from those bytes only; nothing is deleted before all of that succeeded. Estimators
are rebuilt by their persisted name through the registry ``estimators.ESTIMATORS`` (so a subclass comes back
as itself); only names in the registry, or classes of this package, are ever looked up. Nothing is
unpickled or evaluated: parameters are JSON, rows Parquet, members the learners' native formats.
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import estimators as _estimators
from ..data import HASH, ID, LABEL, WEIGHT, Schema
from ..ensemble import Group, GroupedEnsemble, Outcome, rows_held
from ..errors import ClusterForgetError, EnvironmentWarning, InputError, LockError, StoreError, VersionError
from ..executors import RowHolder
from ..grouping import ClusterState, Grouping, grouping_from_dict
from .. import preprocess
from ..members import EarlyStopping, member_from_bytes
from ..report import Report
from ..rules import compile_mask
from ..scoring import Override
from .commit import Store, Writer, create, describe_mismatch, environment_mismatch, initialise, same_dir
from .fs import DEFAULT_LOCK_TIMEOUT, MANIFEST, dumps, parquet_bytes, read_columns, read_parquet, sha
from .keys import reader_key

_ARROW_TYPES = {
    str(t): t
    for t in (
        pa.int8(), pa.int16(), pa.int32(), pa.int64(),
        pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
        pa.float16(), pa.float32(), pa.float64(),
        pa.bool_(), pa.string(), pa.large_string(), pa.null(),
    )
}
# names written by clusterforget 0.1.0, before estimators were stored by module and class name
_LEGACY_NAMES = {
    "ForgetClassifier": "clusterforget.estimators.ForgetClassifier",
    "ForgetRegressor": "clusterforget.estimators.ForgetRegressor",
}
_KEEP = object()


# ---------------------------------------------------------------------------------------------- values
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


def encode_param(v: Any) -> Any:
    if isinstance(v, Grouping):
        return {"$grouping": v.to_dict()}
    if type(v).__name__ in preprocess.SUPPORTED:  # a preprocessor= spec: its parameters as checked JSON
        # its settings only: a spec given already fitted holds its rows' values (a scaler's data_max_), which
        # no version of the store may keep (members fit their own clones)
        return {"$preprocessor": preprocess.to_document(preprocess.unfitted(preprocess.check(v)))}
    if isinstance(v, tuple):
        return {"$tuple": [encode_param(x) for x in v]}
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            # e.g. class_weight={0: 1, 1: 5}: the keys keep their JSON types (numbers, booleans, strings)
            if not all(k is None or isinstance(k, (bool, int, float, str, np.generic)) for k in v):
                raise StoreError(f"parameter dict {v!r} has keys that are not numbers or strings and cannot be stored")
            return {"$items": [[encode_param(k), encode_param(x)] for k, x in v.items()]}
        return {"$dict": {k: encode_param(x) for k, x in v.items()}}
    if isinstance(v, list):
        return [encode_param(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise StoreError(
        f"parameter value {v!r} of type {type(v).__name__} cannot be stored (the store holds JSON only, never "
        "pickled objects); use numbers, strings, lists and dicts in parameters"
    )


def decode_param(v: Any, refit: bool = False) -> Any:
    """A parameter from its manifest encoding; ``refit``: a preprocessor spec written under another scikit-learn
    version is built again from its parameters (``preprocess.spec_from_document``)."""
    if isinstance(v, dict):
        if set(v) == {"$grouping"}:
            return grouping_from_dict(v["$grouping"])
        if set(v) == {"$preprocessor"}:
            read = preprocess.spec_from_document if refit else preprocess.from_document
            try:
                return read(v["$preprocessor"])
            except ClusterForgetError as exc:
                raise StoreError(f"the manifest's preprocessor parameter is not usable: {exc}") from None
        if set(v) == {"$tuple"}:
            return tuple(decode_param(x) for x in v["$tuple"])
        if set(v) == {"$dict"}:
            return {k: decode_param(x) for k, x in v["$dict"].items()}
        if set(v) == {"$items"} and isinstance(v["$items"], list) and all(
                isinstance(p, list) and len(p) == 2 and (p[0] is None or isinstance(p[0], (bool, int, float, str)))
                for p in v["$items"]):
            return {k: decode_param(x) for k, x in v["$items"]}
        raise StoreError(f"the manifest holds an unknown parameter encoding {sorted(v)!r}")
    if isinstance(v, list):
        return [decode_param(x) for x in v]
    return v


def _key_to_json(key: tuple) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in key]


def estimator_class(name: Any) -> type:
    """The estimator class of a persisted name: from the registry, or a class of this package."""
    name = _LEGACY_NAMES.get(name, name)
    cls = _estimators.ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str) and name.startswith("clusterforget.") and "." in name:
        module = name.rsplit(".", 1)[0]
        try:
            importlib.import_module(module)  # a module of this package registers its estimators on import
        except ImportError as exc:
            raise StoreError(f"the store was written by {name!r}, whose module cannot be imported here: {exc}") from exc
        cls = _estimators.ESTIMATORS.get(name)
    if cls is None:
        raise StoreError(
            f"the manifest names an unknown estimator {name!r}; import the module that defines it before cf.load "
            f"(known: {sorted(_estimators.ESTIMATORS)!r})"
        )
    return cls


# ---------------------------------------------------------------------------------------------- state -> doc
def encode(ens: GroupedEnsemble, writer: Writer) -> dict:
    """The manifest content of an ensemble state (its ``owner``: the estimator that holds it and its parameters);
    new rows and member files go through ``writer``."""
    estimator, params = ens.owner
    files: dict[str, str] = {}
    groups = []
    for g in ens.groups.values():
        # rows that live on a cluster are fetched only for a file not written yet (the cache is by skeleton)
        rows_rel, rows_sha = writer.rows_file(g.rows, lambda _, g=g: parquet_bytes(ens.full_rows(g)))
        files[rows_rel] = rows_sha
        entry: dict[str, Any] = {
            "key": _key_to_json(g.key),
            "name": g.name,
            "shard": int(g.shard),
            "n_shards": int(g.n_shards),
            "n_rows": int(g.n_rows),
            "rows": rows_rel,
            "member": None,
        }
        if g.member is not None:
            meta = json.loads(dumps(g.member.meta()))
            m_rel, m_sha, meta = writer.member_file(g.member, meta)
            files[m_rel] = m_sha
            entry["member"] = {"file": m_rel, "meta": meta}
            if g.member.fit_seconds is not None:  # timing only: outside the member file and its meta
                entry["fit_seconds"] = round(float(g.member.fit_seconds), 6)
        groups.append(entry)
    learner = ens.learner
    return {
        "estimator": estimator,
        "params": {k: encode_param(v) for k, v in params.items()},
        "ensemble": {
            "task": ens.task,
            "grouping": ens.grouping.to_dict(),
            "learner": learner.name,
            "learner_params": encode_param(dict(learner.params)),
            # what the members were trained with: a parameter set after fit takes effect at the next fit only
            "fitted_with": {"class_weight": encode_param(learner.class_weight),
                            "preprocessor": encode_param(learner.preprocessor),
                            "stopping": learner.stopping.to_dict()},
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
            "sample_weights": True,  # rows files end with the sample weight column (stores before it: every row 1)
            "overrides": [{"rule_id": o.rule_id, "rule": o.text, "label": o.label} for o in ens.overrides],
        },
        "groups": groups,
        "pending": [g.name for g in ens.groups.values() if g.member is None],
        "n_rows": int(ens.n_rows),
        "files": files,
    }


# ---------------------------------------------------------------------------------------------- doc -> model
def _stale_preprocessors(doc: dict) -> dict[Any, str]:
    """{member's place in the groups (or "preprocessor=" for the parameter): scikit-learn version} of every preprocessor
    document in ``doc`` written under another scikit-learn version than this one."""
    stale = {}
    spec = doc["params"].get("preprocessor")
    if isinstance(spec, dict) and set(spec) == {"$preprocessor"} and preprocess.other_version(spec["$preprocessor"]):
        stale["preprocessor="] = preprocess.other_version(spec["$preprocessor"])
    for i, entry in enumerate(doc["groups"]):
        meta = (entry.get("member") or {}).get("meta")
        version = preprocess.other_version(meta.get("preprocessor")) if isinstance(meta, dict) else None
        if version:
            stale[i] = version
    return stale


def decode(doc: dict, files: dict[str, bytes], store: Store | None = None, n_jobs: Any = _KEEP,
           verbose: Any = _KEEP, on_cluster: bool = False, refit: bool = False) -> Any:
    """Build the model of ``doc`` from verified file contents (``Store.audit``); registers the files in
    ``store``'s caches so that the next commit rewrites only what changes.

    A preprocessor fitted under another scikit-learn version is refused (``VersionError``), unless ``refit``: its
    members are then left pending (``retrain_pending`` fits them, and their transformers, under this version) and
    the ``preprocessor=`` spec is built again from its parameters.

    ``on_cluster``: the groups' rows files are read (and verified against their sha256) by the model's executor
    on its workers, and stay there; this process reads only each file's skeleton columns."""
    cls = estimator_class(doc.get("estimator"))
    stale = _stale_preprocessors(doc)
    if stale and not refit:
        names, here = ", ".join(sorted(set(stale.values()))), preprocess.installed_version()
        where = str(store.path) if store is not None else "STORE"
        n_members = sum(name != "preprocessor=" for name in stale)
        raise VersionError(
            f"the store's preprocessors were fitted with scikit-learn {names} and this is scikit-learn {here} (a "
            f"fitted transformer's attributes are private to its version), so the model cannot be read here; "
            f"nothing was changed: install scikit-learn=={min(stale.values())} to use the model as stored, or refit "
            f"its {n_members} preprocessed member(s) from the stored rows under {here}: `clusterforget retrain {where} --refit`, "
            f"or in Python cf.load({where!r}, refit=True).retrain_pending()")
    params = {k: decode_param(v, refit) for k, v in doc["params"].items()}
    # a store written before early stopping: its members trained on all their rows, and keep doing so
    params.setdefault("early_stopping", False)
    if n_jobs is not _KEEP:
        params["n_jobs"] = n_jobs
    if verbose is not _KEEP:
        params["verbose"] = verbose
    model = cls(**params)
    e = doc["ensemble"]
    schema = Schema.from_dict(e["schema"])
    grouping = grouping_from_dict(e["grouping"])  # the ensemble's own copy, as fit makes it
    grouping.validate(schema)
    fitted_with = None  # a store written before it: the model's parameters
    if e.get("fitted_with") is not None:
        w = e["fitted_with"]
        if not isinstance(w, dict) or set(w) != {"class_weight", "preprocessor", "stopping"}:
            raise StoreError(f"the manifest's fitted_with is {str(w)[:120]!r}, not the settings the members were "
                             "trained with; save the model again")
        fitted_with = {"class_weight": decode_param(w["class_weight"]), "preprocessor": decode_param(w["preprocessor"], refit),
                       "stopping": EarlyStopping.from_dict(w["stopping"])}
    ens = _estimators.new_ensemble(model, grouping, e["combine"], int(e["seed"]), e["learner"],
                                   decode_param(e["learner_params"]), e["max_group_rows"], fitted_with, schema=schema,
                                   id_type=_parse_type(e["id_type"]), label_type=_parse_type(e["label_type"]),
                                   holder=rows_held(on_cluster))
    weighted = e.get("sample_weights") is True
    expected_cols = [ID, HASH, *schema.names, LABEL] + ([WEIGHT] if weighted else [])
    groups = {}
    if on_cluster:  # the rows on the workers, each file read and checked there before anything is built here
        paths = {entry["rows"]: store.file_path(entry["rows"]) for entry in doc["groups"]}
        handles = {rel: ens.executor.read(str(p), doc["files"][rel], expected_cols) for rel, p in paths.items()}
        counts = dict(zip(handles, ens.executor.row_counts(list(handles.values()))))
    layout = ens.skeleton_columns() if on_cluster else expected_cols  # here: only the skeleton of cluster rows
    if not weighted and on_cluster:
        layout = [c for c in layout if c != WEIGHT]
    for i, entry in enumerate(doc["groups"]):
        if on_cluster:
            rows = read_columns(paths[entry["rows"]], layout)
            if rows.num_rows != counts[entry["rows"]]:
                raise StoreError(f"file {entry['rows']!r} changed while the store was being loaded")
        else:
            rows = read_parquet(files[entry["rows"]])
        if rows.column_names != layout or (
            rows.column(ID).type != ens.id_type or rows.column(LABEL).type != ens.label_type
        ):
            raise StoreError(f"file {entry['rows']!r} does not hold the rows layout the manifest describes")
        if not weighted:  # a store written before sample weights: every row weighs 1 (the file is rewritten on commit)
            rows = rows.append_column(WEIGHT, pa.array(np.ones(rows.num_rows), pa.float64()))
        elif rows.column(WEIGHT).type != pa.float64() or rows.column(WEIGHT).null_count or (rows.num_rows and not pc.all(
                pc.and_(pc.is_finite(rows.column(WEIGHT)), pc.greater_equal(rows.column(WEIGHT), 0.0))).as_py()):
            raise StoreError(f"file {entry['rows']!r} holds sample weights that are not finite numbers >= 0")
        member = None
        if entry["member"] is not None and i not in stale:  # a stale member: pending, to be refit
            m = entry["member"]
            member = member_from_bytes(m["meta"], files[m["file"]], schema)
            seconds = entry.get("fit_seconds")
            member.fit_seconds = float(seconds) if isinstance(seconds, (int, float)) else None
            if store is not None:
                store.member_cache[id(member)] = (member, m["file"], doc["files"][m["file"]], m["meta"])
        if store is not None and weighted:  # a file without the weight column is not these rows' file
            store.rows_cache[id(rows)] = (rows, entry["rows"], doc["files"][entry["rows"]])
        key = tuple(entry["key"])
        g = Group(key, int(entry["shard"]), int(entry["n_shards"]), rows, member, ens.distinct_labels(rows),
                  remote=(handles[entry["rows"]],) if on_cluster else ())
        groups[g.gid] = g
    ens = ens.evolve(weight_overrides={tuple(k): float(w) for k, w in e["weight_overrides"]})
    ens = ens.with_groups(groups, None if e["state"] is None else ClusterState.from_dict(e["state"]))
    overrides = tuple(Override(o["rule_id"], o["rule"], compile_mask(o["rule"], schema), o["label"])
                      for o in e["overrides"])
    # the largest id held; the store's tombstones guard larger forgotten ids (a raw forgotten id is never stored)
    max_id = None
    if pa.types.is_integer(ens.id_type) and groups:
        max_id = max(pc.max(g.rows.column(ID)).as_py() for g in groups.values())
    ens = ens.evolve(overrides=overrides, version=int(doc["version"]), max_id=max_id)
    return _estimators.attach_ensemble(model, ens)


# ---------------------------------------------------------------------------------------------- public API
def save(model: Any, path: Any, *, key: Any = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
         state: GroupedEnsemble | None = None) -> Report:
    """Write ``model``'s state (or ``state``, a compacted copy of it) to a new store directory and bind the model
    there (see ``_ForgetBase.save``, which installs the committed state).

    With a key (``key=`` or ``$CLUSTERFORGET_KEY`` / ``$CLUSTERFORGET_KEY_FILE``; see ``store.auth``) the store
    is authenticated: its manifest and ledger lines carry HMACs under it and its tombstones are keyed with it.

    Saving a bound model to its own store is a no-op (every change is already committed). Saving a bound
    model to a new directory copies its secret, tombstones and ledger, so forgotten ids stay refused there.
    """
    t0 = time.perf_counter()
    state = (state if state is not None else _estimators.ensemble_of(model)).evolve(owner=_estimators.owner_of(model))
    p = Path(path)
    secret_key = reader_key(key)
    bound: Store | None = _estimators.store_of(model)
    if bound is not None and p.exists() and same_dir(bound.path, p):
        if secret_key is not None and secret_key != bound.key:
            raise StoreError(f"the model is bound to {str(p)!r}, which is not authenticated with this key; nothing "
                             "was changed. Save to a new directory to authenticate a copy")
        version = bound.commit(state, Outcome(state, Report(operation="save", is_deletion=False)))
        return Report(operation="save", is_deletion=False, version=version, seconds=time.perf_counter() - t0,
                      note="the model is bound to this store: every change was already committed")
    store = create(p, lock_timeout, encode, key=secret_key)
    report = Report(operation="save", is_deletion=False, note="saved from another store" if bound is not None else "")
    with store.lock.held():
        version = initialise(store, state, bound, report)
    _estimators.bind_store(model, store)
    return Report(operation="save", is_deletion=False, version=version, seconds=time.perf_counter() - t0)


ROWS = ("auto", "here", "cluster")


def _rows_on_cluster(doc: dict, rows: str, store: Store) -> bool:
    """Whether the groups' rows are read on the model's cluster: its backend keeps rows there, a client is
    connected, and a worker reads this very store (the manifest, byte for byte, at this absolute path)."""
    if rows not in ROWS:
        raise InputError(f"rows={rows!r} is not one of {ROWS!r}")
    if rows == "here":
        return False
    backend = doc.get("params", {}).get("backend", "local")
    why = None
    try:
        executor = _estimators.backend_executor(backend, None, False)
    except InputError as exc:  # the backend's library is not installed here
        executor, why = None, str(exc)
    if executor is not None and not isinstance(executor, RowHolder):
        why = f"the model's backend {backend!r} keeps rows in this process"
    elif executor is not None:
        manifest = store.file_path(MANIFEST)
        why = executor.cannot_read(str(manifest), sha(manifest.read_bytes()))
    if why is None:
        return True
    if rows == "cluster":
        raise InputError(f"rows='cluster' cannot be honoured: {why}. Load with rows='here', or connect a Dask "
                         "client whose workers mount the store at the same path")
    return False


def load(path: Any, *, key: Any = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, n_jobs: Any = _KEEP,
         verbose: Any = _KEEP, rows: str = "auto", refit: bool = False) -> Any:
    """Load the model in a store and bind it there. Verifies every checksum; runs no stored code.

    Parse the manifest, read and verify every file it references, build the model from those bytes, and
    only then finish what a crashed writer left (unreferenced files deleted, an uncommitted ledger tail cut).
    Takes the writer lock while reading (waits up to ``lock_timeout`` seconds); a read-only location is read
    without recovery. ``n_jobs`` / ``verbose`` override the saved settings (they do not change predictions).
    ``key``: the key of an authenticated store (or ``$CLUSTERFORGET_KEY`` / ``$CLUSTERFORGET_KEY_FILE``); the
    manifest's and every ledger line's HMAC are checked before anything is built. ``key=False`` ignores the
    environment (for a store written without a key while a key is set).
    ``rows``: where the training rows go. ``"auto"`` (default): on the cluster when the model's backend keeps
    rows there (``backend="dask"``), a Dask client is connected and its workers read this store at the same path
    (each worker reads and verifies its groups' files; this process reads only their ids, hashes, grouping
    columns and labels); otherwise here. ``"here"``: always in this process. ``"cluster"``: on the cluster, or
    an error saying why not.
    ``refit``: a store whose preprocessors were fitted under another scikit-learn version (refused otherwise, with
    ``VersionError``) loads with those members pending; ``model.retrain_pending()`` then refits them and their
    transformers from the stored rows under this version and commits (the model is then a fresh fit's here).
    """
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{str(p)!r} is not a directory; pass the directory given to model.save")
    secret_key = reader_key(key)
    store = Store(p, lock_timeout, encode, key=secret_key)
    locked = True
    try:
        store.lock.acquire()
    except LockError:
        raise
    except StoreError:
        locked = False  # read-only location: read without recovery
    try:
        try:
            placed: list[bool] = []

            def remote(doc: dict) -> list[str]:
                placed.append(_rows_on_cluster(doc, rows, store))
                return [g["rows"] for g in doc["groups"]] if placed[-1] else []

            # parse, authenticate, audit: every referenced file verified (rows on a cluster: by its workers),
            # nothing deleted yet
            doc, files = store.authenticated(elsewhere=remote)
            on_cluster = placed[-1]
            store.manifest = doc
            model = decode(doc, files, store, n_jobs=n_jobs, verbose=verbose, on_cluster=on_cluster,
                           refit=refit)  # construct
            diff = environment_mismatch(doc, doc["ensemble"].get("learner"))
            if diff:
                warnings.warn(f"{str(p)!r}: {describe_mismatch(diff)}", EnvironmentWarning, stacklevel=3)
            store.secret()
            store.tombstones()
        except ClusterForgetError:
            raise
        except (KeyError, TypeError, ValueError, OSError, AttributeError, IndexError) as exc:
            raise StoreError(f"the store {str(p)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
        if locked:
            store.cleanup(doc)  # recovery, only once everything it keeps was verified and built
    finally:
        if locked:
            store.lock.release()
    _estimators.bind_store(model, store)
    return model


def remove_unreferenced(path: Any, *, key: Any = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                        confirm: Callable[[list[str]], bool] | None = None) -> list[str]:
    """Delete every file under the store that its manifest does not reference, and record their names in a
    ledger line (a new version that changes nothing else). Returns the names removed.

    ``cf.load`` removes only what an interrupted commit left; any other unreferenced file (an older version's
    file put back, a copy, an export written inside the store) stays and fails the purge check, as evidence,
    until this is run. Under the writer lock for the whole operation, after every referenced file was verified
    (and authenticated, with ``key``). ``confirm(names)``: asked, still under the lock, with exactly the names
    that would be removed; unless it returns True nothing is removed (and ``[]`` returned). Only those names are
    removed: a file that appears meanwhile stays, as evidence.
    """
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{str(p)!r} is not a directory; pass the directory given to model.save")
    secret_key = reader_key(key)
    store = Store(p, lock_timeout, encode, key=secret_key)
    with store.lock.held():
        doc, _ = store.authenticated(chain=True)
        store.manifest = doc
        return store.remove_unreferenced_locked(doc, confirm)


_estimators.register_hook("save", save)

__all__ = ["encode", "decode", "save", "load", "remove_unreferenced", "estimator_class", "encode_param", "decode_param"]
