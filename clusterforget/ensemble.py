"""The backend-neutral core: groups of rows, one member per group, and the operations that change them.

Exactness contract
------------------
After any sequence of operations the ensemble equals, bit for bit, what ``fit`` on the remaining
(relabeled, added) rows with the same settings gives. Every piece of state fitted on data is listed in
``FITTED_STATE`` below and is recomputed from the rows it depends on whenever those rows change:

* ``state``    — the learned partition (``ClusterState``: sample bound, scaling, quantized centroids);
                 refit when a change touches the hash sample, and compared with the old one: if equal,
                 no row moves.
* ``groups``   — the partition itself: base keys, size-bound shards (their count depends on group size).
* ``member``   — per group: trained on that group's rows in id order; owns its category ``vocab`` and
                 its local class list. Kept only if the group's ids and labels are unchanged.
* ``classes``  — the sorted union of labels over all groups.
* ``combine_choice`` — ``combine="auto"`` on a key grouping: route or average, whichever scores better on the
                 groups' held-out slices (rows no member trained on); re-chosen from the members after every
                 change, as a fresh fit chooses.
* weights      — derived, never stored: the sum of the group's sample weights (its row count when no row has
                 a weight), times a user override, which is a setting, not fitted state. Sample weights are
                 data: a column of the rows (``data.WEIGHT``), changed by ``reweight``.

A state (``GroupedEnsemble``) is immutable: every operation computes on new objects and returns a new state
(``Outcome``), so a failure (bad input, a learner error, a store that cannot commit) leaves every holder of
the old state with exactly what it had; undoing is keeping the old reference.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import HASH, ID, LABEL, WEIGHT, RemoteInput, Schema, combine, hash_bucket, id_hash, take_sorted_by_id
from .errors import ClusterForgetError, EmptyModelError, InputError, UnknownGroupError, UnknownIdError
from .executors import Executor, ThreadExecutor, TrainJob, resolve_threads
from .grouping import ClusterState, Grouping, Key, key_label, key_sort, sample_threshold
from .members import CLASSIFICATION, Learner, Member
from .report import Report
from .scoring import Mask, Override, ScoredMember, ScoringSpec, override_class, score

FITTED_STATE = {
    "state": "learned partition: clustering sample bound, power-of-two scaling, quantized centroids",
    "groups[*].rows": "the training rows of each group (ids, features, labels, sample weights), in id order",
    "groups[*].member": "the model trained on exactly those rows, with its category vocab and class list, and the "
                        "group's own fitted preprocessor (preprocessor=), fitted on the same rows",
    "classes": "sorted union of the labels of all remaining rows (classification)",
    "combine_choice": "combine='auto' on keys: route or average, as they score on the held-out slices",
}

GroupId = tuple  # (base key, shard)
MAX_GROUP_WEIGHT = 1e12  # times rows per group, far from float64 overflow


@dataclass(frozen=True, eq=False)
class Group:
    """One group of an ensemble state: its rows and its member. Never changed once made (``replace`` makes
    another); only its lazy indexes are filled in on first use, from rows that never change."""

    key: Key
    shard: int
    n_shards: int
    rows: pa.Table
    member: Member | None  # None: waiting for retrain_pending()
    labels: np.ndarray | None = None  # distinct labels (classification)
    _ids: np.ndarray | None = field(default=None, repr=False)
    _counts: dict | None = field(default=None, repr=False)  # rows per label (classification; lazy)
    sliced: bool = False  # rows are zero-copy slices of buffers that also hold removed rows (``without_rows``)
    # rows on a cluster (a ``RowHolder`` executor): handles of tables there that hold at least this group's rows;
    # ``rows`` is then the group's skeleton (``GroupedEnsemble.skeleton``), and ``sliced`` says the handles may
    # hold more rows than the group's (removed ones, other groups'), until ``place`` narrows them to one
    remote: tuple = ()
    _weight_sum: float | None = field(default=None, repr=False)  # sum of sample weights (lazy)
    _slice: pa.Table | None = field(default=None, repr=False)  # full rows of the held-out slice (lazy)

    def with_member(self, member: Member | None) -> "Group":
        """The same group (rows, handles, cached indexes) with another member."""
        return replace(self, member=member)

    @property
    def id_index(self) -> np.ndarray:
        """The group's ids as a sorted numpy array (rows are kept in id order), for binary search."""
        if self._ids is None:
            object.__setattr__(self, "_ids", ids_numpy(self.rows.column(ID)))  # a cache of immutable rows
        return self._ids

    @property
    def label_counts(self) -> dict:
        """Rows per label (computed once: rows never change in place)."""
        if self._counts is None:
            object.__setattr__(self, "_counts", label_counts(self.rows))  # a cache of immutable rows
        return self._counts

    @property
    def weight_sum(self) -> float:
        """Sum of the group's sample weights, in id order (numpy's pairwise sum of one contiguous array, so a
        fresh fit on the same rows sums the same bits)."""
        if self._weight_sum is None:
            object.__setattr__(self, "_weight_sum", weight_sum(self.rows))  # a cache of immutable rows
        return self._weight_sum

    @property
    def gid(self) -> GroupId:
        return (self.key, self.shard)

    @property
    def n_rows(self) -> int:
        return self.rows.num_rows

    @property
    def name(self) -> str:
        base = key_label(self.key)
        return base if self.n_shards == 1 else f"{base} [shard {self.shard + 1}/{self.n_shards}]"


def ids_numpy(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Ids as numpy: int64, or an object array of Python strings.

    Not numpy's fixed-width unicode: it drops trailing NUL characters, so ``"u0"`` and ``"u0\x00"`` would be
    one id. Python strings compare exactly, in code point order, which equals Arrow's byte-wise UTF-8 order.
    """
    if pa.types.is_integer(ids.type):
        return ids.to_numpy()
    return np.array(ids.to_pylist(), dtype=object)


def weight_sum(rows: pa.Table) -> float:
    return float(np.sum(np.ascontiguousarray(rows.column(WEIGHT).to_numpy(), dtype=np.float64)))


def label_counts(rows: pa.Table) -> dict:
    vc = pc.value_counts(rows.column(LABEL))
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


def _minus(counts: dict, lost: dict) -> dict:
    return {v: c - lost.get(v, 0) for v, c in counts.items() if c - lost.get(v, 0)}


# A forget removes rows as zero-copy slices around them (no copy of the group's rows: the deferred path's time to
# no influence stays microseconds at any size). The slices still point into buffers that hold the removed rows, so
# those references are dropped (``GroupedEnsemble.compact``, ``combine_chunks``) when the group retrains, before
# every save or store commit, and once a group has more than MAX_CHUNKS pieces; files only ever get the slices'
# own rows.
MAX_CHUNKS = 16
MAX_SLICED = 8  # removing more rows than this from one group copies once (a filter) instead


def without_rows(t: pa.Table, gone: np.ndarray) -> pa.Table:
    """``t`` without the rows at the sorted positions ``gone``."""
    if len(gone) > MAX_SLICED:
        keep = np.ones(t.num_rows, dtype=bool)
        keep[gone] = False
        return t.filter(pa.array(keep))
    bounds = [-1, *gone.tolist(), t.num_rows]
    parts = [t.slice(a + 1, b - a - 1) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]
    return pa.concat_tables(parts) if parts else t.slice(0, 0)


def own_buffers(t: pa.Table) -> pa.Table:
    """``t`` copied into new buffers that hold exactly its rows (a zero-copy slice's buffers hold more)."""
    return t.take(pa.array(np.arange(t.num_rows)))


def _sum_counts(parts: Iterable[dict]) -> list[int]:
    total: dict = {}
    for part in parts:
        for label, c in part.items():
            total[label] = total.get(label, 0) + c
    return [c for c in total.values() if c]


def _rounds_of(state: "GroupedEnsemble", gids: list[GroupId]) -> dict[str, int]:
    """Group name -> boosting rounds of its new member (early stopping's choice when it stopped early)."""
    return {state.groups[gid].name: state.groups[gid].member.rounds for gid in gids
            if gid in state.groups and state.groups[gid].member is not None}


# member -> {group: its outputs on the group's held-out slice}; weak on both sides, so nothing here outlives the
# member or the group (a forgotten row's slice leaves with its group)
_SLICE_OUTPUTS: "weakref.WeakKeyDictionary[Member, weakref.WeakKeyDictionary[Group, np.ndarray]]" = \
    weakref.WeakKeyDictionary()
_SLICE_LOCK = threading.Lock()


def _slice_outputs(state: "GroupedEnsemble", member: Member, g: Group, part: pa.Table) -> np.ndarray:
    """``member``'s outputs (its own classes) on ``g``'s held-out slice ``part``, computed once."""
    with _SLICE_LOCK:
        out = _SLICE_OUTPUTS.get(member, {}).get(g)
    if out is None:
        out = member.predict(part, state.schema, state.threads)
        with _SLICE_LOCK:
            _SLICE_OUTPUTS.setdefault(member, weakref.WeakKeyDictionary())[g] = out
    return out


def _slice_score(state: "GroupedEnsemble", out: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """A combination's score on held-out rows: AUC (two classes), log loss (more), mean squared error."""
    import sklearn
    from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

    with sklearn.config_context(skip_parameter_validation=True):  # checked here; a change must stay cheap
        return _slice_metric(state, out, y, w, log_loss, mean_squared_error, roc_auc_score)


def _slice_metric(state, out, y, w, log_loss, mean_squared_error, roc_auc_score) -> float:
    if state.task != CLASSIFICATION:
        return float(mean_squared_error(y.astype(np.float64), out[:, 0], sample_weight=w))
    yi = np.searchsorted(state.classes, y)
    if state._auc_scored(y):
        return float(roc_auc_score(yi, out[:, 1], sample_weight=w))
    p = np.clip(out, 1e-15, 1.0)
    return float(log_loss(yi, p / p.sum(axis=1, keepdims=True), labels=np.arange(len(state.classes)), sample_weight=w))


def _gid_order(gid: GroupId) -> tuple:
    return (key_sort(gid[0]), gid[1])


@dataclass(frozen=True)
class Assigner:
    """Rows -> the index of the group they belong to (-1: none of those asked for), run where the rows are.

    The grouping, clustering state and shard counts ``plan`` used to partition the skeletons, so a cluster's
    shuffle puts every row where ``plan`` put its id (``materialize`` checks it, id by id).
    """

    grouping: Grouping
    state: Any
    id_type: pa.DataType
    shards: dict  # base key -> number of shards
    index: dict  # (base key, shard) -> group index

    def __call__(self, rows: pa.Table) -> np.ndarray:
        out = np.full(rows.num_rows, -1, dtype=np.int64)
        if not rows.num_rows:
            return out
        ids = rows.column(ID)
        if ids.type != self.id_type:
            ids = pc.cast(ids, self.id_type)
        table = rows.select([c for c in rows.column_names if c not in (HASH, LABEL)]).append_column(
            HASH, pa.array(id_hash(ids), pa.uint64()))
        codes, keys, shard = assign_rows(self.grouping, self.state, table, self.shards)
        for c, key in enumerate(keys):
            m = self.shards.get(key)
            if m is None:
                continue
            sel = codes == c
            lut = np.array([self.index.get((key, s), -1) for s in range(m)], dtype=np.int64)
            out[sel] = lut[shard[sel]]
        return out


def materialize(skeleton: pa.Table, tables: list[pa.Table], names: tuple[str, ...]) -> pa.Table:
    """A group's full rows from tables that hold them (among others, maybe): exactly the skeleton's ids, in id
    order, its id hashes and labels, the features ``names`` from the tables. Raises if any id is missing."""
    ids = skeleton.column(ID)
    parts = [t.select([ID, *names]) for t in tables if t is not None and t.num_rows]
    t = combine(parts) if parts else None
    if t is not None and t.column(ID).type != ids.type:
        t = t.set_column(0, ID, pc.cast(t.column(ID), ids.type))
    if t is not None and not (t.num_rows == len(ids) and t.column(ID).equals(ids)):
        t = take_sorted_by_id(t.filter(pc.is_in(t.column(ID), value_set=ids)))
    if t is None or t.num_rows != len(ids) or not t.column(ID).equals(ids):
        held = 0 if t is None else t.num_rows
        raise ClusterForgetError(
            f"the cluster holds {held} of this group's {len(ids)} rows (or other ids): its rows were lost or the "
            "partition differs. Nothing was changed; refit the model, or load it from its store"
        )
    cols = [t.column(ID), skeleton.column(HASH), *(t.column(n) for n in names), skeleton.column(LABEL),
            skeleton.column(WEIGHT)]  # labels and weights are the skeleton's: relabel and reweight change them here
    return pa.table(cols, names=[ID, HASH, *names, LABEL, WEIGHT])


# ---------------------------------------------------------------------------------------------- the partition
# One derivation of the partition: base keys from ``Grouping.assign``, then size-bound shards by ``data.hash_bucket``
# of the id hash. ``split_by_key`` + ``shard_rows`` cut whole keys' rows (fit and every change, in ``plan``, and the
# verification's re-derivation, ``partition``); ``assign_rows`` gives each row its group (a cluster's shuffle,
# ``Assigner``, and the verification's ``group_of_rows``).
def split_by_key(rows: pa.Table, codes: np.ndarray, keys: list[Key]) -> dict[Key, list[pa.Table]]:
    """Rows by base key (``codes`` index ``keys``), each part already in id order (one take per group)."""
    by_id = pc.sort_indices(rows, sort_keys=[(ID, "ascending")]).to_numpy()
    rank = np.empty(len(by_id), dtype=np.int64)
    rank[by_id] = np.arange(len(by_id))
    order = np.lexsort((rank, codes))
    counts = np.bincount(codes, minlength=len(keys))
    out, start = {}, 0
    for key, c in zip(keys, counts.tolist()):
        if c:
            # a take per group: each group owns its buffers, so dropping a group's buffers after a forget
            # (``compact``) lets go of the forgotten rows' memory; slices of one big table would keep it all
            out[key] = [rows.take(pa.array(order[start:start + c]))]
        start += c
    return out


def shard_count(n_rows: int, max_group_rows: int | None) -> int:
    """How many size-bound shards a base key of ``n_rows`` rows is split into."""
    return 1 if max_group_rows is None else max(1, math.ceil(n_rows / max_group_rows))


def shard_rows(rows: pa.Table, max_group_rows: int | None):
    """(shard, shard count, rows) of one base key's rows (in id order; each shard stays in id order)."""
    m = shard_count(rows.num_rows, max_group_rows)
    if m == 1:
        yield 0, 1, rows
        return
    shard = hash_bucket(rows.column(HASH).to_numpy(), m)
    for s in range(m):
        sel = shard == s
        if sel.any():
            yield s, m, rows.filter(pa.array(sel))


def partition(grouping: Grouping, state: Any, rows: pa.Table, max_group_rows: int | None
              ) -> dict[GroupId, tuple[int, pa.Table]]:
    """{(base key, shard): (shard count, rows)}: how a fresh fit partitions ``rows`` under a concrete grouping
    and its fitted state."""
    codes, keys = grouping.assign(rows, state)
    out: dict = {}
    for key, tables in split_by_key(rows, codes, keys).items():
        for shard, n_shards, part in shard_rows(tables[0], max_group_rows):
            out[(key, shard)] = (n_shards, part)
    return out


def assign_rows(grouping: Grouping, state: Any, rows: pa.Table, n_shards: dict
                ) -> tuple[np.ndarray, list[Key], np.ndarray]:
    """Each row's group, given each base key's shard count (a key not in ``n_shards`` counts one shard): its base
    key (``codes`` index ``keys``) and its shard (``data.hash_bucket`` of the id hash). ``rows``: id hash and the
    columns the grouping reads. Where rows are (a cluster's shuffle) and where they are checked (verification)."""
    codes, keys = grouping.assign(rows, state)
    hashes = rows.column(HASH).to_numpy()
    shard = np.zeros(rows.num_rows, dtype=np.int64)
    for c, key in enumerate(keys):
        m = n_shards.get(key, 1)
        if m > 1:
            sel = codes == c
            shard[sel] = hash_bucket(hashes[sel], m)
    return codes, keys, shard


def group_of_rows(grouping: Grouping, state: Any, rows: pa.Table, n_shards: dict) -> list[GroupId]:
    """The group id of each of ``rows`` (``assign_rows``)."""
    codes, keys, shard = assign_rows(grouping, state, rows, n_shards)
    return [(keys[c], s) for c, s in zip(codes.tolist(), shard.tolist())]


def _unique(handles: Iterable[Any]) -> tuple:
    seen: dict[int, Any] = {}
    for h in handles:
        seen.setdefault(id(h), h)
    return tuple(seen.values())


def find_ids(index: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``query`` is in ``index`` (both sorted as ``ids_numpy`` sorts them), by binary search: the
    positions, and which ids were found (a position means something only where found)."""
    pos = np.searchsorted(index, query)
    hit = pos < len(index)
    hit[hit] = index[pos[hit]] == query[hit]
    return pos, hit


def sorted_ids(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` as numpy sorted for ``find_ids``, and the order that sorts them (to bring values given per id
    along)."""
    query = ids_numpy(ids)
    order = np.argsort(query, kind="stable")
    return query[order], order


def unknown_ids(asked: pa.Array, held: Iterable[pa.Array | pa.ChunkedArray]) -> UnknownIdError:
    """The one error for ids that are not rows of the model: the ids of ``asked`` not in ``held``, quoted (the
    first ten), and what to do."""
    held = [c for h in held for c in (h.chunks if isinstance(h, pa.ChunkedArray) else [h])]
    present = pa.chunked_array(held, type=asked.type) if held else pa.chunked_array([], type=asked.type)
    missing = pc.filter(asked, pc.invert(pc.is_in(asked, value_set=present))).to_pylist()
    return UnknownIdError(
        f"{len(missing)} id(s) are not rows of this model: {missing[:10]!r}{' ...' if len(missing) > 10 else ''}; "
        f"nothing was changed. Check the ids: pass ids the model holds, of its id type ({asked.type}); a "
        "forgotten row is no longer held"
    )


def _relabel_rows_by_id(t: pa.Table, index: np.ndarray, query: np.ndarray, labels: pa.Array) -> tuple[pa.Table, int]:
    """``t`` (ids ``index``, sorted) with the rows of ``query`` (sorted) given ``labels``; how many changed."""
    pos, hit = find_ids(index, query)
    if not hit.any():
        return t, 0
    at = pos[hit]
    old = t.column(LABEL)
    given = labels.filter(pa.array(hit))
    if given.type != old.type:
        given = given.cast(old.type)
    differs = pc.not_equal(old.take(pa.array(at)), given).to_numpy(zero_copy_only=False)
    k = int(np.count_nonzero(differs))
    if not k:
        return t, 0
    source = np.arange(t.num_rows)  # each row's label: its own, or (past the old ones) the one given to it
    source[at[differs]] = t.num_rows + np.flatnonzero(differs)
    new = pa.concat_arrays([*old.chunks, given]).take(pa.array(source))
    return t.set_column(t.column_names.index(LABEL), LABEL, new), k


def _reweight_rows(t: pa.Table, index: np.ndarray, query: np.ndarray, weights: np.ndarray) -> tuple[pa.Table, int]:
    """``t`` (ids ``index``, sorted) with the rows of ``query`` (sorted) given ``weights``; how many changed."""
    pos, hit = find_ids(index, query)
    if not hit.any():
        return t, 0
    old = t.column(WEIGHT).to_numpy()
    new = old.copy()
    new[pos[hit]] = weights[hit]
    k = int(np.count_nonzero(new != old))
    if not k:
        return t, 0
    return t.set_column(t.column_names.index(WEIGHT), WEIGHT, pa.array(new, pa.float64())), k


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    return (a.num_rows == b.num_rows and a.column(ID).equals(b.column(ID)) and a.column(LABEL).equals(b.column(LABEL))
            and a.column(WEIGHT).equals(b.column(WEIGHT)))


@dataclass(frozen=True)
class Outcome:
    """What a change gives: the new state, the report for the caller, and the ids the store needs, which no
    ``Report`` carries (the store keeps them as keyed hashes only).

    ``forgotten``: ids of the rows it removed (tombstones). ``added``: ids of the rows it added (the store
    records those it had tombstoned: ``add_rows(allow_forgotten=True)``). ``reweighted``: the ids whose sample
    weight it was asked to set (the ledger names them by keyed hash).
    """

    state: "GroupedEnsemble"
    report: Report
    forgotten: pa.ChunkedArray | None = None
    added: pa.ChunkedArray | pa.Array | None = None
    reweighted: pa.Array | None = None


@dataclass(frozen=True)
class Change:
    """A change to a state's rows, as a value: ``plan`` says what it would do, ``execute`` does it.

    ``remove``: ids to forget. ``drop_keys``: base keys whose groups leave with all their rows. ``add``: rows to
    add (the canonical rows table; when the rows live on a cluster, the added rows' skeleton with
    ``add_sources`` their handles there, or full rows given here, which ``execute`` sends to the cluster first).

    ``relabel``: a (row mask, label) pair: every row the mask selects gets the label.

    ``relabel_ids``: (ids sorted as ``ids_numpy`` sorts them, their new labels in that order, of the label
    type): found by binary search over each group's ids, as ``reweight``, whatever the number of labels.

    ``reweight``: (ids sorted as ``ids_numpy`` sorts them, their new sample weights in that order); the rows
    stay, only their weight column changes, and the groups whose weights changed retrain.

    ``retrain``: ``"now"`` trains the changed groups' members; ``"deferred"`` leaves them pending.

    ``pending``: train every group waiting for a member (a deferred change's, ``retrain_pending``); the rows
    stay as they are. ``weight``: (base key, weight): the user weight of that key's groups (a setting, not a
    deletion; 1 restores it); nothing trains.
    """

    operation: str
    remove: pa.Array | None = None
    drop_keys: tuple = ()
    add: pa.Table | None = None
    relabel: tuple[Mask, Any] | None = None
    relabel_ids: tuple[np.ndarray, pa.Array] | None = None
    reweight: tuple[np.ndarray, np.ndarray] | None = None
    add_sources: tuple = ()
    retrain: str = "now"
    pending: bool = False
    weight: tuple[Key, float] | None = None


@dataclass(frozen=True, eq=False)
class Plan:
    """What a change does to a state (``plan``): the new partition, the groups to train (without a member in
    ``groups`` yet), the fitted partition state, and the counts the report gives. A value: executing it
    (``execute``) or reading its report (the dry run) changes nothing in ``before``."""

    change: Change
    before: "GroupedEnsemble"
    groups: dict  # GroupId -> Group, every group of the new state
    to_train: tuple  # GroupIds, in canonical order
    grouping: Grouping  # the concrete grouping of the new state
    state: Any  # its learned partition state
    add: pa.Table | None  # the added rows as the state holds them (their skeleton for rows on a cluster)
    put: pa.Table | None  # added full rows still to be sent to the cluster
    reassign: bool
    refit: bool
    regrouped: bool
    moved: int
    removed: int
    relabeled: int
    reweighted: int
    matched: int
    forgotten: pa.ChunkedArray | None
    started: float
    weight_overrides: dict | None = None  # the user weights after a ``weight`` change (None: the groups decide)
    note: str = ""

    def report(self, result: "GroupedEnsemble", groups: dict, pending: list[str]) -> Report:
        before, retrain = self.before, self.change.retrain
        old = before.groups
        names = lambda gids: [before._name(gid, groups, old) for gid in gids]  # noqa: E731
        return Report(
            operation=self.change.operation,
            rows_removed=self.removed,
            is_deletion=self.removed > 0,
            rows_added=self.add.num_rows if self.add is not None else 0,
            rows_relabeled=self.relabeled,
            rows_reweighted=self.reweighted,
            rows_matched=self.matched,
            groups_retrained=names(self.to_train) if retrain == "now" else [],
            rounds=_rounds_of(result, list(self.to_train)) if retrain == "now" and result is not before else {},
            combine=result.combine_note() if self.weight_overrides is None else "",
            groups_dropped=names(sorted((g for g in old if g not in groups), key=_gid_order)),
            groups_added=names(sorted((g for g in groups if g not in old), key=_gid_order)),
            groups_pending=pending,
            clustering_refit=self.refit,
            clustering_changed=self.reassign and not self.regrouped,
            regrouped=self.regrouped,
            rows_moved=self.moved,
            seconds=time.perf_counter() - self.started,
            note=f"{result.n_rows:,} rows now resolve {before.grouping!r} to {self.grouping!r}: every group was "
            "rebuilt" if self.regrouped else self.note,
        )

    def dry_run(self) -> Outcome:
        """The plan as an outcome: the state it was made from, unchanged, and the report of what would happen."""
        waiting = set(self.to_train) if self.change.retrain == "now" else set()  # would be trained: not pending
        pending = [g.name for gid, g in sorted(self.groups.items(), key=lambda kv: _gid_order(kv[0]))
                   if g.member is None and gid not in waiting]
        return self.outcome(self.before, self.report(self.before, self.groups, pending))

    def outcome(self, state: "GroupedEnsemble", report: Report) -> Outcome:
        """``state`` and ``report`` with the ids this change removes, adds and reweights (for the store)."""
        reweight = self.change.reweight
        return Outcome(state, report, self.forgotten,
                       added=self.add.column(ID) if self.add is not None and self.add.num_rows else None,
                       reweighted=pa.array(reweight[0], type=self.before.id_type) if reweight is not None else None)


# ------------------------------------------------------------------------------------------ where the rows are
class Rows:
    """Where a state's rows are, behind one interface: in this process (``LocalRows``) or on the executor's
    cluster (``ClusterRows``: an ``executors.RowHolder`` keeps them; the state holds each group's skeleton and
    its handles, ``Group.remote``). The core asks it for full rows, masks, placement and training and never asks
    which one it is; each method gets the executor that holds or trains the rows."""

    on_cluster = False

    def input_columns(self, grouping: Grouping, schema: Schema) -> list[str]:
        """The columns of new rows read from a cluster-held input (``data.RemoteInput``) that this process keeps."""
        return list(schema.names)

    def sources(self, X: Any, ids: pa.Array) -> tuple:
        """Handles of new rows that stay where they are (none: they come here)."""
        return ()

    def incoming(self, state: "GroupedEnsemble", add: pa.Table | None, sources: tuple) -> tuple:
        """(the added rows as the state holds them, full rows still to send where the rows are, or None)."""
        return add, None

    def full(self, executor: Executor, g: Group, some: pa.Table, schema: Schema) -> pa.Table:
        """Full rows of ``some`` of ``g.rows`` (a filter or take of them, in id order)."""
        return some

    def masks(self, executor: Executor, fn: Mask, groups: list[Group], schema: Schema) -> list[np.ndarray]:
        """``fn`` (a row mask) over each group's full rows, computed where they are."""
        return [np.asarray(fn(g.rows), dtype=bool) for g in groups]

    def locate(self, executor: Executor, plan: Plan, groups: dict) -> dict:
        """The groups ``plan`` trains, told where their full rows are (here: they are their own rows)."""
        return {}

    def train(self, executor: Executor, state: "GroupedEnsemble", groups: list[Group]) -> list[Group]:
        """The groups with a member each, trained through ``executor`` (all of them, or it raises)."""
        members = executor.train(state.learner, state.schema, state.task, [TrainJob(g.name, g.rows) for g in groups])
        return [g.with_member(m) for g, m in zip(groups, members)]

    def own(self, executor: Executor, groups: list[Group], schema: Schema) -> list[Group]:
        """The groups with rows in buffers (and tables) that hold exactly their rows, no removed row's."""
        return [replace(g, rows=own_buffers(g.rows), sliced=False) for g in groups]

    def recover(self, executor: Executor, groups: list[Group],
                stored_rows: Callable[[pa.Table, str], pa.Table]) -> list[Group]:
        """The groups whose rows were lost where they are, put back from ``stored_rows`` (here: none is lost)."""
        return []


class LocalRows(Rows):
    """Rows in this process: each group's ``rows`` are its full rows."""


class ClusterRows(Rows):
    """Rows on the executor's cluster (a ``RowHolder``): this process holds each group's skeleton (id, hash, the
    columns the grouping reads, label, weight) and handles of tables there that hold at least its rows."""

    on_cluster = True

    def input_columns(self, grouping: Grouping, schema: Schema) -> list[str]:
        return list(grouping.reads(schema))

    def sources(self, X: Any, ids: pa.Array) -> tuple:
        return X.sources(ids) if isinstance(X, RemoteInput) else ()

    def incoming(self, state: "GroupedEnsemble", add: pa.Table | None, sources: tuple) -> tuple:
        if add is None or sources:
            return add, None
        return state.skeleton(add), add

    def full(self, executor: Executor, g: Group, some: pa.Table, schema: Schema) -> pa.Table:
        return executor.fetch(some, g.remote, schema)

    def masks(self, executor: Executor, fn: Mask, groups: list[Group], schema: Schema) -> list[np.ndarray]:
        out = executor.masks(fn, [g.remote for g in groups], [g.rows for g in groups], schema)
        return [np.asarray(m, dtype=bool) for m in out]

    def locate(self, executor: Executor, plan: Plan, groups: dict) -> dict:
        """Where the full rows of each new group are: the handles of the old groups of its key (of its shard,
        while the key's shard count stays), and its pieces of a shuffle, run there, of the added rows (and, when
        the partition changed, of every old group's rows)."""
        gids, old, before = list(plan.to_train), plan.before.groups, plan.before
        if not gids:
            return {}
        sources = plan.change.add_sources or ((executor.put(plan.put),) if plan.put is not None else ())
        shuffled = list(sources) + ([h for g in old.values() for h in g.remote] if plan.reassign else [])
        pieces: dict[GroupId, tuple] = {}
        if shuffled:
            shards = {gid[0]: groups[gid].n_shards for gid in gids}
            index = {gid: i for i, gid in enumerate(gids)}
            split = executor.shuffle(_unique(shuffled), Assigner(plan.grouping, plan.state, before.id_type, shards,
                                                                 index), len(gids), before.schema)
            pieces = {gid: split[i] for gid, i in index.items()}
        located = {}
        for gid in gids:
            g = groups[gid]
            # a shard's rows come from the same shard of its key while the shard count stays (shard = hash mod count)
            kept = () if plan.reassign else tuple(h for o in old.values() if o.key == g.key and (
                o.n_shards != g.n_shards or o.shard == g.shard) for h in o.remote)
            located[gid] = replace(g, remote=_unique(kept + tuple(pieces.get(gid, ()))), sliced=True)
        return located

    def train(self, executor: Executor, state: "GroupedEnsemble", groups: list[Group]) -> list[Group]:
        # one table per group on the cluster, which the member trains on where it is
        placed = executor.place([g.rows for g in groups], [g.remote for g in groups], state.schema)
        jobs = [TrainJob(g.name, g.rows, (h,)) for g, h in zip(groups, placed)]
        members = executor.train(state.learner, state.schema, state.task, jobs)
        # final: nothing on the cluster keeps how they were made (removed rows included)
        return [replace(g, member=m, remote=(h,), sliced=False)
                for g, m, h in zip(groups, members, executor.detach(placed))]

    def own(self, executor: Executor, groups: list[Group], schema: Schema) -> list[Group]:
        # narrowed there to one table per group, which drops the handles that held removed rows; the skeleton's
        # buffers may hold removed rows' ids too
        placed = executor.detach(executor.place([g.rows for g in groups], [g.remote for g in groups], schema))
        return [replace(g, rows=own_buffers(g.rows), remote=(h,), sliced=False) for g, h in zip(groups, placed)]

    def recover(self, executor: Executor, groups: list[Group],
                stored_rows: Callable[[pa.Table, str], pa.Table]) -> list[Group]:
        lost = [g for g in groups if executor.lost(g.remote)]
        placed = executor.detach([executor.put(stored_rows(g.rows, g.name)) for g in lost])
        return [replace(g, remote=(h,), sliced=False) for g, h in zip(lost, placed)]


LOCAL_ROWS, CLUSTER_ROWS = LocalRows(), ClusterRows()


def rows_held(on_cluster: bool) -> Rows:
    """The rows interface of a state whose rows are on its executor's cluster, or in this process."""
    return CLUSTER_ROWS if on_cluster else LOCAL_ROWS



class FrozenStateError(AttributeError):
    """An ensemble state was written to; a change makes a new state instead (``GroupedEnsemble.evolve``)."""


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GroupedEnsemble:
    """One immutable state of a grouped ensemble: settings, groups, members, fitted state.

    Nothing changes a state once it is made: every change (``apply``, ``retrain_pending``, ``set_weight``,
    ``add_override``, ``compact``) returns a new state and leaves this one as it was, so a holder of the old
    one (an undo, a store's file cache, a scoring thread) never sees a half-made change. ``evolve`` is the one
    way to make a state from another. Its fields (``FIELDS``, settings first) are the dataclass's.
    """

    FIELDS: ClassVar[tuple[str, ...]]
    # what a state derives from its fields once, on first use (never carried to a new state by ``evolve``)
    DERIVED: ClassVar[tuple[str, ...]] = ("_scoring_spec",)

    task: str
    grouping: Grouping
    learner: Learner
    combine: str
    max_group_rows: int | None
    n_jobs: int | None
    verbose: bool = False
    # where members train (the backend seam): threads in this process unless a backend gives another
    executor: Executor | None = None
    # (persisted estimator name, its parameters): what the store records of the model that holds this
    owner: tuple[str, dict] | None = None
    schema: Schema | None = None
    id_type: pa.DataType | None = None
    label_type: pa.DataType | None = None
    # where the groups' rows are (``Rows``): here, or on the executor's cluster (fit from a dask DataFrame /
    # Parquet on backend="dask"), where this process holds only their skeletons (``skeleton``)
    holder: Rows = LOCAL_ROWS
    groups: dict = field(default_factory=dict)
    state: Any = None
    classes: np.ndarray | None = None
    weight_overrides: dict = field(default_factory=dict)
    overrides: tuple = ()
    version: int = 0
    # the largest integer id ever held (forgotten rows included): add_rows without ids numbers new rows
    # after it, so it never hands out the id of a forgotten row again
    max_id: int | None = None
    # combine="auto" left to the data: (choice, route's score, average's score) on the held-out slices
    combine_choice: tuple | None = None

    def __post_init__(self) -> None:
        if self.executor is None:
            object.__setattr__(self, "executor", ThreadExecutor(self.n_jobs, self.verbose))  # still being made

    def evolve(self, **changes: Any) -> "GroupedEnsemble":
        """A new state: this one with ``changes`` (fields in ``FIELDS``); this one is left as it was."""
        unknown = set(changes) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"not fields of an ensemble state: {sorted(unknown)!r}")
        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k not in self.DERIVED})
        new.__dict__.update(changes)
        return new

    # ------------------------------------------------------------------ building rows
    @property
    def threads(self) -> int:
        """Threads for prediction: ``n_jobs`` as joblib reads it (None: every core; -2: all but one)."""
        return resolve_threads(self.n_jobs)

    def make_rows(self, X: pa.Table, y: np.ndarray, ids: pa.Array, weights: np.ndarray | None = None) -> pa.Table:
        """The canonical rows table: id, id hash, features, label, sample weight (``data.weights_array``)."""
        label = pa.array(y.tolist() if y.dtype.kind == "O" else y, type=self.label_type, from_pandas=True)
        w = pa.array(np.ones(len(ids)) if weights is None else weights, pa.float64())
        cols = [ids, pa.array(id_hash(ids), pa.uint64())] + [X.column(n) for n in X.column_names] + [label, w]
        return pa.table(cols, names=[ID, HASH, *X.column_names, LABEL, WEIGHT])

    @property
    def n_rows(self) -> int:
        return sum(g.n_rows for g in self.groups.values())

    def all_rows(self) -> pa.Table:
        """Every training row held, in id order (brought into this process when the rows live on a cluster)."""
        return take_sorted_by_id(combine([self.full_rows(g) for g in self.groups.values()]))

    def skeleton_columns(self) -> list[str]:
        """What this process keeps of each row when the rows live on a cluster: id, id hash, the columns the
        grouping reads (so the partition is derived here, exactly as for rows held here), label."""
        return [ID, HASH, *self.grouping.reads(self.schema), LABEL, WEIGHT]

    def skeleton(self, rows: pa.Table) -> pa.Table:
        return rows.select(self.skeleton_columns())

    def full_rows(self, g: Group) -> pa.Table:
        """A group's training rows with every feature column (fetched from the cluster if they live there)."""
        return self.rows_of(g, g.rows)

    @property
    def remote(self) -> bool:
        """Whether the rows are on the executor's cluster (this process holds their skeletons)."""
        return self.holder.on_cluster

    def rows_of(self, g: Group, some: pa.Table) -> pa.Table:
        """Full rows of ``some`` of ``g.rows`` (a filter or take of them, in id order): only those are fetched when
        the rows live on a cluster."""
        return self.holder.full(self.executor, g, some, self.schema)

    def masks(self, fn: Mask) -> dict[GroupId, np.ndarray]:
        """``fn`` (a rule's row mask) over each group's rows, computed where the rows are."""
        return dict(zip(self.groups, self.holder.masks(self.executor, fn, list(self.groups.values()), self.schema)))

    # ------------------------------------------------------------------ the one update path
    def fit(self, rows: pa.Table, sources: tuple = ()) -> Outcome:
        """Partition ``rows`` and train a member per group. ``sources``: handles of the full rows on the
        executor's cluster, ``rows`` being their skeleton (``backend="dask"`` inputs)."""
        empty = self.evolve(groups={}, state=None, max_id=None, holder=rows_held(bool(sources)))
        return empty.apply("fit", add=rows, add_sources=sources)

    def apply(self, operation: str, *, dry_run: bool = False, **change: Any) -> Outcome:
        """``plan`` the change (``Change(operation, **change)``) and, unless ``dry_run``, ``execute`` it with this
        state's executor. ``dry_run=True`` returns this state with the plan's report of what would happen."""
        planned = plan(self, Change(operation, **change))
        return planned.dry_run() if dry_run else execute(planned, self.executor)

    @staticmethod
    def _name(gid: GroupId, new: dict, old: dict) -> str:
        g = new.get(gid) or old.get(gid)
        return g.name if g is not None else key_label(gid[0])

    def distinct_labels(self, rows: pa.Table) -> np.ndarray | None:
        """Distinct labels of ``rows`` (classification; None for regression)."""
        return self._distinct(label_counts(rows)) if self.task == CLASSIFICATION else None

    def _distinct(self, counts: dict | None) -> np.ndarray | None:
        if self.task != CLASSIFICATION:
            return None
        present = pa.array([v for v, c in counts.items() if c], type=self.label_type)
        return np.unique(present.to_numpy(zero_copy_only=False))

    def _counts_of(self, rows: pa.Table, derived: tuple | None) -> dict | None:
        """Class counts of ``rows``: from the removal that made them when it did, else counted."""
        if self.task != CLASSIFICATION:
            return None
        if derived is not None and derived[0] is rows:
            return derived[1]
        return label_counts(rows)

    def compact(self) -> "GroupedEnsemble":
        """This state with every group's rows that are zero-copy slices (see ``without_rows``) copied into their
        own buffers, so that, once the old state is let go, the process holds no reference to the memory of
        removed rows (before a save, a commit or a retrain); rows on a cluster are narrowed there to one table
        per group (``Rows.own``). Nothing fitted changes; with
        nothing sliced this state itself is returned."""
        sliced = [g for g in self.groups.values() if g.sliced]
        if not sliced:
            return self
        new = {g.gid: g for g in self.holder.own(self.executor, sliced, self.schema)}
        return self.evolve(groups={gid: new.get(gid, g) for gid, g in self.groups.items()})

    def _relabel_rows(self, t: pa.Table, mask_fn: Mask, label: Any, mask: np.ndarray | None = None
                      ) -> tuple[pa.Table, int, int]:
        """``t`` with the rows the mask selects given ``label``; how many changed, how many the mask selects."""
        if mask is None:
            mask = np.asarray(mask_fn(t), dtype=bool)
        m = int(np.count_nonzero(mask))
        if not m:
            return t, 0, 0
        old = t.column(LABEL)
        new_value = pa.scalar(label, type=old.type)
        differs = mask & ~pc.equal(old, new_value).to_numpy(zero_copy_only=False)
        k = int(differs.sum())
        if not k:
            return t, 0, m
        new = pc.if_else(pa.array(differs), new_value, old)
        return t.set_column(t.column_names.index(LABEL), LABEL, new), k, m

    def concrete_grouping(self) -> Grouping:
        """The grouping that partitions the rows held now (a sized spec such as ``"auto"`` resolved from them)."""
        if not self.grouping.sized:
            return self.grouping
        counts = _sum_counts(g.label_counts for g in self.groups.values()) if self.task == CLASSIFICATION else None
        return self.grouping.resolve(self.n_rows, self.task, counts)

    def with_groups(self, groups: dict[GroupId, Group], state: ClusterState | None) -> "GroupedEnsemble":
        """A state holding this partition, with what depends on it re-derived (the one place: fit, every change,
        and load): ``classes`` is the sorted union of the groups' labels; user weights of keys that left are
        dropped."""
        groups = dict(sorted(groups.items(), key=lambda kv: _gid_order(kv[0])))
        classes = self.classes
        if self.task == CLASSIFICATION:
            labels = [g.labels for g in groups.values()]
            classes = np.unique(np.concatenate(labels)) if labels else self.classes
        live_keys = {g.key for g in groups.values()}
        weights = {k: w for k, w in self.weight_overrides.items() if k in live_keys}
        new = self.evolve(groups=groups, state=state, classes=classes, weight_overrides=weights)
        return new.evolve(combine_choice=new.choose_combine())

    def choose_combine(self) -> tuple[str, float, float] | None:
        """``combine="auto"`` on a key grouping: (``"route"`` or ``"average"``, route's score, average's score) on the
        union of the held-out slices of the members that held theirs out (``members.EarlyStopping``), which no
        member trained on. A slice row is routed to the members of its own group's key, or averaged over every
        member, each member weighing its group's sample weights (user weights and output overrides are settings
        and take no part). The score is the AUC for two classes, the log loss for more, the mean squared error for
        regression, weighted by the sample weights; route wins only when strictly better. None when the choice is
        not the data's. Each member's outputs on each slice are computed once (``_slice_outputs``), so a change
        costs the new members on every slice and every member on the changed slices."""
        if self.combine != "auto":
            return None
        scoring = [g for g in self.groups.values() if g.member is not None and g.weight_sum > 0]
        held = [g for g in scoring if g.member.held_out]
        if not held:  # no slice to score on (every group too small to hold one out): the kind's measured default
            return ("average" if self.task == CLASSIFICATION else "route", float("nan"), float("nan"))
        weights = np.array([g.weight_sum for g in scoring])
        total = weights.sum()
        # each member's outputs go into the model's class columns (a class it never saw gets 0 from it)
        columns = [np.searchsorted(self.classes, g.member.classes) if self.task == CLASSIFICATION else [0]
                   for g in scoring]
        routed, averaged, labels, w = [], [], [], []
        for h in held:
            part = self._slice(h)
            own_total = sum(wi for g, wi in zip(scoring, weights) if g.key == h.key)
            r, a = np.zeros((part.num_rows, self.n_outputs)), np.zeros((part.num_rows, self.n_outputs))
            for g, wi, cols in zip(scoring, weights, columns):  # canonical order: the same sums every time
                out = _slice_outputs(self, g.member, h, part).reshape(part.num_rows, -1)
                a[:, cols] += (wi / total) * out
                if g.key == h.key:
                    r[:, cols] += (wi / own_total) * out
            routed.append(r)
            averaged.append(a)
            labels.append(part.column(LABEL).to_numpy(zero_copy_only=False))
            w.append(part.column(WEIGHT).to_numpy())
        y, sw = np.concatenate(labels), np.concatenate(w)
        scores = [_slice_score(self, np.concatenate(o), y, sw) for o in (routed, averaged)]
        better = scores[0] > scores[1] if self._auc_scored(y) else scores[0] < scores[1]
        return ("route" if better else "average", float(scores[0]), float(scores[1]))

    def _slice(self, g: Group) -> pa.Table:
        """The full rows of ``g``'s held-out slice (computed once per group: its rows never change)."""
        if g._slice is None:
            mask = self.learner.stopping.slice_of(g.rows)
            object.__setattr__(g, "_slice", self.rows_of(g, g.rows.filter(pa.array(mask))))  # a cache
        return g._slice

    def _auc_scored(self, y: np.ndarray) -> bool:
        return self.task == CLASSIFICATION and len(self.classes) == 2 and len(np.unique(y)) == 2

    def combine_note(self) -> str:
        """How ``combine="auto"`` chose, for reports: '' when the grouping kind decided."""
        if self.combine_choice is None:
            return ""
        choice, r, a = self.combine_choice
        if r != r:  # NaN: no held-out slice
            return f"{choice} (no held-out slice to choose on)"
        return f"{choice} (held-out score: route {r:.6g}, average {a:.6g})"

    def retrain_pending(self, dry_run: bool = False) -> Outcome:
        """Train the groups waiting for a member (``Change(pending=True)``; nothing pending: this state)."""
        return self.apply("retrain_pending", pending=True, dry_run=dry_run)

    def recover_rows(self, stored_rows: Callable[[pa.Table, str], pa.Table]) -> tuple["GroupedEnsemble", list[str]]:
        """This state with the rows of the groups whose tables a cluster lost (a worker died: ``RowsLostError``)
        put back there from ``stored_rows(skeleton, group name)`` (a store's verified file of them), and the
        names of those groups."""
        back = {g.gid: g for g in self.holder.recover(self.executor, list(self.groups.values()), stored_rows)}
        return self.evolve(groups={gid: back.get(gid, g) for gid, g in self.groups.items()}), [g.name for g in
                                                                                              back.values()]

    def estimate_seconds(self, names: Iterable[str]) -> float | None:
        """About how long training the members of the named groups takes, from recorded fit times.

        A group whose member has a recorded time counts that time; any other (a new group, a store written
        before times were recorded) counts its rows at the median seconds per row of the recorded members.
        Members train ``threads`` at a time. None when no member has a recorded time.
        """
        timed = [g for g in self.groups.values() if g.member is not None and g.member.fit_seconds is not None]
        if not timed:
            return None
        per_row = float(np.median([g.member.fit_seconds / max(g.n_rows, 1) for g in timed]))
        by_name = {g.name: g for g in self.groups.values()}
        costs = []
        for name in names:
            g = by_name.get(name)
            if g is not None and g.member is not None and g.member.fit_seconds is not None:
                costs.append(g.member.fit_seconds)
            else:
                costs.append(per_row * (g.n_rows if g is not None else np.median([t.n_rows for t in timed])))
        if not costs:
            return 0.0
        return max(max(costs), sum(costs) / max(1, min(self.threads, len(costs))))

    # ------------------------------------------------------------------ lookups
    def locate(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, dict[GroupId, tuple[np.ndarray, np.ndarray]]]:
        """Where the rows with ``ids`` (unique) are, by binary search over each group's ids (from the skeleton:
        nothing is fetched from a cluster): the ids sorted (``sorted_ids``), the order that sorts them, and per
        group holding some of them, (their positions in its rows, which of the sorted ids it holds). Raises
        ``UnknownIdError`` if an id is not held."""
        query, order = sorted_ids(ids)
        where, found = {}, 0
        for gid, g in self.groups.items():
            pos, hit = find_ids(g.id_index, query)
            if hit.any():
                where[gid] = (pos[hit], hit)
                found += int(np.count_nonzero(hit))
        if found < len(query):
            raise unknown_ids(ids, (g.rows.column(ID) for g in self.groups.values()))
        return query, order, where

    def groups_of(self, key: Key) -> list[Group]:
        found = [g for g in self.groups.values() if g.key == key]
        if not found:
            known = [key_label(g.key) for g in self.groups.values()][:10]
            raise UnknownGroupError(
                f"no group has key {key!r}; known groups include {known!r}. "
                "Use model.groups_ to list them (the key is a value of the grouping column, a tuple for "
                "several columns, or the cluster/shard number)"
            )
        return found

    def set_weight(self, key: Key, weight: float) -> Outcome:
        """Scale the groups of ``key`` by ``weight`` (``Change(weight=(key, weight))``): a setting, not a deletion."""
        return self.apply("set_group_weight", weight=(key, weight))

    # ------------------------------------------------------------------ output overrides
    def add_override(self, rule_id: str, text: str, mask: Mask, label: Any) -> "GroupedEnsemble":
        """This state with one more output override, applied after the others."""
        ov = Override(rule_id, text, mask, label)
        return self.evolve(overrides=(*self.overrides, ov), version=self.version + 1)

    def remove_override(self, rule_id: str) -> tuple["GroupedEnsemble", Override]:
        """This state without the override ``rule_id`` (the others keep their order), and that override."""
        found = [o for o in self.overrides if o.rule_id == rule_id]
        if not found:
            from .errors import RuleError

            known = [o.rule_id for o in self.overrides]
            raise RuleError(
                f"no rule with id {rule_id!r}; the rules in force are {known!r} (see model.rules)"
                if known
                else f"no rule with id {rule_id!r}: this model has no output overrides"
            )
        kept = tuple(o for o in self.overrides if o.rule_id != rule_id)
        return self.evolve(overrides=kept, version=self.version + 1), found[0]

    def next_rule_id(self) -> str:
        # "r<version the rule was created at>": versions only grow, so an id is never reused, even after removal
        taken = {o.rule_id for o in self.overrides}
        n = self.version + 1
        while f"r{n}" in taken:  # pragma: no cover - only if versions were rewound by hand
            n += 1
        return f"r{n}"

    # ------------------------------------------------------------------ prediction
    def weight(self, g: Group) -> float:
        """A group's un-normalised weight: the sum of its sample weights (its row count when no row was given a
        weight) times the user weight (``set_group_weight``)."""
        return g.weight_sum * self.weight_overrides.get(g.key, 1.0)

    @property
    def n_outputs(self) -> int:
        return 1 if self.task != CLASSIFICATION else len(self.classes)

    def effective_combine(self) -> str:
        """How rows are combined: ``"route"`` (a routable grouping only) or ``"average"``."""
        combine = self.combine
        if combine == "auto":
            combine = self.combine_choice[0] if self.combine_choice is not None else "average"
        return "route" if combine == "route" and self.grouping.routable else "average"

    def scoring_spec(self) -> ScoringSpec:
        """How this ensemble scores a row, as plain data (see ``clusterforget.scoring``); made once per state
        (a state never changes), so what a spec indexes on first use serves every later predict."""
        spec = self.__dict__.get("_scoring_spec")
        if spec is None:
            spec = self.__dict__["_scoring_spec"] = self._make_scoring_spec()
        return spec

    def _make_scoring_spec(self) -> ScoringSpec:
        classify = self.task == CLASSIFICATION
        members = tuple(
            ScoredMember(
                name=g.name,
                key=g.key,
                shard=g.shard,
                n_shards=g.n_shards,
                member=g.member,
                weight=self.weight(g),
                class_index=np.searchsorted(self.classes, g.member.classes) if classify else None,
                weight_sum=g.weight_sum,
            )
            for g in self.groups.values()
            if g.member is not None
        )
        return ScoringSpec(
            task=self.task,
            schema=self.schema,
            classes=self.classes if classify else None,
            combine=self.effective_combine(),
            grouping=self.concrete_grouping(),
            state=self.state,
            members=members,
            overrides=tuple(self.overrides),
            override_classes=tuple(self.override_class(o) for o in self.overrides),
            n_threads=self.threads,
        )

    def predict_raw(self, X: pa.Table) -> np.ndarray:
        """Combined output: (n, n_classes) probabilities, or (n, 1) values."""
        return score(self.scoring_spec(), X)

    def override_class(self, ov: Override) -> int | None:
        """Column of ``classes`` an override outputs (None: not a class of the model now; regression: None)."""
        if self.task != CLASSIFICATION:
            return None
        return override_class(self.classes, ov.label)

    def check_ready(self) -> None:
        if not any(g.member is not None for g in self.groups.values()):
            from .errors import NotFittedError  # here: its scikit-learn base loads only when it is raised

            raise NotFittedError(
                "every member is pending retraining, so nothing can predict; call retrain_pending()"
            )


def _refuse_write(self: GroupedEnsemble, name: str, value: Any) -> None:
    raise FrozenStateError(
        f"an ensemble state is never changed (tried to set {name!r}); make a new one with evolve({name}=...)")


def _refuse_delete(self: GroupedEnsemble, name: str) -> None:
    raise FrozenStateError(f"an ensemble state is never changed (tried to delete {name!r})")


# the dataclass's own frozen errors, replaced by one that says what to do (its __init__ does not go through these)
GroupedEnsemble.__setattr__ = _refuse_write  # type: ignore[method-assign]
GroupedEnsemble.__delattr__ = _refuse_delete  # type: ignore[method-assign]
GroupedEnsemble.FIELDS = tuple(f.name for f in fields(GroupedEnsemble))


@dataclass
class _Edited:
    """The groups' rows after a change's edits of the rows it holds (remove, drop, relabel, reweight), by key."""

    base: dict  # base key -> its tables of rows (each in id order)
    changed: set  # base keys whose rows changed
    derived: dict  # key -> (its rows after a removal, their class counts, their id index): not read again
    sliced: set  # keys whose rows may be zero-copy slices (copied before training)
    found: list  # ids of the rows removed
    removed_hashes: list  # their id hashes
    counts_after: list  # class counts of what stays, per group (a sized grouping on classification only)
    removed: int = 0
    relabeled: int = 0
    reweighted: int = 0
    matched: int = 0


def _edit(before: "GroupedEnsemble", change: Change) -> _Edited:
    """Each group's rows with the change's edits, without touching ``before``'s (new tables)."""
    relabels = [change.relabel] if change.relabel is not None else []
    masks = [before.masks(fn) for fn, _ in relabels]
    drop_keys = set(change.drop_keys)
    e = _Edited(base={}, changed=set(), derived={}, sliced=set(), found=[], removed_hashes=[], counts_after=[])
    remove = change.remove
    query = np.sort(ids_numpy(remove)) if remove is not None and len(remove) else None
    # a sized grouping ("auto") needs the class counts before and after the change: cached per group
    counting = before.grouping.sized and before.task == CLASSIFICATION
    for g in before.groups.values():
        t = g.rows
        if g.key in drop_keys:
            e.found.append(t.column(ID))
            e.removed += t.num_rows
            e.removed_hashes.append(t.column(HASH).to_numpy())
            e.changed.add(g.key)
            e.base.setdefault(g.key, [])
            continue
        if query is not None:
            index = g.id_index
            pos, hit = find_ids(index, query)
            if hit.any():
                gone = np.sort(pos[hit])
                # a few rows: one-row slices (take on a chunked table would concatenate it first)
                lost = pa.concat_tables([t.slice(p, 1) for p in gone.tolist()]) if len(gone) <= MAX_SLICED else (
                    t.take(pa.array(gone)))
                e.found.append(lost.column(ID))
                e.removed_hashes.append(lost.column(HASH).to_numpy())
                t = without_rows(t, gone)
                if len(gone) <= MAX_SLICED:
                    e.sliced.add(g.key)
                # the id index and class counts of what stays, without reading it
                counts = _minus(g.label_counts, label_counts(lost)) if before.task == CLASSIFICATION else None
                e.derived[g.key] = (t, counts, np.delete(index, gone))
                e.removed += len(gone)
                e.changed.add(g.key)
        if g.sliced:
            e.sliced.add(g.key)
        if relabels and t is not g.rows:  # pragma: no cover - no change removes and relabels at once
            raise NotImplementedError("relabel and remove in one change (the masks are of the rows held)")
        for (mask_fn, label), mask in zip(relabels, masks):
            if not t.num_rows:
                break
            t, k, m = before._relabel_rows(t, mask_fn, label, mask=mask.get(g.gid))
            e.matched += m
            if k:
                e.relabeled += k
                e.changed.add(g.key)
        if change.relabel_ids is not None and t.num_rows:
            t, k = _relabel_rows_by_id(t, g.id_index if t is g.rows else ids_numpy(t.column(ID)), *change.relabel_ids)
            if k:
                e.relabeled += k
                e.changed.add(g.key)
        if change.reweight is not None and t.num_rows:
            t, k = _reweight_rows(t, g.id_index if t is g.rows else ids_numpy(t.column(ID)), *change.reweight)
            if k:
                e.reweighted += k
                e.changed.add(g.key)
        e.base.setdefault(g.key, []).append(t)
        if counting:
            e.counts_after.append(g.label_counts if t is g.rows else before._counts_of(t, e.derived.get(g.key)))
    if remove is not None and e.removed < len(remove):
        raise unknown_ids(remove, e.found)
    return e


def _repartition(before: "GroupedEnsemble", e: _Edited, add: pa.Table | None, n_after: int) -> tuple:
    """(concrete grouping, learned partition state, whether it was refit, whether rows are reassigned, whether
    a sized grouping resolved to another one) after the change."""
    # a sized grouping resolves from the row count and class balance; crossing a threshold regroups everything
    grouping, regrouped = before.grouping, False
    if before.grouping.sized:
        counting = before.task == CLASSIFICATION
        if counting and add is not None:
            e.counts_after.append(label_counts(add))
        counts_before = _sum_counts(g.label_counts for g in before.groups.values()) if counting else None
        grouping = before.grouping.resolve(n_after, before.task, _sum_counts(e.counts_after) if counting else None)
        regrouped = bool(before.groups) and grouping.to_dict() != before.grouping.resolve(
            before.n_rows, before.task, counts_before).to_dict()

    # the learned partition: refit only when the change touches the clustering sample
    state, refit, reassign = before.state, False, regrouped
    if before.grouping.learned:
        touched = state is None
        hashes = [h for h in e.removed_hashes if len(h)]
        if add is not None:
            hashes.append(add.column(HASH).to_numpy())
        if not touched and hashes:
            touched = bool((np.concatenate(hashes) <= np.uint64(state.threshold)).any())
        if touched:
            refit = True
            everything = combine([t for ts in e.base.values() for t in ts] + ([add] if add is not None else []))
            h = everything.column(HASH).to_numpy()
            thr = sample_threshold(h, before.grouping.sample_size)
            sample = take_sorted_by_id(everything.filter(pa.array(h <= np.uint64(thr))))
            new_state = before.grouping.fit_state(sample, everything.num_rows, thr, before.schema)
            reassign = not new_state.same_partition(state)
            state = new_state
    return grouping, state, refit, reassign, regrouped


def _place(e: _Edited, add: pa.Table | None, grouping: Grouping, state: Any, reassign: bool) -> int:
    """Put the added rows (every row, when the partition changed) under their base keys in ``e``; how many of
    the rows held moved to another key."""
    moved = 0
    if reassign:
        old_keys = [k for k, ts in e.base.items() for t in ts if t.num_rows]
        existing = [t for ts in e.base.values() for t in ts if t.num_rows]
        owner = np.concatenate(
            [np.full(t.num_rows, i, dtype=np.int64) for i, t in enumerate(existing)]
        ) if existing else np.zeros(0, dtype=np.int64)
        everything = combine(existing + ([add] if add is not None else []))
        codes, keys = grouping.assign(everything, state)
        if len(owner):
            new_key_of_old = [keys[c] for c in codes[: len(owner)]]
            prev = [old_keys[o] for o in owner]
            moved = sum(1 for a, b in zip(new_key_of_old, prev) if a != b)
        e.changed |= set(e.base) | set(keys)
        e.base = split_by_key(everything, codes, keys)
    elif add is not None and add.num_rows:
        codes, keys = grouping.assign(add, state)
        for key, part in split_by_key(add, codes, keys).items():
            e.base.setdefault(key, []).extend(part)
            e.changed.add(key)
    return moved


def _new_groups(before: "GroupedEnsemble", e: _Edited, reassign: bool, retrain: str
                ) -> tuple[dict[GroupId, Group], list[GroupId]]:
    """The groups of the new state (an unchanged group is kept with its member) and, in canonical order, those
    that need a member trained (they have none yet)."""
    old = before.groups
    new_groups = {gid: g for gid, g in old.items() if g.key not in e.changed}
    by_first_id = None
    to_train: list[GroupId] = []
    for key in e.changed:
        parts = [t for t in e.base.get(key, []) if t.num_rows]
        if not parts:
            continue
        # every single part is in id order already (group rows, filtered or split); unions need a sort
        rows = parts[0] if len(parts) == 1 else take_sorted_by_id(combine(parts))
        for shard, n_shards, part in shard_rows(rows, before.max_group_rows):
            gid = (key, shard)
            prev = old.get(gid)
            if reassign and (prev is None or not _same_rows(prev.rows, part)):
                if by_first_id is None:
                    by_first_id = {g.rows.column(ID)[0].as_py(): g for g in old.values() if g.n_rows}
                prev = by_first_id.get(part.column(ID)[0].as_py())
            if prev is not None and prev.n_shards == n_shards and _same_rows(prev.rows, part):
                new_groups[gid] = prev if prev.gid == gid else replace(prev, key=key, shard=shard)
            else:
                derived = e.derived.get(key)
                counts = before._counts_of(part, derived)
                ids = derived[2] if derived is not None and derived[0] is part else None
                is_sliced = key in e.sliced
                if retrain == "now" or part.column(ID).num_chunks > MAX_CHUNKS:
                    part, is_sliced = (own_buffers(part) if is_sliced else part.combine_chunks()), False
                new_groups[gid] = Group(key, shard, n_shards, part, None, before._distinct(counts), ids, counts,
                                        is_sliced)
                to_train.append(gid)
    to_train.sort(key=_gid_order)
    return new_groups, to_train


def _check_weight(weight: Any) -> float:
    # bool is an int to Python, and a weight near 1e308 overflows row count * weight to inf (NaN scores)
    if (
        isinstance(weight, (bool, np.bool_))
        or not isinstance(weight, (int, float, np.floating, np.integer))
        or not math.isfinite(weight)
        or not 0 <= weight <= MAX_GROUP_WEIGHT
    ):
        raise InputError(
            f"weight must be a finite number >= 0, got {weight!r}; pass a number (not a bool) from 0 to "
            f"{MAX_GROUP_WEIGHT:g} (1 restores the group)"
        )
    return float(weight)


def _plan_in_place(before: "GroupedEnsemble", change: Change, t0: float) -> Plan:
    """A change that keeps every row in its group: train the pending groups, or set a key's user weight."""
    groups, to_train, overrides, note = dict(before.groups), [], None, ""
    if change.pending:
        for gid, g in before.groups.items():
            if g.member is None:
                # trained on rows in their own buffers (a deferred forget left slices); ``locate`` says where
                groups[gid] = replace(g, rows=own_buffers(g.rows), sliced=False) if g.sliced else g
                to_train.append(gid)
        note = "" if to_train else "nothing is pending"
    if change.weight is not None:
        key, weight = change.weight
        before.groups_of(key)
        weight = _check_weight(weight)
        overrides = {k: w for k, w in before.weight_overrides.items() if k != key}
        if weight != 1.0:
            overrides[key] = weight
        note = (f"group {key_label(key)!r} weight set to {weight}; this is NOT a deletion: its rows and member are "
                "kept, and set_group_weight(key, 1) restores it. Use forget_group to delete")
    return Plan(change=change, before=before, groups=groups, to_train=tuple(sorted(to_train, key=_gid_order)),
                grouping=before.grouping, state=before.state, add=None, put=None, reassign=False, refit=False,
                regrouped=False, moved=0, removed=0, relabeled=0, reweighted=0, matched=0, forgotten=None,
                started=t0, weight_overrides=overrides, note=note)


def plan(before: "GroupedEnsemble", change: Change) -> Plan:
    """What ``change`` would do to the state ``before``, worked out without training anything and without
    touching ``before`` (the dry run is this plan's report); ``execute`` carries it out. Raises, with nothing
    changed, if the change is not possible (unknown ids, no row left, every weight zero, an unknown key)."""
    t0 = time.perf_counter()
    if change.pending or change.weight is not None:
        return _plan_in_place(before, change, t0)
    # put: full rows given here, sent where the rows are when the plan is executed
    add, put = before.holder.incoming(before, change.add, change.add_sources)
    e = _edit(before, change)
    n_after = sum(t.num_rows for ts in e.base.values() for t in ts) + (add.num_rows if add is not None else 0)
    if n_after == 0:
        raise EmptyModelError(
            "this would remove every training row; nothing was changed. To forget everything, delete the model "
            "(and its store) instead"
        )
    grouping, state, refit, reassign, regrouped = _repartition(before, e, add, n_after)
    moved = _place(e, add, grouping, state, reassign)
    groups, to_train = _new_groups(before, e, reassign, change.retrain)
    if not any(g.weight_sum > 0 for g in groups.values()):
        raise InputError(
            "every remaining row would have sample weight zero (0), so nothing could be learned; nothing was changed. "
            "Give some rows a weight > 0"
        )
    forgotten = pa.chunked_array([c for f in e.found for c in f.chunks], type=before.id_type) if e.found else None
    return Plan(change=change, before=before, groups=groups, to_train=tuple(to_train), grouping=grouping,
                state=state, add=add, put=put, reassign=reassign, refit=refit, regrouped=regrouped, moved=moved,
                removed=e.removed, relabeled=e.relabeled, reweighted=e.reweighted, matched=e.matched,
                forgotten=forgotten, started=t0)


def execute(plan: Plan, executor: Executor) -> Outcome:
    """Carry out ``plan``: place the new groups' rows (on a cluster), train the members it names through
    ``executor``, and return the new state with the report. The state the plan was made from is left as it was."""
    before, change, groups = plan.before, plan.change, dict(plan.groups)
    if change.pending and not plan.to_train:  # nothing waits for a member: this state, no version
        report = plan.report(before, groups, [])
        report.note = "nothing was pending"
        return Outcome(before, report)
    if plan.weight_overrides is not None:  # a setting: the groups and what they derive stay
        result = before.evolve(weight_overrides=plan.weight_overrides, version=before.version + 1)
        return Outcome(result, plan.report(result, groups, [g.name for g in groups.values() if g.member is None]))
    groups.update(before.holder.locate(executor, plan, groups))
    if change.retrain == "now" and plan.to_train:
        trained = before.holder.train(executor, before, [groups[gid] for gid in plan.to_train])
        groups.update((g.gid, g) for g in trained)
    max_id = before.max_id
    add = plan.add
    if add is not None and add.num_rows and pa.types.is_integer(add.column(ID).type):
        top = pc.max(add.column(ID)).as_py()
        max_id = top if max_id is None else max(max_id, top)
    result = before.with_groups(groups, plan.state).evolve(max_id=max_id, version=before.version + 1)
    pending = [g.name for g in result.groups.values() if g.member is None]
    return plan.outcome(result, plan.report(result, groups, pending))
