"""Input conversion to one canonical Arrow layout, row ids and their stable hash.

Every input (pandas, polars, pyarrow, numpy) becomes a pyarrow Table whose feature columns are either
``float64`` (numbers and booleans; missing values are nulls, never NaN) or ``string`` (strings,
categories, Arrow dictionaries; missing values are nulls). Everything downstream sees only that layout,
so the model cannot depend on how the caller happened to hold the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DuplicateIdError, InputError, SchemaError

ID = "__cf_id__"
HASH = "__cf_hash__"
LABEL = "__cf_label__"
RESERVED = (ID, HASH, LABEL)

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Schema:
    """Names and kinds (``numeric`` / ``categorical``) of the feature columns, in fit order."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    from_frame: bool = True  # False when fitted on an unnamed array (columns x0, x1, ...)

    def kind(self, name: str) -> str:
        return self.kinds[self.names.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "kinds": list(self.kinds), "from_frame": self.from_frame}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schema":
        return cls(tuple(d["names"]), tuple(d["kinds"]), bool(d["from_frame"]))


def _kind_of(name: str, typ: pa.DataType) -> str:
    if pa.types.is_dictionary(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return CATEGORICAL
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_decimal(typ):
        return NUMERIC
    if pa.types.is_null(typ):
        return NUMERIC  # a column of missing values only
    raise InputError(
        f"column {name!r} has type {typ}, which clusterforget cannot use as a feature; "
        "convert it to numbers or strings (for dates, e.g. days since an epoch) or drop it"
    )


def _canonical_column(name: str, col: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    typ = col.type
    if kind == CATEGORICAL:
        if pa.types.is_dictionary(typ):
            col = pc.cast(col, typ.value_type)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        return pc.cast(col, pa.string())
    if pa.types.is_dictionary(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ):
        raise SchemaError(
            f"column {name!r} held numbers at fit time but has type {typ} now; pass the same column types as in fit"
        )
    col = pc.cast(col, pa.float64())
    if col.null_count < len(col):
        nan = pc.is_nan(col)
        if pc.any(nan).as_py():
            col = pc.if_else(nan, pa.scalar(None, pa.float64()), col)
    if pc.any(pc.is_inf(col)).as_py():
        raise InputError(f"column {name!r} contains infinite values; replace them with a finite number or a missing value")
    return col


def _raw_table(X: Any) -> tuple[pa.Table, bool]:
    """Any supported input as an Arrow table; the flag says whether its column names are the caller's."""
    if isinstance(X, pa.Table):
        return X, True
    if isinstance(X, pa.RecordBatch):
        return pa.Table.from_batches([X]), True
    module = type(X).__module__.split(".")[0]
    if module == "pandas" and hasattr(X, "columns"):
        names = [str(c) for c in X.columns]
        if len(set(names)) != len(names):
            raise InputError(f"column names must be unique, got {names!r}")
        frame = X.copy(deep=False)
        frame.columns = names
        return pa.Table.from_pandas(frame, preserve_index=False), True
    if module == "polars" and hasattr(X, "to_arrow"):
        return X.to_arrow(), True
    if hasattr(X, "__dataframe__") and not isinstance(X, np.ndarray):
        import pyarrow.interchange as pai

        return pai.from_dataframe(X), True
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"cannot read X of type {type(X).__name__} as a table: {exc}") from exc
    if arr.ndim != 2:
        raise InputError(
            f"X must be 2-dimensional (rows x columns), got an array of shape {arr.shape}; "
            "reshape a single feature with X.reshape(-1, 1) or a single row with X.reshape(1, -1)"
        )
    if arr.dtype.kind == "c":
        raise InputError("X holds complex numbers; clusterforget takes real numbers and strings only")
    if arr.dtype.kind == "O":
        cols = [pa.array(arr[:, j].tolist(), from_pandas=True) for j in range(arr.shape[1])]
    else:
        cols = [pa.array(arr[:, j], from_pandas=True) for j in range(arr.shape[1])]
    return pa.table(cols, names=[f"x{j}" for j in range(arr.shape[1])]), False


def infer_schema(X: Any) -> tuple[Schema, pa.Table]:
    """Schema of training input, and the input in canonical layout."""
    raw, named = _raw_table(X)
    if raw.num_columns == 0:
        raise InputError("X has no columns; pass at least one feature column")
    if raw.num_rows == 0:
        raise InputError("X has no rows (0 samples); pass at least one training row")
    for name in raw.column_names:
        if name in RESERVED:
            raise InputError(f"column name {name!r} is reserved by clusterforget; rename that column")
    kinds = tuple(_kind_of(n, raw.column(n).type) for n in raw.column_names)
    schema = Schema(tuple(raw.column_names), kinds, named)
    return schema, _canonical(raw, schema)


def _canonical(raw: pa.Table, schema: Schema) -> pa.Table:
    cols = [_canonical_column(n, raw.column(n), k) for n, k in zip(schema.names, schema.kinds)]
    return pa.table(cols, names=list(schema.names))


def conform(X: Any, schema: Schema) -> pa.Table:
    """Input at predict/update time in canonical layout, checked against the fit schema."""
    raw, named = _raw_table(X)
    if named and schema.from_frame:
        if tuple(raw.column_names) != schema.names:
            missing = [n for n in schema.names if n not in raw.column_names]
            extra = [n for n in raw.column_names if n not in schema.names]
            detail = f"missing {missing!r}, unexpected {extra!r}" if (missing or extra) else "same names in another order"
            raise SchemaError(
                "The feature names should match those that were passed during fit: "
                f"{detail}; fit saw {list(schema.names)!r}. Select the columns in that order."
            )
    else:
        if raw.num_columns != len(schema.names):
            raise SchemaError(
                f"X has {raw.num_columns} features, but the model was fitted with {len(schema.names)} features; "
                "pass the same columns as in fit"
            )
        if named != schema.from_frame and named:
            pass  # named input to a model fitted on an array: use positions, as scikit-learn does
        raw = raw.rename_columns(list(schema.names))
    for name, kind in zip(schema.names, schema.kinds):
        typ = raw.column(name).type
        got = _kind_of(name, typ)
        if got != kind and not pa.types.is_null(typ):
            raise SchemaError(
                f"column {name!r} was {kind} at fit time but has type {typ} now; pass the same column types as in fit"
            )
    return _canonical(raw, schema)


def as_ids(ids: Any, n: int | None = None, *, what: str = "ids") -> pa.Array:
    """Row ids as an Arrow int64 or string array, checked for nulls (and length when ``n`` is given)."""
    if ids is None:
        if n is None:
            raise InputError(f"{what} are required")
        return pa.array(np.arange(n, dtype=np.int64))
    if isinstance(ids, (str, bytes, int, np.integer)):
        ids = [ids]
    if isinstance(ids, pa.ChunkedArray):
        arr = ids.combine_chunks()
    elif isinstance(ids, pa.Array):
        arr = ids
    else:
        values = ids.to_numpy() if hasattr(ids, "to_numpy") and not isinstance(ids, np.ndarray) else np.asarray(ids)
        if values.dtype.kind == "O" and len(values) and all(isinstance(v, str) for v in values):
            arr = pa.array(values.tolist(), pa.string())
        else:
            try:
                arr = pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InputError(f"{what} must all be integers or all be strings: {exc}") from exc
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.int64())
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    elif len(arr) == 0:
        arr = pa.array([], pa.int64())
    else:
        sample = arr.slice(0, 3).to_pylist()
        raise InputError(f"{what} must be integers or strings, got type {arr.type} (first values {sample!r})")
    if arr.null_count:
        raise InputError(f"{what} contain {arr.null_count} missing value(s); every row needs an id")
    if n is not None and len(arr) != n:
        raise InputError(f"got {len(arr)} {what} for {n} rows; pass one id per row")
    return arr


def check_unique(ids: pa.Array, *, what: str = "ids") -> None:
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
        raise DuplicateIdError(f"{what} must be unique; repeated: {dup!r}. Give each row its own id")


def id_type_matches(ids: pa.Array, existing: pa.DataType) -> None:
    if ids.type != existing and len(ids):
        raise InputError(
            f"ids have type {ids.type} but the model's row ids are {existing}; pass ids of the same type as in fit"
        )


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def id_hash(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hash of each row id (splitmix64 for integers, BLAKE2b for strings).

    The hash fixes hash-shard membership and the clustering sample, so it must never change between
    versions of the library: changing it would silently re-partition every stored model.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if pa.types.is_integer(ids.type):
        z = ids.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        with np.errstate(over="ignore"):
            z = z + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            return z ^ (z >> np.uint64(31))
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids.to_pylist()):
        out[i] = int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
    return out


def labels_array(y: Any, n: int) -> np.ndarray:
    """Targets as a 1-d numpy array (a column vector is accepted), checked for length."""
    if isinstance(y, (pa.Array, pa.ChunkedArray)):
        y = y.to_numpy(zero_copy_only=False)
    elif hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        y = y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y must be 1-dimensional, got shape {y.shape}; clusterforget predicts one target")
    if len(y) != n:
        raise InputError(f"X has {n} rows but y has {len(y)}; pass one target per row")
    return y


def take_sorted_by_id(table: pa.Table) -> pa.Table:
    """Rows in canonical order (ascending id): the order every member is trained in."""
    order = pc.sort_indices(table, sort_keys=[(ID, "ascending")])
    return table.take(order)


def combine(tables: Sequence[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables)
