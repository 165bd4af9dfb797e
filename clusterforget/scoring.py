"""The one definition of predict: routing, averaging, weights, class mapping and output overrides.

``GroupedEnsemble.scoring_spec()`` turns the fitted ensemble into a ``ScoringSpec``: a plain, read-only
description of how a row is scored (which members, with which weights, how a row finds its group, which
global class each member output feeds, which overrides apply). ``score(spec, X)`` is ``predict``; the
exports (ONNX graph, native bundle, compiled scorer) read the same spec, so they cannot drift from it.

How a row is scored
-------------------
* ``combine="average"``: the weighted average of every member, weights normalised to sum to 1 and summed
  in spec order (canonical group order).
* ``combine="route"``: a row goes to the members of its group (all size-bound shards of its key, weights
  normalised among them); a row whose group is unknown (an unseen key, a missing value) falls back to the
  average of every member.
* A member's outputs are its own classes' probabilities; they are added into the global class columns
  ``class_index`` (a member that never saw a class contributes 0 to it).
* Output overrides apply last, in order, the first matching one winning: a matched row gets probability 1
  for the override's class (or the override's value for regression). An override whose class left the
  model is inactive.
* Weights are the group's row count times a user weight (``set_group_weight``); members with weight 0 and
  members pending retraining do not score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import CATEGORICAL, Schema, row_table
from .grouping import Grouping, Key
from .members import CLASSIFICATION, Member

Mask = Callable[[pa.Table], np.ndarray]


@dataclass
class Override:
    """A predict-time output override: rows matching ``mask`` get ``label`` (first matching override wins)."""

    rule_id: str
    text: str
    mask: Mask
    label: Any


@dataclass(frozen=True)
class ScoredMember:
    """One member as scoring sees it."""

    name: str  # the group's readable name
    key: Key  # the group's base key (route target)
    shard: int
    n_shards: int
    member: Member
    weight: float  # un-normalised: its rows' sample weight sum x user weight (0: in the average's sum, never scored)
    class_index: np.ndarray | None  # global class column of each member output (classification)
    # the sum of its rows' sample weights (None: read from a bundle written before it was recorded)
    weight_sum: float | None = None

    @property
    def served(self) -> float:
        """How much of the training data its group is: its rows' sample weight sum (their count, from a bundle
        written before weight sums were recorded)."""
        return self.member.n_rows if self.weight_sum is None else self.weight_sum


@dataclass(frozen=True)
class ScoringSpec:
    """Everything ``predict`` reads. ``members`` are in canonical group order (the order outputs are summed)."""

    task: str
    schema: Schema
    classes: np.ndarray | None
    combine: str  # effective: "route" only for a routable grouping
    grouping: Grouping
    state: Any
    members: tuple[ScoredMember, ...]
    overrides: tuple[Override, ...]
    override_classes: tuple[int | None, ...]  # global class column per override (None: inactive / regression)
    n_threads: int = 1
    # what is derived from the members once and read by every batch (``vocabularies``); a spec copied with other
    # members shares it, which is safe: it answers only for the members it was built from
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_outputs(self) -> int:
        return 1 if self.task != CLASSIFICATION else len(self.classes)

    def routes(self) -> dict[Key, list[int]]:
        """Base key -> positions in ``members`` of that key's members (route mode)."""
        by_key: dict[Key, list[int]] = {}
        for i, m in enumerate(self.members):
            if m.weight > 0:
                by_key.setdefault(m.key, []).append(i)
        return by_key

    def routing(self) -> "Routing":
        """``routes()`` with each target's normalized weights, made once per spec (per members tuple)."""
        got = self.derived.get("routing")
        if got is None or got.members is not self.members:  # a copy of the spec with other members
            got = self.derived["routing"] = Routing(self)
        return got

    def vocabularies(self) -> "Vocabularies":
        """The members' category encodings, indexed once for this spec (see ``Vocabularies``)."""
        got = self.derived.get("vocabularies")
        if got is None or not got.covers_all(self.members):
            got = self.derived["vocabularies"] = Vocabularies(self.schema, [sm.member for sm in self.members])
        return got

    def normalized_weights(self, positions: list[int] | None = None) -> np.ndarray:
        """Weights of ``positions`` (default: every member) divided by their sum, as ``score`` uses them."""
        pos = range(len(self.members)) if positions is None else positions
        w = np.array([self.members[i].weight for i in pos], dtype=np.float64)
        return w / w.sum()


def override_class(classes: np.ndarray | None, label: Any) -> int | None:
    """Column of ``classes`` an override outputs (None: not a class of the model now)."""
    if classes is None:
        return None
    for i, c in enumerate(classes.tolist()):
        if c == label and isinstance(c, str) == isinstance(label, str):
            return i
    return None


# what a member contributes to a combined output: (its values for these rows, the columns of the combined
# output's second axis they add into, None for all of them)
MemberOutput = Callable[[ScoredMember, np.ndarray], tuple[np.ndarray, "np.ndarray | list[int] | None"]]


class Routing:
    """What routing reads of a spec, derived once: the known keys and, per key, its members and their weights."""

    def __init__(self, spec: ScoringSpec):
        self.members = spec.members
        by_key = spec.routes()
        self.keys = list(by_key)
        self.known = {k: i for i, k in enumerate(self.keys)}
        self.everyone = list(range(len(spec.members)))
        ready = any(m.weight > 0 for m in spec.members)
        # target 0: rows of no known key (every member); target g + 1: the members of key g
        self.targets = [(self.everyone, spec.normalized_weights(self.everyone).tolist() if ready else [])]
        self.targets += [(pos, spec.normalized_weights(pos).tolist()) for pos in by_key.values()]


class Vocabularies:
    """Every member's category encoding, against one union of their vocabularies per categorical column.

    ``encode`` codes a column by looking each value up in the member's vocabulary (``pc.index_in``): one hash
    table per member, column and batch. Here the lookups are made once, with the spec: each column's distinct
    values over every member (``union``) and, per vocabulary, a table from a union position to that member's
    code (its first position in the member's vocabulary, as ``index_in`` gives; NaN where the member never
    saw the value), whose last slot (NaN) takes nulls and values no member saw. A batch codes each column
    against the union once (``positions``), and a member's column is one numpy take of its table.
    """

    def __init__(self, schema: Schema, members: list[Member]):
        self.names = [n for n, k in zip(schema.names, schema.kinds) if k == CATEGORICAL]
        distinct = {m.vocab_key: m.vocab for m in members if getattr(m, "transform", None) is None}
        self.keys = frozenset(distinct)
        self.union = [pc.unique(pa.array([v for vocab in distinct.values() for v in vocab[name]], pa.string()))
                      for name in self.names]
        self._vocabs = distinct
        self._tables: dict[str, list[np.ndarray]] = {}
        self._stacked: tuple[dict[str, int], list[np.ndarray]] | None = None

    def extended(self, schema: Schema, members: list[Member]) -> "Vocabularies | None":
        """An index of ``members`` from this one: itself when it holds them all; when the vocabularies it lacks
        hold only values of its union (a forget only removes values), one with the same union and tables that
        adds theirs; else None (build one anew)."""
        current = {m.vocab_key: m.vocab for m in members if getattr(m, "transform", None) is None}
        new = {key: vocab for key, vocab in current.items() if key not in self.keys}
        if not new and len(current) == len(self.keys):
            return self
        if [n for n, k in zip(schema.names, schema.kinds) if k == CATEGORICAL] != self.names:
            return None
        for vocab in new.values():
            for name, union in zip(self.names, self.union):
                if vocab[name] and pc.any(pc.is_null(pc.index_in(pa.array(vocab[name], pa.string()),
                                                                  value_set=union))).as_py():
                    return None
        out = object.__new__(Vocabularies)
        out.names, out.union = self.names, self.union
        # only the vocabularies of ``members``: swap after swap, the index does not grow with those that left
        out._vocabs = current
        out.keys = frozenset(current)
        out._tables = {key: t for key, t in self._tables.items() if key in current}
        out._stacked = None
        return out

    def covers(self, member: Member) -> bool:
        return member.vocab_key in self.keys

    def covers_all(self, members: tuple[ScoredMember, ...]) -> bool:
        return all(getattr(sm.member, "transform", None) is not None or sm.member.vocab_key in self.keys
                   for sm in members)

    def positions(self, j: int, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Union positions of the values of the ``j``-th categorical column (nulls and values no member saw:
        the tables' last slot)."""
        at = pc.index_in(col, value_set=self.union[j]).to_numpy(zero_copy_only=False)
        return (np.where(np.isnan(at), len(self.union[j]), at) if at.dtype.kind == "f" else at).astype(np.intp)

    def stacked(self) -> tuple[dict[str, int], list[np.ndarray]]:
        """Every vocabulary's tables as one matrix per column (a row per vocabulary), and each vocabulary's row."""
        got = self._stacked
        if got is None:
            rows = {key: i for i, key in enumerate(self._vocabs)}
            tables = [self.tables(Member(None, self._vocabs[key], 0)) for key in rows]
            got = self._stacked = (rows, [np.stack([t[j] for t in tables]) if tables else np.empty((0, 1))
                                         for j in range(len(self.names))])
        return got

    def tables(self, member: Member) -> list[np.ndarray]:
        """Per categorical column: union position -> the member's code (float64; NaN: not in its vocabulary)."""
        got = self._tables.get(member.vocab_key)
        if got is None:
            vocab = self._vocabs[member.vocab_key]
            got = self._tables[member.vocab_key] = [_codes_of(union, vocab[name])
                                                    for name, union in zip(self.names, self.union)]
        return got


def _codes_of(values: pa.Array, vocab: list[str]) -> np.ndarray:
    """Each of ``values`` coded as ``encode`` codes it against ``vocab`` (NaN: not in it), then a NaN slot."""
    code = pc.index_in(values, value_set=pa.array(vocab, pa.string()))
    return np.append(code.to_numpy(zero_copy_only=False).astype(np.float64), np.nan)


class Encoded:
    """The features of a batch, converted once for every member that scores it.

    ``encode(X, schema, vocab)`` per member re-encodes every categorical column against that member's own
    vocabulary (and, when routing, first copies the member's rows out of ``X``). Here the batch is converted
    once: numbers to float64, each categorical column to codes of the spec's union of vocabularies
    (``Vocabularies``); a member's matrix is then its rows of that base, with each categorical column mapped
    through the member's table from union codes to its own codes (unseen values and nulls to NaN). A member
    the index does not hold (or a batch without one) maps through codes of the batch's own distinct values
    instead. The numbers are the ones ``encode`` gives.
    """

    def __init__(self, X: pa.Table, schema: Schema, vocabularies: Vocabularies | None = None):
        self.schema = schema
        self.vocabularies = vocabularies
        self.table = X  # what a member behind a preprocessor transforms itself
        self.n_rows = X.num_rows
        self.categorical = [j for j, kind in enumerate(schema.kinds) if kind == CATEGORICAL]
        self.numeric = [j for j, kind in enumerate(schema.kinds) if kind != CATEGORICAL]
        self._base: np.ndarray | None = None
        self._union: list[np.ndarray] | None = None  # per categorical column: union positions of its rows
        self._distinct: list[tuple[pa.Array, np.ndarray]] | None = None  # (distinct values, their codes)
        self._tables: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._matrices: dict[str, np.ndarray] = {}

    @property
    def base(self) -> np.ndarray:
        """The batch as float64, numbers as they are (nulls: NaN); categorical columns are filled per member."""
        if self._base is None:
            base = np.empty((self.n_rows, len(self.schema.names)), dtype=np.float64)
            for j in self.numeric:
                base[:, j] = self._numbers(j)
            self._base = base
        return self._base

    def _numbers(self, j: int) -> np.ndarray:
        return self.table.column(self.schema.names[j]).to_numpy(zero_copy_only=False)  # nulls come out as NaN

    def _lookup(self, member: Member) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per categorical column (table, codes): ``table[codes]`` is the column as ``encode`` codes it."""
        key = member.vocab_key
        if key not in self._tables:
            names = [self.schema.names[j] for j in self.categorical]
            index = self.vocabularies
            if index is not None and index.covers(member):
                if self._union is None:
                    self._union = [index.positions(k, self.table.column(n)) for k, n in enumerate(names)]
                self._tables[key] = list(zip(index.tables(member), self._union))
            else:  # a member the index does not hold: the batch's distinct values looked up in its vocabulary
                if self._distinct is None:
                    self._distinct = []
                    for name in names:
                        col = self.table.column(name)
                        values = pc.unique(col).drop_null()
                        codes = pc.index_in(col, value_set=values).to_numpy(zero_copy_only=False)
                        # null -> the last slot of every lookup table, which holds NaN
                        codes = np.where(np.isnan(codes), len(values), codes) if codes.dtype.kind == "f" else codes
                        self._distinct.append((values, codes.astype(np.intp)))
                self._tables[key] = [(_codes_of(values, member.vocab[name]), codes)
                                     for name, (values, codes) in zip(names, self._distinct)]
        return self._tables[key]

    def routed(self, rows: np.ndarray, vocab_rows: np.ndarray) -> np.ndarray:
        """The matrix of ``rows``, each row coded by the vocabulary at ``vocab_rows`` in the index's ``stacked``:
        row ``i`` is ``matrix(member, rows)``'s row for the member of that vocabulary, so the rows of a routed
        batch are coded in one take per column and a member's rows are a slice of it."""
        index = self.vocabularies
        if self._union is None:
            self._union = [index.positions(k, self.table.column(self.schema.names[j]))
                           for k, j in enumerate(self.categorical)]
        if self._base is not None:
            out = self._base[rows]
        else:  # the rows' numbers straight from the columns: no whole-batch copy first
            out = np.empty((len(rows), len(self.schema.names)), dtype=np.float64)
            for j in self.numeric:
                out[:, j] = np.take(self._numbers(j), rows)
        for j, stacked, codes in zip(self.categorical, index.stacked()[1], self._union):
            out[:, j] = np.take(stacked.ravel(), vocab_rows * stacked.shape[1] + np.take(codes, rows))
        return out

    def matrix(self, member: Member, rows: np.ndarray | None = None) -> np.ndarray:
        """``encode(X, schema, member.vocab)``, or its ``rows``; whole-batch matrices are shared by vocabulary."""
        if rows is None and member.vocab_key in self._matrices:
            return self._matrices[member.vocab_key]
        transform = getattr(member, "transform", None)
        if transform is not None:  # its group's own fitted preprocessor, on the canonical rows
            out = transform(self.table if rows is None else self.table.take(rows), self.schema)
            if rows is None:
                self._matrices[member.vocab_key] = out
            return out
        out = self.base.copy() if rows is None else self.base[rows]
        for j, (table, codes) in zip(self.categorical, self._lookup(member)):
            out[:, j] = table[codes if rows is None else codes[rows]]
        if rows is None:
            self._matrices[member.vocab_key] = out
        return out


def _average(spec: ScoringSpec, enc: Encoded, positions: list[int], rows: np.ndarray | None,
             output: MemberOutput, shape: tuple[int, ...]) -> np.ndarray:
    """Weighted average of ``output`` of the members at ``positions`` over the batch (or its ``rows``)."""
    n = enc.n_rows if rows is None else len(rows)
    return _weighted(spec, positions, spec.normalized_weights(positions).tolist(),
                     lambda member: enc.matrix(member, rows), output, (n, *shape))


def _weighted(spec: ScoringSpec, positions: list[int], weights: list[float], matrix: Callable[[Member], np.ndarray],
              output: MemberOutput, shape: tuple[int, ...]) -> np.ndarray:
    """The sum over ``positions`` of weight times ``output`` on the member's ``matrix``, in that order."""
    out = np.zeros(shape)
    by_vocab: dict[str, np.ndarray] = {}
    for i, wi in zip(positions, weights):
        if wi == 0.0:
            continue
        sm = spec.members[i]
        key = sm.member.vocab_key
        if key not in by_vocab:  # members with equal vocabularies share one matrix
            by_vocab[key] = matrix(sm.member)
        _add(out, wi, *output(sm, by_vocab[key]))
    return out


def _add(out: np.ndarray, w: float, values: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """``out`` plus ``w`` times a member's ``values`` in its ``columns`` (None: every column), in place."""
    if columns is None:
        out += w * values
    else:
        out[:, columns] += w * values
    return out


def _single(spec: ScoringSpec, i: int, w: float, M: np.ndarray, output: MemberOutput,
            shape: tuple[int, ...]) -> np.ndarray:
    """``_weighted`` of the one member at ``i``. When its output fills every column in order, ``w * values + 0.0``
    is the sum ``_weighted`` makes (``0.0 + w * values``: the same additions, so the same bits, -0.0 included)
    without the zeros it adds into and the column scatter."""
    if w == 0.0:  # as ``_weighted``: a member of weight 0 is not scored
        return np.zeros(shape)
    values, columns = output(spec.members[i], M)
    full = columns is None or (len(columns) == shape[-1] and np.array_equal(columns, np.arange(shape[-1])))
    if full and values.shape == shape:
        return w * values + 0.0
    return _add(np.zeros(shape), w, values, columns)


class RowScorer:
    """``score`` for one row given as canonical values (``data.one_row``), without Arrow tables.

    The same members, weights (normalized as ``score`` normalizes them), matrices (the numbers ``Encoded``
    gives) and sums in the same order, so the outputs are ``score``'s bit for bit; what it skips is the
    per-call setup that dominates a one-row batch (building tables, re-deriving the routes and weights).
    Routing goes through ``Grouping.route_one``; override rules read a one-row table.
    """

    def __init__(self, spec: ScoringSpec):
        self.spec = spec
        self.ready = any(m.weight > 0 for m in spec.members)  # otherwise ``score`` raises its error
        everyone = list(range(len(spec.members)))
        by_key = spec.routes()
        self.known = {k: i for i, k in enumerate(by_key)}
        self.by_key = list(by_key.values())
        self.targets: dict[int, tuple[list[int], list[float]]] = {}  # filled as rows reach them
        self.everyone = (everyone, spec.normalized_weights(everyone).tolist() if self.ready else [])
        self.output = _probabilities(spec)
        self.categorical_at = [j for j, k in enumerate(spec.schema.kinds) if k == CATEGORICAL]
        self.categorical = [spec.schema.names[j] for j in self.categorical_at]
        self._positions: dict[str, list[dict[str, int]]] = {}
        self.shape = (1, spec.n_outputs)

    def _matrix(self, row: list[Any], member: Member) -> np.ndarray:
        transform = getattr(member, "transform", None)
        if transform is not None:  # its group's own fitted preprocessor reads the row as a table
            return transform(row_table(row, self.spec.schema), self.spec.schema)
        positions = self._positions.get(member.vocab_key)
        if positions is None:  # category value -> code, as ``encode`` codes it (one dict per column)
            positions = self._positions[member.vocab_key] = [
                {v: i for i, v in enumerate(member.vocab[name])} for name in self.categorical]
        values = list(row)
        for j, codes in zip(self.categorical_at, positions):
            values[j] = codes.get(row[j], np.nan)
        return np.array([values], dtype=np.float64)

    def score(self, row: list[Any]) -> np.ndarray:
        spec = self.spec
        if spec.combine == "route":
            at = spec.grouping.route_one(row, spec.schema, spec.state, self.known)
            if at < 0:
                positions, weights = self.everyone
            else:
                target = self.targets.get(at)
                if target is None:
                    pos = self.by_key[at]
                    target = self.targets[at] = (pos, spec.normalized_weights(pos).tolist())
                positions, weights = target
        else:
            positions, weights = self.everyone
        out = _weighted(spec, positions, weights, lambda member: self._matrix(row, member), self.output, self.shape)
        if spec.overrides:
            out = apply_overrides(spec, row_table(row, spec.schema), out)
        return out


def combine(spec: ScoringSpec, X: pa.Table, output: MemberOutput, shape: tuple[int, ...]) -> np.ndarray:
    """Each row's weighted average of ``output`` over the members that score it, before overrides.

    The one place routing and averaging happen: ``score`` combines probabilities with it, ``explain`` raw
    scores and contributions, so every output of a row comes from the same members with the same weights.
    Returns an array of shape ``(X.num_rows, *shape)``.
    """
    if not any(m.weight > 0 for m in spec.members):
        from .errors import NotFittedError  # here: the errors' scikit-learn bases load only when one is raised

        raise NotFittedError(
            "no member can predict: every member is pending retraining or has weight 0; "
            "call retrain_pending() or restore a weight with set_group_weight(key, 1)"
        )
    enc = Encoded(X, spec.schema, spec.vocabularies())
    everyone = list(range(len(spec.members)))
    if spec.combine != "route":
        return _average(spec, enc, everyone, None, output, shape)
    routing = spec.routing()
    where = spec.grouping.route(X, spec.state, routing.known)
    out = np.empty((X.num_rows, *shape))
    # rows by target in one sort (stable: each target's rows stay in input order); target 0: unknown groups
    order = np.argsort(where, kind="stable")
    counts = np.bincount(where + 1, minlength=len(routing.targets))
    ends = np.cumsum(counts)
    starts = ends - counts
    # targets of one member the vocabulary index holds: their rows coded in one matrix, a slice per member
    index = enc.vocabularies
    vocab_row = np.full(len(routing.targets), -1, dtype=np.intp)
    if index is not None:
        at = index.stacked()[0]
        for g, (pos, _) in enumerate(routing.targets):
            if g and counts[g] and len(pos) == 1:
                vocab_row[g] = at.get(spec.members[pos[0]].member.vocab_key, -1)
    one = vocab_row >= 0
    if one.any():
        target = where[order] + 1
        rows = order[one[target]]
        M = enc.routed(rows, vocab_row[target[one[target]]])
        offsets = np.cumsum(np.where(one, counts, 0))
    for g, (positions, weights) in enumerate(routing.targets):
        if not counts[g]:
            continue
        n = int(counts[g])
        if one[g]:
            block = M[offsets[g] - n:offsets[g]]
            out[rows[offsets[g] - n:offsets[g]]] = _single(spec, positions[0], weights[0], block, output,
                                                            (n, *shape))
        else:
            rows_g = order[starts[g]:ends[g]]
            out[rows_g] = _weighted(spec, positions, weights, lambda member: enc.matrix(member, rows_g), output,
                                    (n, *shape))
    return out


def _probabilities(spec: ScoringSpec) -> MemberOutput:
    def output(sm: ScoredMember, M: np.ndarray):
        p = sm.member.predict_encoded(M, spec.schema, spec.n_threads)
        if spec.task != CLASSIFICATION:
            return p.reshape(-1, 1), None
        return p, sm.class_index  # a member that never saw a class contributes 0 to it

    return output


def member_output(spec: ScoringSpec, enc: Encoded, i: int) -> np.ndarray:
    """(n, n_outputs) output of member ``i`` alone over the batch ``enc`` (a member of weight > 0): what ``score``
    gives for a spec of that member only, without overrides, from the batch encoded once for every member."""
    return _average(spec, enc, [i], None, _probabilities(spec), (spec.n_outputs,))


def score(spec: ScoringSpec, X: pa.Table) -> np.ndarray:
    """Combined output for canonical input ``X``: (n, n_classes) probabilities, or (n, 1) values."""
    out = combine(spec, X, _probabilities(spec), (spec.n_outputs,))
    return apply_overrides(spec, X, out)


def override_rows(spec: ScoringSpec, X: pa.Table) -> list[tuple[np.ndarray, Override, int | None]]:
    """The rows each active override takes (the first matching override wins), with its class column."""
    taken = np.zeros(X.num_rows, dtype=bool)
    out = []
    for ov, pos in zip(spec.overrides, spec.override_classes):
        if spec.task == CLASSIFICATION and pos is None:
            continue  # its class left the model (every row of it was forgotten): inactive until it returns
        hit = np.asarray(ov.mask(X), dtype=bool) & ~taken
        if not hit.any():
            continue
        taken |= hit
        out.append((hit, ov, pos))
    return out


def apply_overrides(spec: ScoringSpec, X: pa.Table, out: np.ndarray) -> np.ndarray:
    if not spec.overrides:
        return out
    for hit, ov, pos in override_rows(spec, X):
        if spec.task != CLASSIFICATION:
            out[hit] = float(ov.label)
        else:
            out[hit] = 0.0
            out[np.flatnonzero(hit), pos] = 1.0
    return out


__all__ = ["Override", "ScoredMember", "ScoringSpec", "MemberOutput", "Vocabularies", "Encoded", "RowScorer", "combine", "member_output",
           "score", "apply_overrides",
           "override_rows", "override_class"]
