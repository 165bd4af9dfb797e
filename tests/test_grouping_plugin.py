"""A grouping is one module: a toy grouping defined here, in the test only, registers itself by its ``kind`` and is
fitted, forgotten, stored, loaded, verified and routed exactly, with no other file knowing it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.grouping import GROUPINGS, Grouping, grouping_from_dict


class SignGroups(Grouping):
    """Two groups, by the sign of one numeric column (missing: not positive); rows route by it."""

    kind = "sign_test"

    def __init__(self, column: str = "a"):
        self.column = column

    def reads(self, schema):
        return (self.column,)

    def _code(self, table) -> np.ndarray:
        return (np.nan_to_num(table.column(self.column).to_numpy(zero_copy_only=False), nan=0.0) > 0).astype(np.int64)

    def assign(self, rows, state):
        uniq, codes = np.unique(self._code(rows), return_inverse=True)
        return codes.astype(np.int64), [(int(u),) for u in uniq]

    def route(self, X, state, known):
        table = np.full(2, -1, dtype=np.int64)
        for key, pos in known.items():
            table[key[0]] = pos
        return table[self._code(X)]

    def normalize_key(self, key):
        key = key[0] if isinstance(key, tuple) and len(key) == 1 else key
        if key not in (0, 1) or isinstance(key, bool):
            raise cf.InputError(f"a sign group is 0 or 1, got {key!r}")
        return (int(key),)

    def to_dict(self):
        return {"kind": self.kind, "column": self.column}

    @classmethod
    def from_dict(cls, d):
        return cls(d["column"])


@pytest.fixture(autouse=True)
def _registered():
    GROUPINGS[SignGroups.kind] = SignGroups  # defining the class registered it; a reload of this module too
    yield
    GROUPINGS.pop(SignGroups.kind, None)


def test_a_grouping_defined_in_a_test_is_exact_through_every_layer(tmp_path):
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.normal(size=240), "b": rng.normal(size=240)})
    y = (X["a"] * X["b"] > 0).astype(int).to_numpy()
    ids = np.arange(240)
    make = lambda: cf.ForgetClassifier(grouping=SignGroups("a"), combine="route",  # noqa: E731
                                       learner_params={"num_iterations": 10}, n_jobs=1)
    model = make().fit(X, y, ids=ids)
    assert sorted(g["key"] for g in model.groups_) == [0, 1]
    model.save(tmp_path / "store")
    gone = ids[:6]
    model.forget_rows(gone)
    keep = ~np.isin(ids, gone)
    fresh = make().fit(X[keep], y[keep], ids=ids[keep])
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))
    loaded = cf.load(tmp_path / "store")  # the store read the spec back by its kind
    assert isinstance(loaded.ensemble_.grouping, SignGroups)
    assert np.array_equal(loaded.predict_proba(X), fresh.predict_proba(X))
    assert cf.verify(tmp_path / "store", forgotten=list(gone), checks=("purge", "exact"), key=False).ok
    # what depends on the kind is asked of the spec: the command line's keys, the ONNX routing
    assert grouping_from_dict({"kind": "sign_test", "column": "b"}).column == "b"
    assert SignGroups().parse_key(["1"], loaded.ensemble_.schema) == 1
    loaded.forget_group(1)
    assert all(g.key != (1,) for g in loaded.ensemble_.groups.values())
    with pytest.raises(cf.ExportError, match="grouping kind 'sign_test' routes rows in a way the ONNX export"):
        loaded.export(tmp_path / "model.onnx", format="onnx")
