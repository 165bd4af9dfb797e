"""Verify that forgetting worked: the forgotten rows are gone, and the model is what a fresh fit gives.

>>> import numpy as np, clusterforget as cf
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(300, 3)); y = (X[:, 0] > 0).astype(int)
>>> model = cf.ForgetClassifier(grouping=cf.HashGroups(3), n_jobs=1).fit(X, y)
>>> _ = model.forget_rows([5, 6])
>>> result = cf.verify(model, forgotten=[5, 6], X_probe=X[:50])
>>> result.ok, result.fresh_fit_equal, result.ids_still_held
(True, True, [])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import clone

from ..data import ID, LABEL, as_ids


@dataclass
class VerifyResult:
    """What ``verify`` checked and found; ``ok`` is True only if every check that ran passed."""

    ok: bool
    ids_checked: int = 0
    ids_still_held: list = field(default_factory=list)
    fresh_fit_equal: bool | None = None
    max_abs_diff: float | None = None
    rows_probed: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        parts = ["verified" if self.ok else "VERIFICATION FAILED"]
        if self.ids_checked:
            held = len(self.ids_still_held)
            parts.append(f"{self.ids_checked} forgotten id(s): " + ("none held" if not held else f"{held} STILL HELD"))
        if self.fresh_fit_equal is not None:
            parts.append(
                f"predictions on {self.rows_probed} row(s) "
                + ("identical to a fresh fit" if self.fresh_fit_equal else f"differ from a fresh fit by up to {self.max_abs_diff:g}")
            )
        return "; ".join(parts) + f" ({self.seconds:.2f}s)"


def fresh_fit(model: Any, seed: int = 0) -> Any:
    """A new model with the same settings and output overrides, fitted on the rows ``model`` holds now, in a
    shuffled order."""
    ens = model._ensemble()
    rows = ens.all_rows()
    order = pa.array(np.random.default_rng(seed).permutation(rows.num_rows))
    rows = rows.take(order)
    X = rows.select(list(ens.schema.names))
    y = rows.column(LABEL).to_numpy(zero_copy_only=False)
    fresh = clone(model).fit(X, y, ids=rows.column(ID))
    # output overrides are settings, not fitted state: a fresh fit carries the same ones, in the same order
    for o in ens.overrides:
        fresh.ensemble_.add_override(o.rule_id, o.text, o.mask, o.label)
    return fresh


def verify(model: Any, forgotten: Any = None, X_probe: Any = None, *, seed: int = 0) -> VerifyResult:
    """Check that ``forgotten`` ids are held by no group, and that predictions on ``X_probe`` equal, bitwise,
    those of a fresh fit on the remaining rows (a full retrain: as slow as ``fit``)."""
    t0 = time.perf_counter()
    ens = model._ensemble()
    result = VerifyResult(ok=True)
    if forgotten is not None:
        ids = pc.unique(as_ids(forgotten, what="forgotten ids"))
        result.ids_checked = len(ids)
        held = []
        for g in ens.groups.values():
            held += pc.filter(ids, pc.is_in(ids, value_set=g.rows.column(ID))).to_pylist()
        result.ids_still_held = held
        result.ok &= not held
    if X_probe is not None:
        fresh = fresh_fit(model, seed)
        out = model.predict_proba if hasattr(model, "predict_proba") else model.predict
        a, b = out(X_probe), (fresh.predict_proba if hasattr(fresh, "predict_proba") else fresh.predict)(X_probe)
        equal = a.shape == b.shape and np.array_equal(a, b)
        result.fresh_fit_equal = bool(equal)
        result.max_abs_diff = 0.0 if equal else float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        result.rows_probed = len(a)
        result.ok &= equal
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["verify", "fresh_fit", "VerifyResult"]
