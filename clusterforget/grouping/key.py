"""Key groups: one group per distinct value (combination) of the key columns; rows route by their key."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import CATEGORICAL, NUMERIC, Schema
from ..errors import ExportError, InputError
from .base import Grouping, Key, key_sort, normalize_value


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
        sizes = [len(v) for v in value_sets]
        if math.prod(sizes) < 2 ** 62:  # one mixed-radix code per key fits int64: match codes by binary search
            combined = np.ravel_multi_index(tuple(known_codes.T), sizes)
            order = np.argsort(combined)
            combined, known_pos = combined[order], known_pos[order]
            rows = np.ravel_multi_index(tuple(row_codes), sizes)
            at = np.minimum(np.searchsorted(combined, rows), len(combined) - 1)
            return np.where(valid & (combined[at] == rows), known_pos[at], -1).astype(np.int64)
        # match rows to known keys as rows of a code matrix (a combined integer code would overflow)
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KeyGroups":
        return cls(d["columns"])

    def parse_key(self, values: Sequence[str], schema: Schema) -> Any:
        """A value per key column ('null' or 'None' for missing); numbers for numeric columns."""
        columns = list(self.columns)
        if len(values) != len(columns):
            raise InputError(f"the grouping has columns {columns!r}, got {list(values)!r}: give one value for each")
        key = []
        for col, v in zip(columns, values):
            if v in ("null", "None"):
                key.append(None)
            elif schema.kind(col) == NUMERIC:
                try:
                    key.append(float(v))
                except ValueError:
                    raise InputError(f"column {col!r} is numeric, so its key must be a number, got {v!r}") from None
            else:
                key.append(v)
        return tuple(key) if len(key) > 1 else key[0]

    def onnx_route(self, g: Any, inputs: dict[str, str], keys: list, schema: Schema, state: Any) -> str:
        """(N,) int64 in an ONNX graph ``g`` (``export.onnx``): each row's position in ``keys``, ``len(keys)`` where
        its group is unknown, as ``route`` finds it; ``inputs`` maps feature names to the graph's inputs."""
        K = len(keys)
        cols = list(self.columns)
        combined, valid, radix, value_sets = None, None, 1, []
        for j, col in enumerate(cols):
            values = sorted({k[j] for k in keys}, key=lambda v: (v is None, str(type(v)), v if v is not None else 0))
            value_sets.append(values)
            if schema.kind(col) == CATEGORICAL:
                if None in values and "" in values:
                    raise ExportError(f"key column {col!r} has both a missing and an empty-string group; the ONNX "
                                      "input writes missing as '', so they cannot be told apart: export 'bundle'")
                keys_ = ["" if v is None else str(v) for v in values]
                idx = g.op("LabelEncoder", [inputs[col]], domain="ai.onnx.ml", keys_strings=keys_,
                           values_int64s=list(range(len(values))), default_int64=-1)
            else:
                if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
                    raise ExportError(f"key column {col!r} has a group of missing numbers, which ONNX cannot look "
                                      "up; export format='bundle' instead")
                idx = g.op("LabelEncoder", [inputs[col]], domain="ai.onnx.ml",
                           keys_tensor=g.tensor([float(v) for v in values], np.float64),
                           values_tensor=g.tensor(np.arange(len(values)), np.int64),
                           default_tensor=g.tensor([-1], np.int64))
            ok = g.op("GreaterOrEqual", [idx, g.const(np.array(0, np.int64))])
            term = g.op("Mul", [idx, g.const(np.array(radix, np.int64))])
            combined = term if combined is None else g.op("Add", [combined, term])
            valid = ok if valid is None else g.op("And", [valid, ok])
            radix *= len(values)
        lookup_keys, lookup_vals = [], []
        for pos, key in enumerate(keys):
            code, r = 0, 1
            for j, v in enumerate(key):
                code += value_sets[j].index(v) * r
                r *= len(value_sets[j])
            lookup_keys.append(code)
            lookup_vals.append(pos)
        routed = g.op("LabelEncoder", [combined], domain="ai.onnx.ml", keys_int64s=lookup_keys,
                      values_int64s=lookup_vals, default_int64=K)
        out = g.op("Where", [valid, routed, g.const(np.array(K, np.int64))])
        return out
