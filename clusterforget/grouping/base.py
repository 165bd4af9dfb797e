"""What a grouping is (a spec of settings; what it learns lives in a state object) and the registry of kinds.

A grouping is a small spec (its parameters only). What it learns from data lives in a separate state
object (``ClusterState`` for learned clusters; key and hash partitions learn nothing), so the ensemble
can tell exactly when forgetting rows changes the partition itself.

Each other module of this package is one grouping kind (``key``, ``hash``, ``kmeans``, ``auto``). A ``Grouping``
subclass that sets ``kind`` registers itself: ``grouping_from_dict`` reads it back by that name, and the other
layers ask the spec itself for what depends on its kind: ``parse_key`` (the command line's typed keys),
``onnx_route`` (the ONNX export's routing), ``normalize_key``, ``route``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..data import Schema, row_table
from ..errors import ExportError, InputError

Key = tuple  # a base group key: column values, or (cluster,), or (shard,)

MAX_HASH = (1 << 64) - 1
GROUPINGS: dict[str, type["Grouping"]] = {}  # kind -> its class (``Grouping.__init_subclass__`` fills it)


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


class Grouping:
    """Base of the grouping specs. A subclass that sets ``kind`` is registered under it (``GROUPINGS``)."""

    kind: str = ""
    routable: bool = True  # whether a row's group can be found from its features at predict time
    learned: bool = False  # whether the partition itself is fitted on data
    sized: bool = False  # whether the partition's shape depends on the row count and class balance (``resolve``)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            GROUPINGS[cls.kind] = cls

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Grouping":
        """The spec ``to_dict`` wrote."""
        raise NotImplementedError

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

    def parse_key(self, values: Sequence[str], schema: Schema) -> Any:
        """A group key typed on the command line (text, one value per word): here one whole number, a cluster
        or shard; ``normalize_key`` then checks it against the model."""
        if len(values) != 1 or not re.fullmatch(r"[0-9]+", values[0], re.ASCII):
            raise InputError(f"a cluster or shard key is one whole number, got {' '.join(values)!r}")
        return int(values[0])

    def onnx_route(self, g: Any, inputs: dict[str, str], keys: list, schema: Schema, state: Any) -> str:
        """(N,) int64 in an ONNX graph ``g`` (``export.onnx``): each row's position in ``keys``, ``len(keys)`` where
        its group is unknown, as ``route`` finds it; ``inputs`` maps feature names to the graph's inputs."""
        raise ExportError(f"grouping kind {self.kind!r} routes rows in a way the ONNX export does not know; export "
                          "format='bundle' instead")


def grouping_from_dict(d: dict[str, Any]) -> Grouping:
    """The spec of a persisted ``to_dict``, by its registered ``kind``."""
    kind = d.get("kind")
    cls = GROUPINGS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InputError(f"unknown grouping kind {kind!r}")
    return cls.from_dict(d)


def resolve_grouping(grouping: Any) -> Grouping:
    """The grouping spec for a ``grouping=`` parameter value (``"auto"``, the default: ``AutoGroups()``)."""
    if isinstance(grouping, str) and grouping == "auto":
        return GROUPINGS["auto"]()
    if grouping is None:  # the default before "auto": kept so that models saved with grouping=None refit alike
        return GROUPINGS["hash"](8)
    if isinstance(grouping, Grouping):
        return grouping
    if isinstance(grouping, str) or (
        isinstance(grouping, (list, tuple)) and grouping and all(isinstance(c, str) for c in grouping)
    ):
        return GROUPINGS["key"](grouping)
    raise InputError(
        f"grouping={grouping!r} is not understood; pass a column name, a list of column names, "
        "\"auto\", cf.KMeansGroups(k) or cf.HashGroups(k)"
    )


def sample_threshold(hashes: np.ndarray, sample_size: int) -> int:
    """Largest hash inside the sample of the ``sample_size`` smallest hashes (all rows when fewer)."""
    if len(hashes) <= sample_size:
        return MAX_HASH
    return int(np.partition(hashes, sample_size - 1)[sample_size - 1])
