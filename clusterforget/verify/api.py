"""Verify that forgetting worked: ``verify`` runs the named checks and gathers them in one result.

Checks (one module each, but ``held``): ``held`` (no group holds a forgotten id), ``purge`` (no file under the
store holds a forgotten id or row, each is tombstoned; no unreferenced file), ``exact`` (the model is what a fresh fit on its rows gives: fast by default, ``exact="full"`` refits
everything), ``mia`` (membership inference: forgotten rows look like never-seen rows), ``diff`` (the
before/after-output attack recorded by ``forget_rows(..., audit=True)``). Without ``checks`` it does what it
always did: ids held by no group, and predictions on ``X_probe`` equal to a full refit.

>>> import numpy as np, clusterforget as cf
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(300, 3)); y = (X[:, 0] > 0).astype(int)
>>> model = cf.ForgetClassifier(grouping=cf.HashGroups(3), n_jobs=1).fit(X, y)
>>> _ = model.forget_rows([5, 6])
>>> result = cf.verify(model, forgotten=[5, 6], X_probe=X[:50])
>>> result.ok, result.fresh_fit_equal, result.ids_still_held
(True, True, [])
>>> cf.verify(model, forgotten=[5, 6], checks=("exact",)).checks["exact"].ok
True
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import clone

from ..data import HASH, ID, LABEL, WEIGHT, as_ids, conform, id_hash, id_type_matches
from ..errors import InputError
from ..estimators import attach_ensemble, ensemble_of, pipeline_parts
from ..store.commit import describe_mismatch, environment_mismatch
from ..store.fs import dumps
from ..store.keys import resolve_key
from .diff import check_diff
from .exact import check_exact_fast, model_bytes
from .mia import check_mia
from .purge import check_purge
from .result import Check, VerifyResult
from .source import Source, opening_key, request_lines, source_of

CHECKS = ("held", "purge", "exact", "mia", "diff")
# what a deletion request is audited with when no checks are named (the command line's default)
DEFAULT_CHECKS = ("held", "purge", "exact")


def trained_as(model: Any) -> Any:
    """An unfitted clone of ``model`` with the settings its members were trained with: a parameter set after fit
    takes effect at the next fit only (scikit-learn's rule), so its state, and every retrain of a change, still
    follow the ensemble's learner and not the estimator's parameters (the store records them as ``fitted_with``)."""
    ens = ensemble_of(model)
    learner = ens.learner
    settings = {"grouping": ens.grouping, "combine": ens.combine,
                "learner": learner.name, "learner_params": dict(learner.params), "random_state": learner.seed,
                "max_group_rows": ens.max_group_rows, "preprocessor": learner.preprocessor,
                "class_weight": learner.class_weight, **learner.stopping.to_dict()}  # the estimator's names
    fresh = clone(model)
    known = fresh.get_params(deep=False)
    return fresh.set_params(**{k: v for k, v in settings.items() if k in known})


def fresh_fit(model: Any, seed: int = 0) -> Any:
    """A new model with the settings ``model``'s members were trained with (``trained_as``) and its output
    overrides, fitted on the rows ``model`` holds now, in a shuffled order."""
    ens = ensemble_of(model)
    rows = ens.all_rows()
    order = pa.array(np.random.default_rng(seed).permutation(rows.num_rows))
    rows = rows.take(order)
    X = rows.select(list(ens.schema.names))
    y = rows.column(LABEL).to_numpy(zero_copy_only=False)
    fresh = trained_as(model).fit(X, y, ids=rows.column(ID), sample_weight=rows.column(WEIGHT).to_numpy())
    # the stored columns carry the names fit gave them; the fresh model takes them as the original did
    state = ensemble_of(fresh).evolve(schema=ens.schema)
    # group weights and output overrides are settings, not fitted state: a fresh fit carries the same ones
    state = state.evolve(weight_overrides=dict(ens.weight_overrides))
    for o in ens.overrides:
        state = state.add_override(o.rule_id, o.text, o.mask, o.label)
    return attach_ensemble(fresh, state)


def _output(model: Any, X: Any) -> np.ndarray:
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def _full_refit(model: Any, X_probe: Any, seed: int, result: VerifyResult) -> Check:
    t0 = time.perf_counter()
    if X_probe is None:  # a sample of the stored rows
        ens = ensemble_of(model)
        rows = ens.all_rows()
        X_probe = rows.take(pa.array(np.arange(0, rows.num_rows, max(1, rows.num_rows // 2000)))).select(list(ens.schema.names))
    fresh = fresh_fit(model, seed)
    a, b = _output(model, X_probe), _output(fresh, X_probe)
    same_outputs = a.shape == b.shape and bool(np.array_equal(a, b))
    # every member's fitted state too: a stale piece of it (an imputer's statistics on rows without missing
    # values) can leave every output equal
    mine = {g.name: g.member for g in ensemble_of(model).groups.values()}
    theirs = {g.name: g.member for g in ensemble_of(fresh).groups.values()}
    differ = sorted(n for n in mine.keys() | theirs.keys() if mine.get(n) is None or theirs.get(n) is None
                    or model_bytes(mine[n]) != model_bytes(theirs[n]))
    equal = same_outputs and not differ
    result.fresh_fit_equal = equal
    result.max_abs_diff = 0.0 if same_outputs else float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
    result.rows_probed = len(a)
    summary = f"full refit: predictions on {len(a)} row(s) " + (
        "identical to a fresh fit" if same_outputs else f"differ from a fresh fit by up to {result.max_abs_diff:g}")
    if differ:
        summary += f"; member(s) {differ[:5]} differ from the fresh fit's"
    elif equal:
        summary += ", every member byte-identical"
    return Check("exact", equal, summary, {"mode": "full", "rows_probed": len(a), "max_abs_diff": result.max_abs_diff,
                                           "members_differ": differ}, time.perf_counter() - t0)


def _digests_of(entry: dict, field: str = "forgotten") -> set[bytes]:
    return {bytes.fromhex(h) for h in (entry.get(field) or {}).get("hmac_sha256", [])}


def _deletion_lines(src: Source, request_id: str | None, digests: set[bytes]) -> tuple[list[dict], list[dict]]:
    """(the request's own lines, every line from its first one to the end): every later change retrained
    groups too. Without a request, the deletion is the first line whose digests meet ``digests``."""
    if src.store is None:
        return [], []
    lines = [e for e, _ in src.lines()]
    if request_id:
        own = request_lines(src, request_id)
        return [e for _, e, _ in own], lines[own[0][0]:]
    hit = [i for i, e in enumerate(lines) if digests & _digests_of(e)]
    if not hit:
        return [], []
    return [e for e in lines if digests & _digests_of(e)], lines[hit[0]:]


def _request_problem(request_id: str, own: list[dict]) -> str | None:
    """Why the request's ledger lines do not record a deletion, or None: some line must have removed rows (a
    dropped group's rows count), and every line's forgotten-id digests must be as many as the rows it removed
    (so a line cannot call itself a deletion while naming nothing to look for, nor name ids it did not remove)."""
    removed = 0
    for e in own:
        n, f = e.get("rows_removed", 0), e.get("forgotten") or {}
        digests = f.get("hmac_sha256", []) if isinstance(f, dict) else None
        count = f.get("count", 0) if isinstance(f, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(digests, list) or count != len(digests) \
                or len(digests) != n:
            return (f"request {request_id!r}: its ledger line at version {e.get('version')!r} ({e.get('operation')!r}) "
                    f"records {n!r} row(s) removed but {count!r} forgotten id digest(s): the ledger does not describe a "
                    "deletion it can prove; do not trust this store")
        removed += n if e.get("is_deletion") else 0
    if not removed:
        ops = sorted({str(e.get("operation")) for e in own})
        return (f"request {request_id!r} removed no row (its ledger line(s): {', '.join(ops)}): it is not a deletion, "
                "there is nothing to verify; pass the request_id given to forget_rows or forget_group")
    return None


def readded(lines: list[dict], digests: set[bytes]) -> list[str]:
    """Where ``add_rows(..., allow_forgotten=True)`` put any of ``digests`` back: 'version N (operation)'."""
    return [f"version {e.get('version')} ({e.get('operation')})" for e in lines if digests & _digests_of(e, "readded")]


def _names_check(names: Any, own: list[dict], from_ledger: bool = True) -> Check | None:
    """A failing check when the request's digests were made under another key than the store names ids with
    now (a replaced ``secret.key``: every digest the checks look for would then match nothing).

    On a store without a key, a line that does not say which key its digests are under fails too when the
    checks look for the ledger's digests (``from_ledger``): every line written since ledger lines record
    ``names_key`` carries it, and stripping it (the chain re-hashed) would hide a replaced ``secret.key``. A keyed
    store's lines are covered by its HMACs, so a line of a store saved before the field existed is accepted
    there. Ids given to the check are hashed under the store's key now and need no recorded key."""
    if from_ledger and not names.keyed:
        bare = [e for e in own if not isinstance(e.get("names_key"), str)]
        if bare:
            where = ", ".join(f"version {e.get('version')!r} ({e.get('operation')!r})" for e in bare[:3])
            return Check("names", False, f"the request's ledger line(s) at {where} do not record which key their id "
                         "digests are under (names_key): on a store saved without a key the field may have been "
                         "stripped to hide a replaced secret.key, so the ledger's digests prove nothing. A store written "
                         "by clusterforget 0.1.0 before lines recorded it: check the request by its ids instead "
                         "(forgotten= / --ids, without the request id), or save the store with a key from now on",
                         {"lines": [e.get("version") for e in bare]})
    recorded = sorted({e["names_key"] for e in own if e.get("names_key")})
    if not recorded or recorded == [names.key_id]:
        return None
    return Check("names", False, f"the request's ledger line(s) hashed ids under key id {recorded!r}, but the store now "
                 f"names ids with key id {names.key_id!r}: its secret.key was replaced, and no digest of the request "
                 "can be found any more; do not trust this store", {"recorded": recorded, "now": names.key_id})


def _forgotten_rows(ens: Any, ids: pa.Array | None, X_forgotten: Any) -> pa.Table | None:
    """The forgotten rows' features with ``ID`` and ``HASH`` when the caller gives them (ids aligned with X)."""
    if X_forgotten is None:
        return None
    table = conform(X_forgotten, ens.schema, "verify")
    if ids is not None and len(ids) == table.num_rows:
        table = table.append_column(ID, ids).append_column(HASH, pa.array(id_hash(ids), pa.uint64()))
    else:
        # without aligned ids the rows still route to key and cluster groups (hash shards need ids)
        table = table.append_column(ID, pa.nulls(table.num_rows, pa.int64())).append_column(
            HASH, pa.array(np.zeros(table.num_rows, np.uint64)))
    return table


def verify(model: Any, forgotten: Any = None, X_probe: Any = None, *, checks: Iterable[str] | None = None,
           X_holdout: Any = None, y_holdout: Any = None, X_forgotten: Any = None, y_forgotten: Any = None,
           request_id: str | None = None, exact: str = "fast", seed: int = 0, key: Any = None) -> VerifyResult:
    """Check that forgetting worked.

    Parameters
    ----------
    model : a fitted estimator (bound to a store or not), a store directory (opened read-only), or a fitted
        scikit-learn Pipeline ending in one: the checks run on its model, and a ``pipeline`` check fails when an
        earlier step holds state fitted on the rows (outside what forgetting and these checks cover). Given the
        model alone, verify cannot see a Pipeline around it: pass the Pipeline.
    forgotten : ids that were forgotten (a non-empty list of the model's id type). With a store,
        ``request_id`` alone is enough: the ledger lines hold the ids' keyed hashes.
    X_probe : rows to compare predictions on (the legacy full-refit check when ``checks`` is not given).
    checks : any of ``"held", "purge", "exact", "mia", "diff"``; default: the legacy checks.
    X_holdout, y_holdout : rows never trained on (``mia``).
    X_forgotten, y_forgotten : the forgotten rows themselves (``mia``; ``purge`` finds copies of them,
        ``exact`` routes them to their groups), in the order of ``forgotten``.
    request_id : the deletion request to check: every ledger line written with that ``request_id``.
    exact : ``"fast"`` (re-derive global state, retrain the affected members) or ``"full"`` (refit everything).
    key : the key of an authenticated store, when ``model`` is a path (as ``cf.load``: refused without it).

    Returns
    -------
    VerifyResult: ``ok``, one ``Check`` per check in ``checks``, ``print`` shows a table, ``to_json()``.
    """
    t0 = time.perf_counter()
    legacy = checks is None
    if isinstance(checks, str):
        checks = (checks,)
    checks = tuple(checks or ())
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise InputError(f"unknown check(s) {unknown!r}; choose from {list(CHECKS)!r}")
    if exact not in ("fast", "full"):
        raise InputError(f"exact={exact!r} is not an option; use 'fast' (retrain the affected members) or 'full'")
    if request_id is not None and (not isinstance(request_id, str) or not request_id.strip()):
        raise InputError(f"request_id={request_id!r} names no request; pass the request_id given to forget_rows, "
                         "or leave it out")
    held: list = []
    if not isinstance(model, (Source, str)) and not hasattr(model, "__fspath__") and hasattr(model, "steps"):
        model, held = pipeline_parts(model)  # a Pipeline: its model is checked, its earlier steps judged here
    src = model if isinstance(model, Source) else source_of(model, key)
    model = src.model
    ens = ensemble_of(model)
    result = VerifyResult(ok=True, request_id=request_id or "")
    if held:
        result.add(Check("pipeline", False, "OUTSIDE THE GUARANTEE: Pipeline step(s) " + "; ".join(
            f"{name!r} ({cls}: {', '.join(state[:4])})" for name, cls, state in held) + " hold state fitted on the "
            "rows, which forgetting through the model does not change; refit the Pipeline, or move the step into the "
            "model as preprocessor=", {"steps": [name for name, _, _ in held]}))
    ids = None
    if forgotten is not None:
        ids = as_ids(forgotten, what="forgotten ids")
        if len(ids) == 0:
            raise InputError("forgotten=[] names no id: a check of nothing would pass; pass the forgotten ids, "
                             "or a request_id")
        id_type_matches(ids, ens.id_type)
    store = src.store
    names = store.names() if store is not None else None
    id_list = None if ids is None else pc.unique(ids).to_pylist()
    digests = names.ids(id_list) if names is not None and id_list else set()
    own, lines = _deletion_lines(src, request_id, digests) if store is not None else ([], [])
    for e in own:
        digests |= _digests_of(e)
    refused = _request_problem(request_id, own) if request_id and store is not None else None
    if refused is not None:
        # nothing of what the checks would look for was recorded: each of them would find nothing, and pass
        result.add(Check("request", False, refused))
        for name in checks:
            result.add(Check(name, False, f"not run: {refused}"))
        result.seconds = time.perf_counter() - t0
        return result
    rows = _forgotten_rows(ens, ids, X_forgotten) if checks else None
    if ids is not None or (digests and (legacy or "held" in checks)):
        held = []
        for g in ens.groups.values():
            col = g.rows.column(ID)
            if ids is not None:
                held += pc.filter(ids, pc.is_in(ids, value_set=col)).to_pylist()
            else:  # the request's keyed hashes: every id held is hashed the way the ledger hashed them
                held += [v for v in col.to_pylist() if names.id(v) in digests]
        result.ids_checked = len(id_list) if id_list else len(digests)
        result.ids_still_held = sorted(set(held), key=str)
        result.ok &= not held
    if store is not None and checks:
        result.add(_authenticity(store))
        bad = _names_check(names, own, from_ledger=bool(request_id) and ids is None)
        if bad is not None:
            result.add(bad)

    if legacy:
        if X_probe is not None:
            c = _full_refit(model, X_probe, seed, result)
            result.ok &= bool(c.ok)
    for name in checks:
        if name == "held":
            n = len(result.ids_still_held)
            c = Check("held", not n, f"{result.ids_checked} forgotten id(s): " + ("none held" if not n else f"{n} STILL HELD"),
                      {"ids_checked": result.ids_checked, "still_held": n})
            if not result.ids_checked:
                c = Check("held", None, "no forgotten id to look for: pass forgotten= or request_id=")
        elif name == "purge":
            if store is None:
                c = Check("purge", None, "the model has no store: nothing on disk to scan (model.save(path) first)")
            else:
                targets = digests if (request_id or digests) else set(store.tombstones())
                recorded = set(store.tombstones()) | store.secret_tombstones()
                c = check_purge(store.path, store.manifest, names=names, targets=targets, ids=id_list,
                                forgotten_rows=rows, tombstoned=recorded, readded=readded(lines, targets),
                                kept_rows=lambda: ens.all_rows().select(list(ens.schema.names)))
        elif name == "exact":
            if exact == "full":
                c = _full_refit(model, X_probe, seed, result)
            else:
                c = check_exact_fast(model, lines=lines, own=own, names=names, forgotten_ids=ids,
                                     forgotten_rows=rows, X_probe=X_probe)
                result.fresh_fit_equal = bool(c.ok)
                result.max_abs_diff = c.details["max_abs_diff"]
                result.rows_probed = c.details["rows_probed"]
            diff = environment_mismatch(src.doc, ens.learner.name) if store is not None else []
            if diff:  # a retrain here proves nothing about members trained under other versions, either way
                c = Check("exact", False, f"{describe_mismatch(diff)}; under these versions: {c.summary}",
                          {**c.details, "environment": [list(d) for d in diff]}, c.seconds)
                result.fresh_fit_equal = False
        elif name == "mia":
            if X_holdout is None or y_holdout is None:
                c = Check("mia", None, "skipped: pass X_holdout and y_holdout (rows the model never trained on)")
            else:
                c = check_mia(model, X_holdout, y_holdout, X_forgotten, y_forgotten, seed=seed)
        else:
            c = check_diff(lines)
        result.add(c)
    result.seconds = time.perf_counter() - t0
    return result


def _authenticity(store: Any) -> Check:
    """What the checks below can prove about the store they read: with a key, the store is what its key
    holder wrote; without, only that it is self-consistent."""
    if store.key is not None:
        return Check("store", True, f"authenticated under the key with id {store.names().key_id!r}: the manifest, every "
                     "file's sha256, the tombstones and every ledger line verified against HMACs", {"keyed": True})
    return Check("store", None, "NOT authenticated (saved without a key): these checks show the store is "
                 "self-consistent, and prove nothing against whoever can write the store (save with key= for that)",
                 {"keyed": False})


def verify_store(store_path: Any, request_id: str | None = None, checks: Iterable[str] = DEFAULT_CHECKS,
                 key: Any = None, store_key: Any = None, **kwargs: Any) -> VerifyResult:
    """For the command line: verify the store at ``store_path`` (read-only) for one request or in general.

    With a key (argument, ``$CLUSTERFORGET_KEY`` or ``$CLUSTERFORGET_KEY_FILE``) the result's JSON is signed
    (``result.signature``: HMAC-SHA256 of the rest), so it can be filed as evidence. An authenticated store
    is opened with ``store_key`` (default: that same key) and refused without it; a store saved without a key
    is read as it is, and the result's ``store`` line says that it proves nothing against whoever can write it.
    A ``store_key`` given is binding: a store it does not authenticate (its authentication stripped) is refused.
    """
    if isinstance(checks, str):
        checks = [c.strip() for c in checks.split(",") if c.strip()]
    secret = resolve_key(key)
    p = Path(store_path)
    result = verify(p, request_id=request_id, checks=tuple(checks), key=opening_key(p, store_key, secret or False),
                    **kwargs)
    if secret is not None:
        body = result.to_dict()
        body.pop("signature", None)
        result.signature = hmac.new(secret, dumps(body), hashlib.sha256).hexdigest()
    return result


__all__ = ["verify", "verify_store", "fresh_fit", "CHECKS", "DEFAULT_CHECKS"]
