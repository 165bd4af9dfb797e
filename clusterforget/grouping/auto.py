"""The default grouping: hash shards whose number is a pure function of the training rows (``resolve``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..errors import InputError
from .base import Grouping, Key
from .hash import HashGroups


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoGroups":
        return cls(min_shard_rows=d["min_shard_rows"], min_minority_rows=d["min_minority_rows"], max_k=d["max_k"])


_AUTO_DEFAULT = AutoGroups()
