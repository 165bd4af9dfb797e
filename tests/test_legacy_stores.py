"""Stores saved by an earlier version load and predict bitwise what they predicted when they were written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import clusterforget as cf

LEGACY = Path(__file__).resolve().parent / "legacy"
NAMES = sorted(p.name for p in LEGACY.iterdir() if (p / "store").is_dir())


@pytest.mark.parametrize("name", NAMES)
def test_legacy_store_predicts_bitwise_as_when_saved(name, tmp_path):
    pytest.importorskip("xgboost") if name.startswith("xgb") else None
    src = LEGACY / name
    store = tmp_path / "store"
    shutil.copytree(src / "store", store)  # loading takes the lock and may clean up: never on the repo's copy
    model = cf.load(store)
    probe = pd.read_parquet(src / "probe.parquet")
    expected = pq.read_table(src / "expected.parquet").to_pandas().to_numpy()
    got = model.predict_proba(probe) if hasattr(model, "predict_proba") else model.predict(probe).reshape(-1, 1)
    assert np.array_equal(got, expected)
    assert model.groups_ and any(g["pending"] for g in model.groups_)  # the deferred forget is still pending
    # and the model keeps working: retrain the pending member and commit
    report = model.retrain_pending()
    assert report.groups_retrained and cf.load(store).version_ == report.version


def test_a_store_written_before_lines_recorded_their_names_key_is_checked_by_its_ids(tmp_path):
    """The legacy lines carry no ``names_key``: the store loads, and its deletions are checked by their ids (the
    ids hashed under the store's key now need no recorded key); see test_verify_matrix's names_stripped plant for
    a request whose lines lack it."""
    import json

    from conftest import make_table

    src = LEGACY / "lgb-binary-key-route"
    assert not any("names_key" in json.loads(line) for line in (src / "store" / "ledger.jsonl").read_text().splitlines())
    shutil.copytree(src / "store", tmp_path / "store")
    _, _, ids, _ = make_table("binary", n=240, seed=3)  # as tests/legacy/make_stores.py made it
    result = cf.verify(tmp_path / "store", forgotten=ids[:4], checks=("held", "purge"))
    assert result.ok and "names" not in result.checks, str(result)
    assert not cf.verify(tmp_path / "store", forgotten=ids[20:22], checks=("held",)).ok  # ids it still holds


def test_fast_exact_on_the_legacy_store_fails_on_a_pending_member_and_passes_after_its_retrain(tmp_path):
    """The legacy ledger names groups as today does (plain 'south' retrained, the dropped 'tiny' hashed under the
    store's key the same way), but 'south' was forgotten from again with retrain='deferred': the check used to
    report "0 of 4 members retrained" and pass, having compared nothing. It fails naming the pending member and
    what to do; once retrained, the member the request touched is retrained and compared."""
    from conftest import make_table

    shutil.copytree(LEGACY / "lgb-binary-key-route" / "store", tmp_path / "store")
    _, _, ids, _ = make_table("binary", n=240, seed=3)
    for gone in (ids[:4], ids[10:12]):  # the first forget, then the deferred one
        exact = cf.verify(tmp_path / "store", forgotten=gone, checks=("exact",)).checks["exact"]
        assert exact.ok is False and exact.details["members_pending"] == ["south"], exact.summary
        assert "retrain_pending()" in exact.summary and "0 of" not in exact.summary
    assert not cf.verify(tmp_path / "store", forgotten=ids[:4], checks=("exact",), exact="full").ok
    cf.load(tmp_path / "store").retrain_pending()
    for gone in (ids[:4], ids[10:12]):
        exact = cf.verify(tmp_path / "store", forgotten=gone, checks=("exact",)).checks["exact"]
        assert exact.ok and exact.details["members_retrained"] == ["south"], exact.summary
    assert cf.verify(tmp_path / "store", forgotten=ids[:4], checks=("exact",), exact="full").ok
