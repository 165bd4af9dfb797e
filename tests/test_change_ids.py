"""The ids a change removes, adds or reweights reach the store beside the report (``ensemble.Outcome``), never in it.

The ledger names them by the store's keyed hash only, and the store hashes only the ids the change carries (not
every row of the rows files it writes).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

import clusterforget as cf
from clusterforget.estimators import store_of
from clusterforget.store import tombstones
from clusterforget.store.commit import read_ledger
from conftest import FAST, make_table


def _model(tmp_path, n=300):
    X, y, ids, _ = make_table("binary", n=n + 40, str_ids=True)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1)
    model.fit(X.iloc[:n], y[:n], ids=ids[:n])
    model.save(tmp_path / "s")
    return model, X, y, ids


def _no_ids(report: cf.Report, ids) -> None:
    """No field of the report holds an array, and no id appears in any field (ids are ``user-00....``)."""
    text = repr(vars(report)) + repr(report.to_dict()) + str(report)
    assert not any(i in text for i in ids)
    assert not any(hasattr(getattr(report, f.name), "__array__") or hasattr(getattr(report, f.name), "to_pylist")
                   for f in dataclasses.fields(report))


def test_reweighted_ids_go_to_the_ledger_as_digests_only(tmp_path):
    model, X, y, ids = _model(tmp_path)
    chosen = list(ids[:5])
    report = model.reweight(chosen, 3.0)
    _no_ids(report, chosen)
    assert report.rows_reweighted == 5 and set(report.to_dict()) == {f.name for f in dataclasses.fields(report)}
    line = read_ledger(tmp_path / "s")[-1]
    store = store_of(model)
    assert line["reweighted"]["count"] == 5
    assert sorted(line["reweighted"]["hmac_sha256"]) == sorted(store.digest(i) for i in chosen)
    assert not any(i in json.dumps(line) for i in chosen)


def test_readded_hashes_only_the_added_ids(tmp_path, monkeypatch):
    model, X, y, ids = _model(tmp_path)
    gone = list(ids[:3])
    model.forget_rows(gone)
    calls = []
    real = tombstones.Names.id

    def counting(self, value):
        calls.append(value)
        return real(self, value)

    monkeypatch.setattr(tombstones.Names, "id", counting)
    report = model.add_rows(X.iloc[:3], y[:3], ids=gone, allow_forgotten=True)
    monkeypatch.undo()
    _no_ids(report, gone)
    # the store hashes the 3 added ids, then those it found tombstoned (for the ledger): never the other rows of
    # the groups it rewrote
    assert sorted(set(calls)) == sorted(gone) and len(calls) <= 2 * len(gone), len(calls)
    line = read_ledger(tmp_path / "s")[-1]
    assert line["readded"]["count"] == 3
    assert sorted(line["readded"]["hmac_sha256"]) == sorted(store_of(model).digest(i) for i in gone)


@pytest.mark.parametrize("op", ["retrain_pending", "set_group_weight"])
def test_pending_and_weight_are_changes_planned_then_executed(tmp_path, op, monkeypatch):
    from clusterforget import ensemble

    model, X, y, ids = _model(tmp_path)
    model.forget_rows(ids[:4], retrain="deferred")
    seen = []
    real = ensemble.plan
    monkeypatch.setattr(ensemble, "plan", lambda state, change: seen.append(change) or real(state, change))
    dry = model.retrain_pending(dry_run=True) if op == "retrain_pending" else None
    report = model.retrain_pending() if op == "retrain_pending" else model.set_group_weight("south", 0.5)
    assert report.operation == op and [c.operation for c in seen][-1] == op
    if dry is not None:
        assert dry.groups_retrained == report.groups_retrained and report.groups_pending == []
        assert model.retrain_pending().note == "nothing was pending"
    else:
        assert report.groups_pending and not report.is_deletion
