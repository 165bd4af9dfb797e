"""Learned clusters (k-means on the hash sample, quantized centroids) and ``ClusterState``, what they learn."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..data import NUMERIC, Schema
from ..errors import InputError
from .base import Grouping, Key

BLOCK = 16_384  # rows per block in cluster assignment


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
        for start in range(0, len(Z), BLOCK):
            arg[start:start + BLOCK] = self._nearest_block(Z[start:start + BLOCK], state.centroids)
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KMeansGroups":
        return cls(d["k"], d["features"], sample_size=d["sample_size"], grid=d["grid"], max_iter=d["max_iter"])

    def onnx_route(self, g: Any, inputs: dict[str, str], keys: list, schema: Schema, state: Any) -> str:
        """(N,) int64 in an ONNX graph ``g`` (``export.onnx``): each row's position in ``keys``, ``len(keys)`` where
        its group is unknown, as ``route`` finds it; ``inputs`` maps feature names to the graph's inputs."""
        K = len(keys)
        st = state
        d2 = None
        for j, f in enumerate(st.features):
            z = g.op("Div", [g.op("Sub", [inputs[f], g.const(np.array([st.shift[j]]))]), g.const(np.array([st.scale[j]]))])
            z = g.op("Where", [g.op("IsNaN", [z]), g.const(np.array(0.0)), z])
            diff = g.op("Sub", [z, g.const(st.centroids[:, j].reshape(1, -1).astype(np.float64))])
            sq = g.op("Mul", [diff, diff])
            d2 = sq if d2 is None else g.op("Add", [d2, sq])
        # numpy keeps the first centroid on ties, as ArgMin does
        cluster = g.op("ArgMin", [d2], axis=1, keepdims=0, select_last_index=0)
        table = np.full(len(st.centroids), K, dtype=np.int64)
        for pos, key in enumerate(keys):
            table[key[0]] = pos
        out = g.op("Gather", [g.const(table), cluster], axis=0)
        return out
