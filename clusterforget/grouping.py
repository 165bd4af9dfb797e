"""How training rows are partitioned into groups: by key columns, by learned clusters, or by hash shards.

A grouping is a small spec (its parameters only). What it learns from data lives in a separate state
object (``ClusterState`` for learned clusters; key and hash partitions learn nothing), so the ensemble
can tell exactly when forgetting rows changes the partition itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import HASH, NUMERIC, Schema, hash_bucket, row_table
from .errors import InputError, UnknownGroupError

Key = tuple  # a base group key: column values, or (cluster,), or (shard,)

_MAX_HASH = (1 << 64) - 1
_BLOCK = 16_384  # rows per block in cluster assignment


def normalize_value(v: Any) -> Any:
    """Key values as plain Python: integral floats as int, NaN, pandas.NA and NaT as None."""
    if type(v).__name__ in ("NAType", "NaTType"):  # pandas' missing values refuse comparison (== is NA)
        return None
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer() and abs(v) <= 2**53:  # larger floats stay floats: Arrow refuses them back as float64
            return int(v)
    return v


def key_sort(key: Sequence[Any]) -> tuple:
    """A total order over keys of mixed value types: missing first, then numbers, then strings."""
    out = []
    for v in key:
        if v is None:
            out.append((0, 0))
        elif isinstance(v, (bool, int, float)):
            out.append((1, float(v), repr(v)))
        else:
            out.append((2, str(v)))
    return tuple(out)


def key_label(key: Sequence[Any]) -> str:
    return ", ".join("null" if v is None else str(v) for v in key)


@dataclass(frozen=True)
class ClusterState:
    """Everything learned clusters fit on data: the sample bound, scaling, and quantized centroids."""

    features: tuple[str, ...]
    shift: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray
    threshold: int  # rows whose id hash is <= threshold form the clustering sample
    sample_rows: int

    def same_partition(self, other: "ClusterState | None") -> bool:
        return (
            other is not None
            and self.features == other.features
            and np.array_equal(self.shift, other.shift)
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.centroids, other.centroids)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
            "centroids": self.centroids.tolist(),
            "threshold": str(self.threshold),
            "sample_rows": self.sample_rows,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClusterState":
        k = len(d["centroids"])
        cents = np.asarray(d["centroids"], dtype=np.float64).reshape(k, len(d["features"]))
        return cls(
            tuple(d["features"]),
            np.asarray(d["shift"], dtype=np.float64),
            np.asarray(d["scale"], dtype=np.float64),
            cents,
            int(d["threshold"]),
            int(d["sample_rows"]),
        )


class Grouping:
    """Base of the grouping specs."""

    kind: str = ""
    routable: bool = True  # whether a row's group can be found from its features at predict time
    learned: bool = False  # whether the partition itself is fitted on data
    sized: bool = False  # whether the partition's shape depends on the row count and class balance (``resolve``)

    def resolve(self, n_rows: int, task: str, class_counts: Sequence[int] | None) -> "Grouping":
        """The concrete grouping for these rows (``sized`` groupings only; the others are concrete already).

        ``class_counts``: rows per class (classification), None for regression.
        """
        return self

    def validate(self, schema: Schema) -> None:
        """Raise ``InputError`` if the grouping cannot work on these columns."""

    def reads(self, schema: Schema) -> tuple[str, ...]:
        """The feature columns ``assign`` and ``fit_state`` read (besides the row id and its hash)."""
        return ()

    def fit_state(self, sample: pa.Table, n_rows: int, threshold: int, schema: Schema) -> Any:
        """Fit the partition on the clustering sample (learned groupings only). A spec stores nothing it
        learns: everything goes into the returned state, so one spec can serve many models."""
        return None

    def assign(self, rows: pa.Table, state: Any) -> tuple[np.ndarray, list[Key]]:
        """Per-row code into a list of base keys."""
        raise NotImplementedError

    def route(self, X: pa.Table, state: Any, known: dict[Key, int]) -> np.ndarray:
        """Per-row index into ``known`` (-1 where the row's group is unknown)."""
        return np.full(X.num_rows, -1, dtype=np.int64)

    def route_one(self, row: Sequence[Any], schema: Schema, state: Any, known: dict[Key, int]) -> int:
        """``route`` of one row of canonical values (``data.one_row``); groupings override it with the same
        answer computed without building a table."""
        return int(self.route(row_table(row, schema), state, known)[0])

    def normalize_key(self, key: Any) -> Key:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class KeyGroups(Grouping):
    """One group per distinct value (combination) of the key columns."""

    kind = "key"

    def __init__(self, columns: str | Sequence[str]):
        cols = (columns,) if isinstance(columns, str) else tuple(columns)
        if not cols or not all(isinstance(c, str) for c in cols):
            raise InputError(f"grouping columns must be column names, got {columns!r}")
        self.columns = cols

    def __repr__(self) -> str:
        return f"KeyGroups({list(self.columns)!r})"

    def reads(self, schema: Schema) -> tuple[str, ...]:
        return self.columns

    def validate(self, schema: Schema) -> None:
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise InputError(
                f"grouping column(s) {missing!r} not found in X; available columns: {list(schema.names)!r}"
            )

    def assign(self, rows: pa.Table, state: Any) -> tuple[np.ndarray, list[Key]]:
        # one code column per key column, made unique as rows of a matrix: a mixed-radix code over many
        # columns would overflow int64 (19 columns of 1000 values did, silently grouping unrelated rows)
        codes_by_col, dictionaries = [], []
        for col in self.columns:
            enc = pc.dictionary_encode(rows.column(col).combine_chunks(), null_encoding="encode")
            codes_by_col.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
            dictionaries.append([normalize_value(v) for v in enc.dictionary.to_pylist()])
        uniq, codes = np.unique(np.stack(codes_by_col, axis=1), axis=0, return_inverse=True)
        keys = [tuple(d[i] for d, i in zip(dictionaries, row)) for row in uniq.tolist()]
        # dictionary entries that normalize to one key (e.g. -0.0 and 0.0) must make one group
        first: dict[Key, int] = {}
        remap = np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)
        return remap[codes.reshape(-1)].astype(np.int64), list(first)

    def route(self, X: pa.Table, state: Any, known: dict[Key, int]) -> np.ndarray:
        n = X.num_rows
        if not known:
            return np.full(n, -1, dtype=np.int64)
        valid = np.ones(n, dtype=bool)
        row_codes, value_sets = [], []
        for j, col in enumerate(self.columns):
            values = sorted({k[j] for k in known}, key=lambda v: key_sort((v,)))
            value_sets.append(values)
            arr = X.column(col)
            idx = pc.index_in(arr, value_set=pa.array(values, type=arr.type), skip_nulls=False)
            idx_np = idx.to_numpy(zero_copy_only=False)
            miss = np.isnan(idx_np) if idx_np.dtype.kind == "f" else np.zeros(n, dtype=bool)
            valid &= ~miss
            row_codes.append(np.where(miss, 0, idx_np).astype(np.int64))
        known_codes = np.array(
            [[value_sets[j].index(v) for j, v in enumerate(key)] for key in known], dtype=np.int64
        ).reshape(len(known), len(self.columns))
        known_pos = np.array(list(known.values()), dtype=np.int64)
        # match rows to known keys as rows of a code matrix (no combined integer code: it could overflow)
        both = np.concatenate([known_codes, np.stack(row_codes, axis=1)[valid]])
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        table = np.full(len(both), -1, dtype=np.int64)
        table[inverse[: len(known)]] = known_pos
        out = np.full(n, -1, dtype=np.int64)
        out[valid] = table[inverse[len(known):]]
        return out

    def route_one(self, row, schema, state, known):
        # the key's values normalized as the keys are: equal exactly when ``route``'s value lookup matches
        return known.get(tuple(normalize_value(row[schema.names.index(c)]) for c in self.columns), -1)

    def normalize_key(self, key: Any) -> Key:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) != len(self.columns):
            raise InputError(
                f"group key {key!r} has {len(key)} value(s) but the grouping has {len(self.columns)} column(s) "
                f"{list(self.columns)!r}; pass a tuple with one value per column"
            )
        return tuple(normalize_value(v) for v in key)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": list(self.columns)}


class HashGroups(Grouping):
    """``k`` shards by a stable hash of the row id; rows have no shard at predict time, so members average."""

    kind = "hash"
    routable = False

    def __init__(self, k: int = 8):
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InputError(f"HashGroups needs a positive number of shards, got k={k!r}")
        self.k = int(k)

    def __repr__(self) -> str:
        return f"HashGroups({self.k})"

    def assign(self, rows: pa.Table, state: Any) -> tuple[np.ndarray, list[Key]]:
        shard = hash_bucket(rows.column(HASH).to_numpy(), self.k)
        uniq, codes = np.unique(shard, return_inverse=True)
        return codes.astype(np.int64), [(int(u),) for u in uniq]

    def normalize_key(self, key: Any) -> Key:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
            raise InputError(f"hash shard key must be an int in [0, {self.k}), got {key!r}")
        if not 0 <= int(key) < self.k:
            raise UnknownGroupError(
                f"no hash shard {int(key)!r}: this model has shards 0 to {self.k - 1}. Use model.groups_ to list them"
            )
        return (int(key),)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k}


class KMeansGroups(Grouping):
    """Learned clusters whose fit is cheap to unlearn exactly.

    The clustering is fitted on a *hash sample*: the ``sample_size`` rows with the smallest id hash, so
    forgetting a row outside the sample leaves the clustering untouched. Features are scaled by powers of
    two, the initialisation is a deterministic function of the sample (quantiles along its first
    principal axis, no random draws), and centroids are rounded to a grid of ``grid`` scaled units, so a
    small change of the sample usually reproduces the same centroids bit for bit and moves no row.
    """

    kind = "kmeans"
    learned = True

    def __init__(
        self,
        k: int = 8,
        features: Sequence[str] | None = None,
        *,
        sample_size: int = 4_096,
        grid: float = 0.125,
        max_iter: int = 100,
    ):
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InputError(f"KMeansGroups needs a positive number of clusters, got k={k!r}")
        if not isinstance(sample_size, (int, np.integer)) or sample_size < 1:
            raise InputError(f"sample_size must be a positive int, got {sample_size!r}")
        if isinstance(grid, (bool, np.bool_)) or not isinstance(grid, (int, float)) or not (
            math.isfinite(grid) and grid > 0
        ):
            raise InputError(f"grid must be a positive finite number of scaled units (0.125 by default), got {grid!r}")
        if not isinstance(max_iter, (int, np.integer)) or isinstance(max_iter, bool) or max_iter < 1:
            raise InputError(f"max_iter must be a positive int (KMeans iterations, 100 by default), got {max_iter!r}")
        self.k = int(k)
        self.features = None if features is None else tuple(features)
        self.sample_size = int(sample_size)
        self.grid = float(grid)
        self.max_iter = int(max_iter)

    def __repr__(self) -> str:
        return f"KMeansGroups({self.k}, features={self.features!r})"

    def _features(self, schema: Schema) -> tuple[str, ...]:
        if self.features is not None:
            return self.features
        return tuple(n for n, k in zip(schema.names, schema.kinds) if k == NUMERIC)

    def reads(self, schema: Schema) -> tuple[str, ...]:
        return self._features(schema)

    def validate(self, schema: Schema) -> None:
        feats = self._features(schema)
        if not feats:
            raise InputError("KMeansGroups needs numeric features, and X has none; use key or hash groups")
        for f in feats:
            if f not in schema.names:
                raise InputError(f"KMeansGroups feature {f!r} not found in X; available: {list(schema.names)!r}")
            if schema.kind(f) != NUMERIC:
                raise InputError(f"KMeansGroups feature {f!r} is not numeric; list numeric columns only")

    def matrix(self, table: pa.Table, features: Sequence[str]) -> np.ndarray:
        cols = [table.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in features]
        return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))

    def fit_state(self, sample: pa.Table, n_rows: int, threshold: int, schema: Schema) -> ClusterState:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        feats = self._features(schema)
        X = self.matrix(sample, feats)
        with np.errstate(all="ignore"):
            mean = np.nanmean(X, axis=0) if len(X) else np.zeros(X.shape[1])
            std = np.nanstd(X, axis=0) if len(X) else np.ones(X.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        scale = np.exp2(np.round(np.log2(std)))
        step = scale * self.grid
        shift = np.round(mean / step) * step
        Z = self._scaled(X, shift, scale)
        k = min(self.k, len(Z))
        if k <= 1:
            centroids = np.round(Z.mean(axis=0, keepdims=True) / self.grid) * self.grid
        else:
            centred = Z - Z.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            axis = vt[0]
            axis = axis * (1.0 if axis[np.argmax(np.abs(axis))] >= 0 else -1.0)
            order = np.argsort(Z @ axis, kind="stable")
            init = np.stack([Z[chunk].mean(axis=0) for chunk in np.array_split(order, k)])
            with threadpool_limits(limits=1):
                km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=self.max_iter, tol=0.0, algorithm="lloyd")
                km.fit(Z)
            centroids = np.round(km.cluster_centers_ / self.grid) * self.grid
        centroids = np.unique(centroids + 0.0, axis=0)  # canonical order; +0.0 folds -0.0 into 0.0
        return ClusterState(feats, shift, scale, centroids, threshold, sample.num_rows)

    @staticmethod
    def _scaled(X: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        Z = (X - shift) / scale
        Z[np.isnan(Z)] = 0.0
        return Z

    def nearest(self, table: pa.Table, state: ClusterState) -> np.ndarray:
        Z = self._scaled(self.matrix(table, state.features), state.shift, state.scale)
        arg = np.zeros(len(Z), dtype=np.int64)
        # blocks of rows stay in cache; the arithmetic of a row is the same whatever block it is in
        for start in range(0, len(Z), _BLOCK):
            arg[start:start + _BLOCK] = self._nearest_block(Z[start:start + _BLOCK], state.centroids)
        return arg

    @staticmethod
    def _nearest_block(Z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        best = np.full(len(Z), np.inf)
        arg = np.zeros(len(Z), dtype=np.int64)
        d2 = np.empty(len(Z))
        diff = np.empty(len(Z))
        Zt = np.ascontiguousarray(Z.T)  # one feature per contiguous row
        for c, centre in enumerate(centroids):
            # explicit per-feature accumulation, no BLAS: a row's distance never depends on the batch shape
            d2[:] = 0.0
            for j in range(Z.shape[1]):
                np.subtract(Zt[j], centre[j], out=diff)
                np.multiply(diff, diff, out=diff)
                d2 += diff
            closer = d2 < best
            best[closer] = d2[closer]
            arg[closer] = c
        return arg

    def assign(self, rows: pa.Table, state: ClusterState) -> tuple[np.ndarray, list[Key]]:
        cluster = self.nearest(rows, state)
        uniq, codes = np.unique(cluster, return_inverse=True)
        return codes.astype(np.int64), [(int(u),) for u in uniq]

    def route(self, X: pa.Table, state: ClusterState, known: dict[Key, int]) -> np.ndarray:
        cluster = self.nearest(X, state)
        table = np.full(len(state.centroids), -1, dtype=np.int64)
        for key, pos in known.items():
            table[key[0]] = pos
        return table[cluster]

    def route_one(self, row, schema, state, known):
        X = np.array([[row[schema.names.index(f)] for f in state.features]], dtype=np.float64)
        cluster = int(self._nearest_block(self._scaled(X, state.shift, state.scale), state.centroids)[0])
        return known.get((cluster,), -1)

    def normalize_key(self, key: Any) -> Key:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
            raise InputError(f"cluster key must be an int (the cluster number), got {key!r}")
        return (int(key),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "k": self.k,
            "features": None if self.features is None else list(self.features),
            "sample_size": self.sample_size,
            "grid": self.grid,
            "max_iter": self.max_iter,
        }


# The auto rule, read off ``python -m bench --only auto`` and ``--only plan`` (bench/results/auto.md, plan.md): a
# hash shard must keep at least this many rows (and, for classification, this many rows of the rarest class), else
# its loss against one model exceeds ~0.003 AUC / ~1% RMSE on the bundled data sets (diamonds price: 2 shards of
# 21.6k rows +0.3% RMSE, of 17.3k rows +1.8%).
AUTO_MIN_SHARD_ROWS = {"classification": 8_192, "regression": 32_768}
AUTO_MIN_MINORITY_ROWS = 1_024
AUTO_MAX_K = 128


class AutoGroups(Grouping):
    """Hash shards whose number ``K`` is a pure function of the training rows (the default, ``grouping="auto"``).

    ``K`` is the largest power of two up to ``max_k`` that leaves every shard ``min_shard_rows`` rows (per task)
    and, for classification, ``min_minority_rows`` rows of the rarest class; small data gets one member. Since
    ``K`` depends only on the rows, a fresh fit on the remaining rows picks the same ``K``; a change that crosses
    a threshold re-partitions everything (the report says ``regrouped=True``).
    """

    kind = "auto"
    routable = False
    sized = True

    def __init__(
        self,
        *,
        min_shard_rows: dict[str, int] | None = None,
        min_minority_rows: int = AUTO_MIN_MINORITY_ROWS,
        max_k: int = AUTO_MAX_K,
    ):
        rows = dict(AUTO_MIN_SHARD_ROWS if min_shard_rows is None else min_shard_rows)
        if set(rows) != set(AUTO_MIN_SHARD_ROWS) or not all(isinstance(v, int) and v >= 1 for v in rows.values()):
            raise InputError(
                f"min_shard_rows must give a positive int for each of {sorted(AUTO_MIN_SHARD_ROWS)}, got {min_shard_rows!r}"
            )
        for name, v in (("min_minority_rows", min_minority_rows), ("max_k", max_k)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise InputError(f"AutoGroups needs a positive int {name}, got {v!r}")
        self.min_shard_rows = rows
        self.min_minority_rows = int(min_minority_rows)
        self.max_k = int(max_k)

    def __repr__(self) -> str:
        args = {k: v for k, v in self.to_dict().items() if k != "kind" and v != getattr(_AUTO_DEFAULT, k)}
        return "AutoGroups(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"

    def choose_k(self, n_rows: int, task: str, class_counts: Sequence[int] | None) -> int:
        """The number of hash shards for ``n_rows`` rows of ``task`` with these class counts."""
        per_shard = self.min_shard_rows[task]
        minority = min(class_counts) if class_counts is not None and len(class_counts) else None
        k = 1
        while (
            2 * k <= self.max_k
            and n_rows // (2 * k) >= per_shard
            and (minority is None or minority // (2 * k) >= self.min_minority_rows)
        ):
            k *= 2
        return k

    def resolve(self, n_rows: int, task: str, class_counts: Sequence[int] | None) -> "HashGroups":
        return HashGroups(self.choose_k(n_rows, task, class_counts))

    def assign(self, rows: pa.Table, state: Any) -> tuple[np.ndarray, list[Key]]:  # pragma: no cover - guard
        raise TypeError("AutoGroups assigns rows through resolve(...): call it on the resolved HashGroups")

    def normalize_key(self, key: Any) -> Key:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool) or key < 0:
            raise InputError(f"hash shard key must be a non-negative int (the shard number), got {key!r}")
        return (int(key),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "min_shard_rows": dict(sorted(self.min_shard_rows.items())),
            "min_minority_rows": self.min_minority_rows,
            "max_k": self.max_k,
        }


_AUTO_DEFAULT = AutoGroups()


def resolve_grouping(grouping: Any) -> Grouping:
    """The grouping spec for a ``grouping=`` parameter value (``"auto"``, the default: ``AutoGroups()``)."""
    if isinstance(grouping, str) and grouping == "auto":
        return AutoGroups()
    if grouping is None:  # the default before "auto": kept so that models saved with grouping=None refit alike
        return HashGroups(8)
    if isinstance(grouping, Grouping):
        return grouping
    if isinstance(grouping, str) or (
        isinstance(grouping, (list, tuple)) and grouping and all(isinstance(c, str) for c in grouping)
    ):
        return KeyGroups(grouping)
    raise InputError(
        f"grouping={grouping!r} is not understood; pass a column name, a list of column names, "
        "\"auto\", cf.KMeansGroups(k) or cf.HashGroups(k)"
    )


def grouping_from_dict(d: dict[str, Any]) -> Grouping:
    kind = d.get("kind")
    if kind == "key":
        return KeyGroups(d["columns"])
    if kind == "hash":
        return HashGroups(d["k"])
    if kind == "auto":
        return AutoGroups(min_shard_rows=d["min_shard_rows"], min_minority_rows=d["min_minority_rows"], max_k=d["max_k"])
    if kind == "kmeans":
        return KMeansGroups(
            d["k"], d["features"], sample_size=d["sample_size"], grid=d["grid"], max_iter=d["max_iter"]
        )
    raise InputError(f"unknown grouping kind {kind!r}")


def sample_threshold(hashes: np.ndarray, sample_size: int) -> int:
    """Largest hash inside the sample of the ``sample_size`` smallest hashes (all rows when fewer)."""
    if len(hashes) <= sample_size:
        return _MAX_HASH
    return int(np.partition(hashes, sample_size - 1)[sample_size - 1])


__all__ = ["Grouping", "KeyGroups", "HashGroups", "KMeansGroups", "AutoGroups", "ClusterState", "resolve_grouping"]
