"""Verify that forgetting worked: ``verify`` runs the named checks and gathers them in one result.

Checks (one module each): ``purge`` (no file under the store holds a forgotten id or row; no unreferenced
file), ``exact`` (the model is what a fresh fit on its rows gives: fast by default, ``exact="full"`` refits
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

from ..data import HASH, ID, LABEL, as_ids, conform, id_hash
from ..errors import InputError
from ..store import tombstones
from ..store.fs import dumps
from ..store.keys import resolve_key
from .diff import check_diff
from .exact import check_exact_fast
from .mia import check_mia
from .purge import check_purge
from .result import Check, VerifyResult
from .source import Source, ledger_lines, request_line, source_of

CHECKS = ("purge", "exact", "mia", "diff")


def fresh_fit(model: Any, seed: int = 0) -> Any:
    """A new model with the same settings and output overrides, fitted on the rows ``model`` holds now, in a
    shuffled order."""
    ens = model._ensemble()
    rows = ens.all_rows()
    order = pa.array(np.random.default_rng(seed).permutation(rows.num_rows))
    rows = rows.take(order)
    X = rows.select(list(ens.schema.names))
    y = rows.column(LABEL).to_numpy(zero_copy_only=False)
    fresh = clone(model).fit(X, y, ids=rows.column(ID))
    # the stored columns carry the names fit gave them; the fresh model takes them as the original did
    fresh.ensemble_.schema = ens.schema
    fresh._set_fitted(fresh.ensemble_)
    # output overrides are settings, not fitted state: a fresh fit carries the same ones, in the same order
    for o in ens.overrides:
        fresh.ensemble_.add_override(o.rule_id, o.text, o.mask, o.label)
    return fresh


def _output(model: Any, X: Any) -> np.ndarray:
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def _full_refit(model: Any, X_probe: Any, seed: int, result: VerifyResult) -> Check:
    t0 = time.perf_counter()
    if X_probe is None:  # a sample of the stored rows
        ens = model._ensemble()
        rows = ens.all_rows()
        X_probe = rows.take(pa.array(np.arange(0, rows.num_rows, max(1, rows.num_rows // 2000)))).select(list(ens.schema.names))
    fresh = fresh_fit(model, seed)
    a, b = _output(model, X_probe), _output(fresh, X_probe)
    equal = a.shape == b.shape and bool(np.array_equal(a, b))
    result.fresh_fit_equal = equal
    result.max_abs_diff = 0.0 if equal else float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
    result.rows_probed = len(a)
    return Check("exact", equal, f"full refit: predictions on {len(a)} row(s) "
                 + ("identical to a fresh fit" if equal else f"differ from a fresh fit by up to {result.max_abs_diff:g}"),
                 {"mode": "full", "rows_probed": len(a), "max_abs_diff": result.max_abs_diff}, time.perf_counter() - t0)


def _deletion_lines(src: Source, request_id: str | None, digests: set[bytes]) -> list[dict]:
    """Ledger lines from the deletion in question to the end (every later change retrained groups too)."""
    if src.store is None:
        return []
    lines = [e for e, _ in ledger_lines(src.store)]
    if request_id:
        start = request_line(src.store, request_id)[0]
    else:
        hit = [i for i, e in enumerate(lines)
               if digests & {bytes.fromhex(h) for h in e.get("forgotten", {}).get("hmac_sha256", [])}]
        deletions = [i for i, e in enumerate(lines) if e.get("rows_removed")]
        start = hit[0] if hit else (deletions[-1] if deletions else len(lines))
    return lines[start:]


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
           request_id: str | None = None, exact: str = "fast", seed: int = 0) -> VerifyResult:
    """Check that forgetting worked.

    Parameters
    ----------
    model : a fitted estimator (bound to a store or not), or a store directory (opened read-only).
    forgotten : ids that were forgotten. With a store, ``request_id`` alone is enough: the ledger line
        holds the ids' keyed hashes.
    X_probe : rows to compare predictions on (the legacy full-refit check when ``checks`` is not given).
    checks : any of ``"purge", "exact", "mia", "diff"``; default: the legacy checks.
    X_holdout, y_holdout : rows never trained on (``mia``).
    X_forgotten, y_forgotten : the forgotten rows themselves (``mia``; ``purge`` finds copies of them,
        ``exact`` routes them to their groups), in the order of ``forgotten``.
    request_id : the deletion request to check (the ledger line ``forget_rows(..., request_id=)`` wrote).
    exact : ``"fast"`` (re-derive global state, retrain the affected members) or ``"full"`` (refit everything).

    Returns
    -------
    VerifyResult: ``ok``, one ``Check`` per check in ``checks``, ``print`` shows a table, ``to_json()``.
    """
    t0 = time.perf_counter()
    legacy = checks is None
    checks = tuple(checks or ())
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise InputError(f"unknown check(s) {unknown!r}; choose from {list(CHECKS)!r}")
    if exact not in ("fast", "full"):
        raise InputError(f"exact={exact!r} is not an option; use 'fast' (retrain the affected members) or 'full'")
    src = model if isinstance(model, Source) else source_of(model)
    model = src.model
    ens = model._ensemble()
    result = VerifyResult(ok=True, request_id=request_id or "")
    ids = None
    if forgotten is not None:
        ids = as_ids(forgotten, what="forgotten ids")
        held = []
        for g in ens.groups.values():
            held += pc.filter(ids, pc.is_in(ids, value_set=g.rows.column(ID))).to_pylist()
        result.ids_checked = len(pc.unique(ids))
        result.ids_still_held = held
        result.ok &= not held
    store = src.store
    secret = store.secret() if store is not None else None
    id_list = None if ids is None else pc.unique(ids).to_pylist()
    digests = {tombstones.digest(secret, v) for v in id_list} if secret is not None and id_list else set()
    lines = _deletion_lines(src, request_id, digests) if (store is not None and ("exact" in checks or "diff" in checks or request_id)) else []
    if request_id and lines:
        digests |= {bytes.fromhex(h) for h in lines[0].get("forgotten", {}).get("hmac_sha256", [])}
    rows = _forgotten_rows(ens, ids, X_forgotten) if checks else None

    if legacy:
        if X_probe is not None:
            c = _full_refit(model, X_probe, seed, result)
            result.ok &= bool(c.ok)
    for name in checks:
        if name == "purge":
            if store is None:
                c = Check("purge", None, "the model has no store: nothing on disk to scan (model.save(path) first)")
            else:
                targets = digests if (request_id or digests) else set(store.tombstones())
                c = check_purge(store.path, store.manifest, secret=secret, targets=targets, ids=id_list,
                                forgotten_rows=rows, tombstoned=store.tombstones() if id_list else None)
        elif name == "exact":
            if exact == "full":
                c = _full_refit(model, X_probe, seed, result)
            else:
                groups = {n for e in lines for k in ("groups_retrained", "groups_added") for n in e.get(k, [])}
                c = check_exact_fast(model, ledger_groups=groups, forgotten_ids=ids, forgotten_rows=rows, X_probe=X_probe)
                result.fresh_fit_equal = bool(c.ok)
                result.max_abs_diff = c.details["max_abs_diff"]
                result.rows_probed = c.details["rows_probed"]
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


def verify_store(store_path: Any, request_id: str | None = None, checks: Iterable[str] = ("purge", "exact"),
                 key: Any = None, **kwargs: Any) -> VerifyResult:
    """For the command line: verify the store at ``store_path`` (read-only) for one request or in general.

    With a key (argument, ``$CLUSTERFORGET_KEY`` or ``$CLUSTERFORGET_KEY_FILE``) the result's JSON is signed
    (``result.signature``: HMAC-SHA256 of the rest), so it can be filed as evidence.
    """
    if isinstance(checks, str):
        checks = [c.strip() for c in checks.split(",") if c.strip()]
    result = verify(Path(store_path), request_id=request_id, checks=tuple(checks), **kwargs)
    secret = resolve_key(key)
    if secret is not None:
        body = result.to_dict()
        body.pop("signature", None)
        result.signature = hmac.new(secret, dumps(body), hashlib.sha256).hexdigest()
    return result


__all__ = ["verify", "verify_store", "fresh_fit", "CHECKS"]
