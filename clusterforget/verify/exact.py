"""The exact check: the model is, bit for bit, what a fresh fit on the rows it holds gives.

Fast (default): every piece of global fitted state (``ensemble.FITTED_STATE``) is re-derived from the stored
rows in a scratch ensemble — the clustering (refit on the hash sample), the partition into groups and
shards, the class list, the weights (row counts) — and compared with what the model holds; then only the
members of the groups that held the forgotten rows are retrained from their rows and compared byte for
byte, ``combine="auto"``'s choice is re-derived from the scratch ensemble's members on the held-out slices and
compared, and the scratch ensemble's predictions are compared bitwise with the model's.

Which groups held the forgotten rows, without the forgotten rows: a group whose rows changed was retrained
by the operation, so its name is in the ledger line (``groups_retrained`` / ``groups_added``); hash shards
follow from the ids' hashes alone; key and cluster groups from the forgotten rows' features when the caller
passes them; and a member whose recorded training-row count differs from its group's rows did not train on
exactly those rows. The union of these is retrained. ``exact="full"`` refits everything instead (as slow
as ``fit``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from ..data import HASH, ID, LABEL, combine, conform, id_hash, take_sorted_by_id
from ..ensemble import Group, GroupedEnsemble, group_of_rows, label_counts, partition
from ..estimators import ensemble_of
from ..executors import TrainJob
from ..grouping import sample_threshold
from ..members import CLASSIFICATION, canonical_bytes
from .result import Check

# stored rows scored for the prediction comparison (plus the forgotten rows and any probe the caller gives):
# scoring every member twice dominates the check's time on many members, and equal member bytes already
# make the outputs equal, so a few hundred rows are enough to catch a difference in routing or combination
PROBE_ROWS = 500


def model_bytes(member: Any) -> bytes:
    """A member's native model file as its learner says to compare it (``members.canonical_bytes``: LightGBM's
    without the thread count it writes in it, which changes no tree), after its preprocessor's sha256."""
    return canonical_bytes(member)


def rederive(ens: GroupedEnsemble, rows: pa.Table) -> tuple[Any, dict, np.ndarray | None]:
    """(clustering state, {group id: rows}, classes) as a fresh fit computes them from the stored ``rows``."""
    state = None
    grouping = ens.grouping
    if grouping.sized:  # resolved from the stored rows, as a fresh fit on them resolves it
        counts = [c for c in label_counts(rows).values() if c] if ens.task == CLASSIFICATION else None
        grouping = grouping.resolve(rows.num_rows, ens.task, counts)
    if grouping.learned:
        h = rows.column(HASH).to_numpy()
        thr = sample_threshold(h, grouping.sample_size)
        sample = take_sorted_by_id(rows.filter(pa.array(h <= np.uint64(thr))))
        state = grouping.fit_state(sample, rows.num_rows, thr, ens.schema)
    parts = partition(grouping, state, rows, ens.max_group_rows)
    classes = None
    if ens.task == CLASSIFICATION:
        classes = np.unique(rows.column(LABEL).to_numpy(zero_copy_only=False))
    return state, parts, classes


def groups_of_rows(ens: GroupedEnsemble, rows: pa.Table) -> set:
    """Group ids the given rows (``ID`` + ``HASH`` and, for key/cluster groupings, the features) belong to."""
    n_shards = {g.key: g.n_shards for g in ens.groups.values()}
    return set(group_of_rows(ens.concrete_grouping(), ens.state, rows, n_shards))


_TOUCHED = ("groups_retrained", "groups_added", "groups_pending")


def ledger_names(lines: Iterable[dict]) -> tuple[set[str], set[str], bool]:
    """(group names the lines say were retrained, added or left pending; names they say were dropped;
    whether one of them rebuilt every group), as the ledger wrote them: plain or ``hmac:`` digests."""
    touched = {n for e in lines for k in _TOUCHED for n in e.get(k, [])}
    dropped = {n for e in lines for n in e.get("groups_dropped", [])}
    return touched, dropped, any(e.get("regrouped") for e in lines)


def suspects(ens: GroupedEnsemble, *, lines: list[dict] = (), own: list[dict] = (), names: Any = None,
             forgotten_ids: pa.Array | None = None, forgotten_rows: pa.Table | None = None
             ) -> tuple[set, dict[str, list[str]], list[str]]:
    """Groups whose members must be retrained, why each (by source), and problems that make a pass unsound.

    Sources: the ledger lines from the request on name the groups they retrained (plain, or keyed with the
    store's ``names``: each live group's name is hashed the same way to match them); the ids' hashes name
    hash shards; the forgotten rows' features name key and cluster groups; a member whose recorded row count
    differs from its group's did not train on exactly those rows. A line that rebuilt every group makes every
    member a suspect."""
    why: dict = {}

    def add(gids: Any, source: str) -> None:
        for gid in gids:
            why.setdefault(gid, []).append(source)

    problems: list[str] = []
    touched, dropped, regrouped = ledger_names(lines)
    if regrouped:
        add(ens.groups, "ledger: every group was rebuilt")
    matched_names: set[str] = set()
    for gid, g in ens.groups.items():
        as_written = names.group_names(g.name) if names is not None else {g.name}
        hit = as_written & touched
        if hit:
            add([gid], "ledger")
            matched_names |= hit
    if own:
        deleted = sum(int(e.get("rows_removed", 0)) for e in own if e.get("is_deletion"))
        own_touched, own_dropped, _ = ledger_names(own)
        if deleted and not own_touched | own_dropped:
            problems.append(f"the request's ledger line(s) removed {deleted} row(s) but name no group they touched: "
                            "the ledger was altered or is not this store's")
        if own_touched and not (own_touched & (matched_names | dropped)) and not regrouped:
            problems.append(f"the request touched {len(own_touched)} member(s), none of which can be found in the model "
                            "or among the groups dropped since: cannot tell which members to retrain; use exact='full'")
    if forgotten_rows is not None and forgotten_rows.num_rows:
        add(groups_of_rows(ens, forgotten_rows) & set(ens.groups), "forgotten rows")
    elif forgotten_ids is not None and len(forgotten_ids) and not ens.grouping.routable:
        # hash shards are a function of the id alone
        t = pa.table({ID: forgotten_ids, HASH: pa.array(id_hash(forgotten_ids), pa.uint64())})
        add(groups_of_rows(ens, t) & set(ens.groups), "ids' hashes")
    add([g.gid for g in ens.groups.values() if g.member is not None and g.member.n_rows != g.n_rows], "row count")
    return set(why), why, problems


def _same_choice(a: Any, b: Any) -> bool:
    """Two ``combine_choice`` values are the same bits (a NaN score, no slice to choose on, equals itself)."""
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and np.array_equal(np.array(a[1:], dtype=np.float64), np.array(b[1:], dtype=np.float64),
                                           equal_nan=True)


def _spec_json(state: Any) -> str:
    return json.dumps(None if state is None else state.to_dict(), sort_keys=True)


def check_exact_fast(model: Any, *, lines: list[dict] = (), own: list[dict] = (), names: Any = None,
                     forgotten_ids: pa.Array | None = None, forgotten_rows: pa.Table | None = None,
                     X_probe: Any = None) -> Check:
    t0 = time.perf_counter()
    ens: GroupedEnsemble = ensemble_of(model)
    problems: list[str] = []
    # the groups' rows as they are: the partition does not depend on row order (``_split`` orders by id
    # itself), so the 1M-row sort of ``all_rows`` is not needed
    rows = combine([g.rows for g in ens.groups.values()])  # skeletons when they live on a cluster: enough here
    state, parts, classes = rederive(ens, rows)
    if _spec_json(state) != _spec_json(ens.state):
        problems.append("the clustering state differs from a refit on the stored rows")
    held = {gid: g for gid, g in ens.groups.items()}
    if set(parts) != set(held):
        problems.append(f"the partition differs: groups {sorted(map(str, set(parts) ^ set(held)))[:5]} "
                        "are in only one of the model and the re-derived partition")
    else:
        moved = [held[gid].name for gid, (m, part) in parts.items()
                 if held[gid].n_shards != m or not part.column(ID).equals(held[gid].rows.column(ID))]
        if moved:
            problems.append(f"rows of group(s) {moved[:5]} differ from the re-derived partition")
    if ens.task == CLASSIFICATION and not (ens.classes is not None and np.array_equal(ens.classes, classes)):
        problems.append(f"classes {ens.classes!r} differ from the labels held {classes!r}")
    stale_weights = [k for k in ens.weight_overrides if k not in {g.key for g in ens.groups.values()}]
    if stale_weights:
        problems.append(f"weights are set for groups that left the model: {stale_weights[:5]}")

    retrain, why, unsound = suspects(ens, lines=lines, own=own, names=names, forgotten_ids=forgotten_ids,
                                     forgotten_rows=forgotten_rows)
    problems += unsound
    # a touched group left pending (retrain="deferred") has no member to retrain and compare: passing would be a
    # pass that compared nothing for it, and the model is not a fresh fit's until it is trained (exact="full" fails)
    pending = sorted(ens.groups[gid].name for gid in retrain if ens.groups[gid].member is None)
    if pending:
        problems.append(f"member(s) {pending[:5]} that held the forgotten rows are pending (forgotten with "
                        "retrain='deferred'): there is no member to retrain and compare, and the model is not a fresh "
                        "fit's until they are trained; the forgotten rows are in no member (held and purge check the "
                        "rows and files): run model.retrain_pending() (`clusterforget retrain STORE`), then verify")
    retrain = sorted((gid for gid in retrain if ens.groups[gid].member is not None), key=lambda gid: ens.groups[gid].name)
    jobs = [TrainJob(ens.groups[gid].name, ens.groups[gid].rows, ens.groups[gid].remote) for gid in retrain]
    fresh = ens.executor.train(ens.learner, ens.schema, ens.task, jobs) if jobs else []
    differ = [ens.groups[gid].name for gid, m in zip(retrain, fresh) if model_bytes(m) != model_bytes(ens.groups[gid].member)]
    if differ:
        problems.append(f"member(s) {differ[:5]} differ from a retrain on their group's rows")

    # the scratch ensemble: re-derived global state, retrained members; its predictions must equal the model's
    groups = dict(ens.groups)
    for gid, m in zip(retrain, fresh):
        groups[gid] = ens.groups[gid].with_member(m)
    scratch = ens.evolve(groups=groups, state=state, classes=classes if classes is not None else ens.classes)
    scratch = scratch.evolve(combine_choice=scratch.choose_combine())  # fitted state too (FITTED_STATE)
    if not _same_choice(scratch.combine_choice, ens.combine_choice):
        problems.append(f"the combine choice {ens.combine_choice!r} differs from the one re-derived on the held-out "
                        f"slices {scratch.combine_choice!r}")
    probe = _probe(ens, rows, X_probe, forgotten_rows)
    equal, diff = True, 0.0
    if probe is not None and probe.num_rows and set(parts) == set(held) and any(g.member for g in ens.groups.values()):
        a, b = ens.predict_raw(probe), scratch.predict_raw(probe)
        equal = a.shape == b.shape and bool(np.array_equal(a, b))
        diff = 0.0 if equal else (float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf"))
        if not equal:
            problems.append(f"predictions differ from the re-derived model by up to {diff:g}")
    ok = not problems
    retrained = {ens.groups[gid].name: why[gid] for gid in retrain}
    listed = ", ".join(f"{n!r} ({' + '.join(w)})" for n, w in list(retrained.items())[:8])
    summary = (f"global state re-derived; {len(retrain)} of {len(ens.groups)} member(s) retrained, byte-identical"
               + (f": {listed}" if listed else "")
               + f"; predictions on {0 if probe is None else probe.num_rows} row(s) identical to a fresh fit") if ok else "; ".join(problems)
    if ok and not retrain:
        summary += " (no member is known to have held forgotten rows: pass forgotten=, request_id= or use exact='full')"
    return Check("exact", ok, summary, {
        "mode": "fast",
        "members_retrained": list(retrained),
        "members_total": len(ens.groups),
        "why_retrained": retrained,
        "members_differ": differ,
        "members_pending": pending,
        "rows_probed": 0 if probe is None else probe.num_rows,
        "max_abs_diff": diff,
        "problems": problems,
    }, time.perf_counter() - t0)


def rows_at(ens: GroupedEnsemble, parts: list[tuple[Group, pa.Table]], positions: np.ndarray) -> pa.Table:
    """Full rows at sorted ``positions`` of the concatenation of ``parts`` (each some of a group's rows), fetched
    group by group (``GroupedEnsemble.rows_of``)."""
    out, start = [], 0
    for g, part in parts:
        local = positions[(positions >= start) & (positions < start + part.num_rows)] - start
        if len(local):
            out.append(ens.rows_of(g, part.take(pa.array(local))))
        start += part.num_rows
    if not out:  # no position: an empty table of the full columns
        g, part = parts[0]
        out.append(ens.rows_of(g, part.slice(0, 0)))
    return combine(out)


def _probe(ens: GroupedEnsemble, rows: pa.Table, X_probe: Any, forgotten_rows: pa.Table | None) -> pa.Table | None:
    names = list(ens.schema.names)
    step = max(1, rows.num_rows // PROBE_ROWS)
    picked = np.arange(0, rows.num_rows, step)[:PROBE_ROWS]
    tables = [rows_at(ens, [(g, g.rows) for g in ens.groups.values()], picked).select(names)]
    if forgotten_rows is not None and forgotten_rows.num_rows:
        tables.append(forgotten_rows.select(names))
    if X_probe is not None:
        tables.append(conform(X_probe, ens.schema, "verify"))
    tables = [t.cast(tables[0].schema) for t in tables]
    return pa.concat_tables(tables)


__all__ = ["check_exact_fast", "rederive", "suspects", "model_bytes", "rows_at"]
