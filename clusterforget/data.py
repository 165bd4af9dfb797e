"""Input conversion to one canonical Arrow layout, row ids and their stable hash.

Every input (pandas, polars, pyarrow, numpy) becomes a pyarrow Table whose feature columns are either
``float64`` (numbers and booleans; missing values are nulls, never NaN) or ``string`` (strings,
categories, Arrow dictionaries; missing values are nulls). Everything downstream sees only that layout,
so the model cannot depend on how the caller happened to hold the data.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._compat import is_pandas, is_polars, is_scipy_sparse
from .errors import DuplicateIdError, InputError, SchemaError

ID = "__cf_id__"
HASH = "__cf_hash__"
LABEL = "__cf_label__"
WEIGHT = "__cf_weight__"  # the row's sample weight (1.0 unless the caller gave one)
RESERVED = (ID, HASH, LABEL, WEIGHT)
MAX_SAMPLE_WEIGHT = 1e12  # a row's weight; sums over any number of rows stay far from float64 overflow

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


def _is_text(typ: pa.DataType) -> bool:
    return (
        pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(typ))
    )


def kind_of(name: str, typ: pa.DataType) -> str:
    """``numeric`` or ``categorical`` for an Arrow type (``InputError`` naming the column if it is neither)."""
    if pa.types.is_dictionary(typ) or _is_text(typ):
        return CATEGORICAL
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_decimal(typ):
        return NUMERIC
    if pa.types.is_null(typ):
        return NUMERIC  # a column of missing values only
    raise InputError(
        f"column {name!r} has type {typ}, which clusterforget cannot use as a feature; "
        "convert it to numbers or strings (for dates, e.g. days since an epoch) or drop it"
    )


def _first_values(col: pa.ChunkedArray | pa.Array, k: int = 3) -> list:
    return col.slice(0, k).to_pylist()


def _canonical_column(name: str, col: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    typ = col.type
    if kind == CATEGORICAL:
        if pa.types.is_dictionary(typ):
            col = pc.cast(col, typ.value_type)
        return pc.cast(col, pa.string())
    if pa.types.is_dictionary(typ) or _is_text(typ):
        raise SchemaError(
            f"column {name!r} held numbers at fit time but has type {typ} now (first values "
            f"{_first_values(col)!r}); pass the same column types as in fit"
        )
    # unsafe: integers beyond 2**53 round to the nearest double, as numpy does, instead of failing
    col = pc.cast(col, pa.float64(), safe=False)
    if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        return col  # an integer is never NaN, infinite or -0.0 as a double
    if col.null_count < len(col):
        nan = pc.is_nan(col)
        if pc.any(nan).as_py():
            col = pc.if_else(nan, pa.scalar(None, pa.float64()), col)
        # -0.0 becomes 0.0: equal as numbers, but Arrow's hashing tells them apart, so a key column would
        # otherwise hold two groups (and two route entries) for one value
        col = pc.add(col, pa.scalar(0.0))
    if pc.any(pc.is_inf(col)).as_py():
        raise InputError(
            f"column {name!r} contains infinite values (inf or -inf); replace them with a finite number or a "
            "missing value"
        )
    return col


def _arrow_column(name: str, values: Any) -> pa.Array:
    try:
        return pa.array(values, from_pandas=True)
    except OverflowError as exc:  # Python ints beyond 64 bits (found by tests/test_fuzz.py)
        sample = list(values[:3]) if hasattr(values, "__getitem__") else values
        raise InputError(
            f"column {name!r} holds integers that do not fit in 64 bits (first values {sample!r}); convert "
            "them to float or to strings"
        ) from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        sample = list(values[:3]) if hasattr(values, "__getitem__") else values
        raise InputError(
            f"column {name!r} mixes value types (first values {sample!r}: {exc}); give every column one type: "
            "numbers, or strings for categories"
        ) from exc


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"column names must be unique, got {dup!r} more than once; rename those columns")


def raw_table(X: Any) -> tuple[pa.Table, bool]:
    """Any supported input as an Arrow table; the flag says whether its column names are the caller's."""
    if X is None:
        raise InputError("X is None; pass a table or a 2-d array of features")
    if isinstance(X, pa.RecordBatch):
        X = pa.Table.from_batches([X])
    if isinstance(X, pa.Table):
        _check_names(X.column_names)
        return X, True
    if isinstance(X, Mapping):  # one row: column name -> value
        names = [str(k) for k in X]
        _check_names(names)
        bad = [k for k, v in X.items() if not _is_scalar(v)]
        if bad:
            raise InputError(
                f"a dict is one row (column name -> value), but column {str(bad[0])!r} holds "
                f"{type(X[bad[0]]).__name__}; pass a DataFrame or an Arrow table for several rows"
            )
        return pa.table([_arrow_column(n, [v]) for n, v in zip(names, X.values())], names=names), True
    if is_scipy_sparse(X):
        return _sparse_table(X), False
    if is_pandas(X) and hasattr(X, "columns"):
        names = [str(c) for c in X.columns]
        _check_names(names)
        # column by column, as ``Table.from_pandas`` converts each one (``pa.array(column, from_pandas=True)``)
        # but without its schema and metadata work and thread pool, which cost more than the conversion of a
        # scoring-sized frame; a column that does not convert is named in the error. ``items`` (names are
        # unique) makes each column's Series for half of what ``iloc[:, j]`` costs (0.5 vs 0.9 ms on 14 columns)
        return pa.table([_arrow_column(n, col) for n, (_, col) in zip(names, X.items())], names=names), True
    if is_polars(X) and hasattr(X, "to_arrow") and hasattr(X, "columns"):
        return X.to_arrow(), True
    if hasattr(X, "__dataframe__") and not isinstance(X, np.ndarray) and hasattr(X, "columns"):
        import pyarrow.interchange as pai

        return pai.from_dataframe(X), True
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"cannot read X of type {type(X).__name__} as a table: {exc}") from exc
    if arr.ndim != 2:
        raise InputError(
            f"X must be 2-dimensional (rows x columns), got an array of shape {arr.shape}. Reshape your data "
            "with X.reshape(-1, 1) if it holds a single feature or X.reshape(1, -1) if it holds a single row"
        )
    if arr.dtype.kind == "c":
        raise InputError("Complex data not supported: X holds complex numbers; pass real numbers or strings")
    if arr.shape[1] == 0:
        raise InputError(
            f"X has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required; pass at least one column"
        )
    if arr.dtype.kind == "O":
        cols = [_arrow_column(f"x{j}", arr[:, j].tolist()) for j in range(arr.shape[1])]
    else:
        cols = [_arrow_column(f"x{j}", arr[:, j]) for j in range(arr.shape[1])]
    return pa.table(cols, names=[f"x{j}" for j in range(arr.shape[1])]), False


def _sparse_table(X: Any) -> pa.Table:
    """A scipy sparse matrix or array (CSR, CSC, COO, ...) as the table its dense form gives: unstored entries
    are 0.0, stored NaNs are missing values. Built column by column from CSC, so the dense matrix is never held
    twice; the table is the one ``X.toarray()`` gives, so a model fitted on either is the same bit for bit."""
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) != 2:
        raise InputError(f"X must be 2-dimensional (rows x columns), got a sparse {type(X).__name__} of shape {shape}")
    if shape[1] == 0:
        raise InputError(f"X has 0 feature(s) (shape={shape}) while a minimum of 1 is required; pass at least one column")
    kind = np.dtype(X.dtype).kind
    if kind not in "biuf":
        raise InputError(f"a sparse X of dtype {X.dtype} is not supported; pass numbers (bool, integer or float)")
    csc = X.tocsc(copy=True)
    csc.sum_duplicates()  # COO input may store one entry more than once: the dense form holds their sum
    n = shape[0]
    cols = []
    for j in range(shape[1]):
        start, end = int(csc.indptr[j]), int(csc.indptr[j + 1])
        col = np.zeros(n, dtype=csc.data.dtype)
        col[csc.indices[start:end]] = csc.data[start:end]
        cols.append(_arrow_column(f"x{j}", col))
    return pa.table(cols, names=[f"x{j}" for j in range(shape[1])])


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bytes, int, float, np.generic)) or type(v).__name__ in ("NAType", "NaTType")


def _plain_number(v: Any) -> float | None:
    """``v`` as the canonical layout holds it (float64, NaN for missing, -0.0 as 0.0), when it is plainly a
    finite number or missing; None when it is anything else (the general path then decides or raises)."""
    if v is None:
        return math.nan
    t = type(v)
    if t is float or t is int or t is bool or isinstance(v, (np.floating, np.integer, np.bool_)):
        if t is int and not -(1 << 63) <= v < (1 << 64):
            return None  # Arrow refuses it: the general path says so
        x = float(v) + 0.0
        return x if x - x == 0.0 or x != x else None  # inf: refused by the general path
    return math.nan if type(v).__name__ == "NAType" else None


def one_row(X: Any, schema: Schema) -> list[Any] | None:
    """The canonical values of a one-row dict (column name -> value), pandas DataFrame or Arrow table, in schema
    order: float (NaN for missing) for a numeric column, str or None for a categorical one.

    The values ``conform`` would give, without building Arrow tables (most of a one-row prediction). Returns
    None for anything not plainly valid (other inputs, other column names or order, other types, infinities):
    the caller then takes the general path, which converts it or raises its error.
    """
    if isinstance(X, dict):
        if len(X) != len(schema.names) or not schema.from_frame:
            return None
        try:
            values = [X[n] for n in schema.names]
        except KeyError:
            return None
        dtypes = None
    elif isinstance(X, pa.Table) and X.num_rows == 1 and X.num_columns == len(schema.names):
        if tuple(X.column_names) != schema.names:
            return None
        for col, kind in zip(X.columns, schema.kinds):
            typ = col.type
            if not (_is_text(typ) if kind == CATEGORICAL else (
                    pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ))):
                return None
        values = [col[0].as_py() for col in X.columns]
        dtypes = None
    elif is_pandas(X) and getattr(X, "ndim", 0) == 2 and X.shape == (1, len(schema.names)) and schema.from_frame:
        if X.columns.tolist() != list(schema.names):
            return None
        dtypes = X.dtypes.tolist()
        values = X.iloc[0].tolist()
    else:
        return None
    out: list[Any] = []
    for j, (v, kind) in enumerate(zip(values, schema.kinds)):
        if dtypes is not None:
            kind_char = getattr(dtypes[j], "kind", "")
            numeric_dtype = kind_char in "iufb" and kind_char != ""
            if numeric_dtype != (kind == NUMERIC) or (kind_char == "O" and not _text_dtype(dtypes[j])):
                return None  # a column of another kind (or of an unusual dtype): the general path decides
        if kind == NUMERIC:
            x = _plain_number(v)
            if x is None:
                return None
            out.append(x)
        elif type(v) is str:
            out.append(v)
        elif v is None or (type(v) is float and v != v) or type(v).__name__ == "NAType":
            out.append(None)
        else:
            return None
    return out


def row_table(values: Sequence[Any], schema: Schema) -> pa.Table:
    """A row of canonical values (``one_row``) as the one-row canonical table ``conform`` gives."""
    cols = [pa.array([v], pa.string()) if kind == CATEGORICAL else pa.array([None if v != v else v], pa.float64())
            for v, kind in zip(values, schema.kinds)]
    return pa.table(cols, names=list(schema.names))


def _text_dtype(dtype: Any) -> bool:
    name = str(dtype)
    return name in ("object", "str", "string") or name.startswith("string")


def infer_schema(X: Any) -> tuple[Schema, pa.Table]:
    """Schema of training input, and the input in canonical layout."""
    raw, named = raw_table(X)
    if raw.num_columns == 0:
        raise InputError(
            f"X has 0 feature(s) (shape=({raw.num_rows}, 0)) while a minimum of 1 is required; "
            "pass at least one feature column"
        )
    if raw.num_rows == 0:
        raise InputError(
            f"X has 0 sample(s) (shape=(0, {raw.num_columns})) while a minimum of 1 is required; "
            "pass at least one training row"
        )
    for name in raw.column_names:
        if name in RESERVED:
            raise InputError(f"column name {name!r} is reserved by clusterforget; rename that column")
    kinds = tuple(kind_of(n, raw.column(n).type) for n in raw.column_names)
    schema = Schema(tuple(raw.column_names), kinds, named)
    return schema, canonical(raw, schema)


def canonical(raw: pa.Table, schema: Schema) -> pa.Table:
    """``raw`` (``raw_table``) in the canonical layout of ``schema``: float64 or string columns, nulls for missing."""
    cols = [_canonical_column(n, raw.column(n), k) for n, k in zip(schema.names, schema.kinds)]
    return pa.table(cols, names=list(schema.names))


def conform(X: Any, schema: Schema, owner: str = "the model") -> pa.Table:
    """Input at predict/update time in canonical layout, checked against the fit schema.

    ``owner`` names the estimator in messages (scikit-learn's wording: "... but ForgetClassifier is expecting").
    """
    import warnings

    raw, named = raw_table(X)
    if isinstance(X, Mapping) and set(raw.column_names) == set(schema.names):
        raw = raw.select(list(schema.names))  # a dict's keys have no meaningful order
    if named and schema.from_frame:
        if tuple(raw.column_names) != schema.names:
            missing = [n for n in schema.names if n not in raw.column_names]
            extra = [n for n in raw.column_names if n not in schema.names]
            detail = f"missing {missing!r}, unexpected {extra!r}" if (missing or extra) else (
                f"same names in another order {raw.column_names!r}"
            )
            raise SchemaError(
                "The feature names should match those that were passed during fit: "
                f"{detail}; fit saw {list(schema.names)!r}. Select the columns in that order."
            )
    else:
        if raw.num_columns != len(schema.names):
            raise SchemaError(
                f"X has {raw.num_columns} features, but {owner} is expecting {len(schema.names)} features as input; "
                "pass the same columns as in fit"
            )
        if named:
            warnings.warn(
                f"X has feature names, but {owner} was fitted without feature names; columns are taken by position",
                UserWarning,
                stacklevel=3,
            )
        elif schema.from_frame:
            warnings.warn(
                f"X does not have valid feature names, but {owner} was fitted with feature names; columns are taken "
                f"by position as {list(schema.names)!r}",
                UserWarning,
                stacklevel=3,
            )
        raw = raw.rename_columns(list(schema.names))
    for name, kind in zip(schema.names, schema.kinds):
        col = raw.column(name)
        if pa.types.is_null(col.type):
            continue
        try:
            got = kind_of(name, col.type)
        except InputError as exc:
            raise SchemaError(f"{exc}; at fit time it was {kind}") from exc
        if got != kind:
            raise SchemaError(
                f"column {name!r} was {kind} at fit time but has type {col.type} now (first values "
                f"{_first_values(col)!r}); pass the same column types as in fit"
            )
    return canonical(raw, schema)


def as_ids(ids: Any, n: int | None = None, *, what: str = "ids") -> pa.Array:
    """Row ids as an Arrow int64 or string array, checked for nulls (and length when ``n`` is given)."""
    if ids is None:
        if n is None:
            raise InputError(f"{what} are required")
        return pa.array(np.arange(n, dtype=np.int64))
    if isinstance(ids, (str, bytes, int, np.integer)):
        ids = [ids]
    if is_polars(ids) and hasattr(ids, "to_arrow"):
        ids = ids.to_arrow()
    if isinstance(ids, pa.ChunkedArray):
        arr = ids.combine_chunks()
    elif isinstance(ids, pa.Array):
        arr = ids
    else:
        try:
            if hasattr(ids, "to_numpy") and not isinstance(ids, np.ndarray):
                values = ids.to_numpy()
            elif isinstance(ids, (list, tuple)):
                values = np.asarray(ids, dtype=object)  # np.asarray([1, "a"]) would make "1" of the 1
            else:
                values = np.asarray(ids)
        except Exception as exc:
            raise InputError(f"cannot read {what} of type {type(ids).__name__} as a 1d array: {exc}") from exc
        if values.ndim != 1:
            raise InputError(f"{what} must be a 1d sequence of integers or strings, got shape {values.shape}")
        if values.dtype.kind == "O" and len(values) and all(isinstance(v, str) for v in values):
            arr = pa.array(values.tolist(), pa.string())
        else:
            try:
                arr = pa.array(values, from_pandas=True)
            except OverflowError:
                raise _too_big(what, values) from None
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InputError(
                    f"{what} must all be integers or all be strings, got {values[:5].tolist()!r}: {exc}"
                ) from exc
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        try:
            arr = pc.cast(arr, pa.int64())
        except pa.ArrowInvalid:
            raise _too_big(what, arr.to_pylist()) from None
    elif _is_text(arr.type):
        arr = pc.cast(arr, pa.string())
    elif len(arr) == 0:
        arr = pa.array([], pa.int64())
    else:
        sample = arr.slice(0, 3).to_pylist()
        raise InputError(
            f"{what} must be integers or strings, got type {arr.type} (first values {sample!r}); "
            "convert them, e.g. ids.astype(int)"
        )
    if arr.null_count:
        where = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[:5].tolist()
        raise InputError(
            f"{what} contain {arr.null_count} missing value(s) (at positions {where!r}); every row needs an id"
        )
    if n is not None and len(arr) != n:
        raise InputError(f"got {len(arr)} {what} for {n} rows; pass one id per row")
    return arr


def _too_big(what: str, values: Any) -> InputError:
    lo, hi = -(2**63), 2**63 - 1
    big = [v for v in list(values) if isinstance(v, (int, np.integer)) and not lo <= int(v) <= hi][:5]
    return InputError(f"{what} {big!r} do not fit in a signed 64-bit integer; use smaller ids or strings")


def check_unique(ids: pa.Array, *, what: str = "ids") -> None:
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
        raise DuplicateIdError(f"{what} must be unique; repeated: {dup!r}. Give each row its own id")


def id_type_matches(ids: pa.Array, existing: pa.DataType) -> None:
    if ids.type != existing and len(ids):
        kind = lambda t: "strings" if pa.types.is_string(t) else "integers"  # noqa: E731
        raise InputError(
            f"ids {ids.slice(0, 5).to_pylist()!r} are {kind(ids.type)}, but this model's row ids are "
            f"{kind(existing)}; pass ids of the same type as in fit"
        )


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_bucket(hashes: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` buckets each id hash falls in (hash mod n): the one rule behind hash groups and size-bound
    shards, wherever rows are partitioned (fit, changes, a cluster's shuffle, verification, routing)."""
    return (np.asarray(hashes, dtype=np.uint64) % np.uint64(n)).astype(np.int64)


# salt of the held-out (validation) slice: the id hash is mixed again with it before ``hash_bucket``, so which rows
# a member holds out is independent of its shard (hash mod the shard count) and of the clustering sample
HOLDOUT_SALT = np.uint64(0x5BD1E9955BD1E995)
HOLDOUT_BUCKETS = 1 << 20


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def holdout_mask(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows fall in the held-out slice of ``fraction`` of the rows (early stopping, choosing ``combine``):
    a row's id hash, salted and mixed, by ``hash_bucket`` in ``HOLDOUT_BUCKETS`` buckets. A function of the row's
    id alone, so a group holds out the same rows whatever other rows the model holds."""
    salted = _mix(np.asarray(hashes, dtype=np.uint64) ^ HOLDOUT_SALT)
    return hash_bucket(salted, HOLDOUT_BUCKETS) < int(round(fraction * HOLDOUT_BUCKETS))


def id_hash(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hash of each row id (splitmix64 for integers, BLAKE2b for strings).

    The hash fixes hash-shard membership and the clustering sample, so it must never change between
    versions of the library: changing it would silently re-partition every stored model.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if pa.types.is_integer(ids.type):
        return _mix(ids.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64))
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids.to_pylist()):
        out[i] = int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
    return out


def labels_array(y: Any, n: int) -> np.ndarray:
    """Targets as a 1-d numpy array (a column vector is accepted, with scikit-learn's warning), checked for length.

    Missing targets come out as ``None`` (strings and other objects) or NaN (numbers), whatever container
    held them (pandas nullable dtypes, pandas ``str``/``category``, polars, Arrow), so the estimators can
    refuse them with one message.
    """
    if y is None:
        raise InputError(
            "this estimator requires y to be passed, but the target y is None; pass one target per row of X"
        )
    if is_polars(y) and hasattr(y, "to_arrow"):
        y = y.to_arrow()
    elif is_pandas(y) and hasattr(y, "to_numpy"):
        if getattr(y, "ndim", 1) == 2:
            y = y.to_numpy()
        else:
            try:
                y = pa.array(y, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                y = y.to_numpy()
    if isinstance(y, pa.ChunkedArray):
        y = y.combine_chunks()
    if isinstance(y, pa.Array):
        if pa.types.is_dictionary(y.type):
            y = y.dictionary_decode()
        if (pa.types.is_integer(y.type) or pa.types.is_boolean(y.type)) and y.null_count:
            y = np.array(y.to_pylist(), dtype=object)  # nulls as None, values as they are
        else:
            y = y.to_numpy(zero_copy_only=False)
    try:
        y = np.asarray(y)
    except Exception as exc:
        raise InputError(f"cannot read y of type {type(y).__name__} as a 1d array of targets: {exc}") from exc
    if y.ndim == 2 and y.shape[1] == 1:
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
            "(n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(
            f"y should be a 1d array, got an array of shape {y.shape}; clusterforget predicts one target per row"
        )
    if y.dtype.kind == "c":
        raise InputError("Complex data not supported: y holds complex numbers; pass real numbers or class labels")
    if len(y) != n:
        raise InputError(f"X has {n} rows but y has {len(y)}; pass one target per row")
    return y


def weights_array(sample_weight: Any, n: int, *, what: str = "sample_weight") -> np.ndarray:
    """Sample weights as a float64 array of length ``n`` (ones when None), each finite and in [0, 1e12].

    A scalar applies to every row. Errors quote the first bad value and its position."""
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    if is_polars(sample_weight) and hasattr(sample_weight, "to_numpy"):
        sample_weight = sample_weight.to_numpy()
    if isinstance(sample_weight, (pa.Array, pa.ChunkedArray)):
        sample_weight = sample_weight.to_numpy(zero_copy_only=False)
    try:
        w = np.asarray(sample_weight)
        if w.dtype.kind == "b":
            raise InputError(f"{what} must be numbers, got booleans; pass weights such as 1.0 and 0.5")
        w = w.astype(np.float64)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        sample = list(sample_weight[:3]) if hasattr(sample_weight, "__getitem__") else sample_weight
        raise InputError(f"{what} must be numbers, got {sample!r}: {exc}") from None
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.ndim != 1:
        raise InputError(f"{what} must be 1-dimensional, got an array of shape {w.shape}; pass one weight per row")
    if len(w) != n:
        raise InputError(f"got {len(w)} {what} for {n} rows; pass one weight per row")
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0) & (w <= MAX_SAMPLE_WEIGHT)))
    if len(bad):
        i = int(bad[0])
        raise InputError(
            f"{what} must be finite numbers from 0 to {MAX_SAMPLE_WEIGHT:g}, got {float(w[i])!r} at position {i} "
            f"({len(bad)} bad value(s)); weight 0 keeps a row without influence, forget_rows deletes it"
        )
    return w + 0.0  # -0.0 becomes 0.0, so equal weights are equal bits


def take_sorted_by_id(table: pa.Table) -> pa.Table:
    """Rows in canonical order (ascending id): the order every member is trained in."""
    order = pc.sort_indices(table, sort_keys=[(ID, "ascending")])
    return table.take(order)


def combine(tables: Sequence[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables)


class RemoteInput:
    """Training rows that stay where they are, on a cluster (a backend's ``read_input`` makes one).

    ``fit`` and ``add_rows`` bring here only the labels, the ids and the columns the grouping reads; the
    backend's executor trains the members where the rows are (``sources``).
    """

    schema: Schema
    n_rows: int
    labels: Any  # the label column, as numpy
    ids: Any  # the id column as numpy, or None (ids are then numbered by the model)

    def columns(self, names: Sequence[str]) -> pa.Table:
        """These canonical feature columns of every row, in input order, brought here."""
        raise NotImplementedError

    def sources(self, ids: pa.Array) -> tuple:
        """Handles of the full rows on the cluster (id and feature columns), given the rows' ids in input order."""
        raise NotImplementedError
