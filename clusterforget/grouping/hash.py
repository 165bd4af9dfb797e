"""Hash shards: ``k`` groups by a stable hash of the row id; not routable, so members average."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..data import HASH, hash_bucket
from ..errors import InputError, UnknownGroupError
from .base import Grouping, Key


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HashGroups":
        return cls(d["k"])
