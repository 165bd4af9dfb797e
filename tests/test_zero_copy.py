"""Deferred forgetting removes rows as zero-copy slices; the buffers that held them are let go at the next
retrain_pending, save or store commit, and after a bounded number of removals from one group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import clusterforget as cf
from clusterforget.ensemble import MAX_CHUNKS
from conftest import FAST, make_table


def _buffers(table: pa.Table) -> list[pa.Buffer]:
    return [b for col in table.columns for chunk in col.chunks for b in chunk.buffers() if b is not None]


def _row_bytes(table: pa.Table, i: int) -> list[int]:
    """Addresses of row ``i``'s values in its fixed-width columns (id, hash, numbers, label)."""
    out = []
    for col in table.columns:
        chunk = col.chunks[0]
        if pa.types.is_integer(chunk.type) or pa.types.is_floating(chunk.type):
            out.append(chunk.buffers()[1].address + (chunk.offset + i) * chunk.type.byte_width)
    return out


def _still_referenced(model, addresses: list[int]) -> bool:
    """Whether a buffer the model holds covers the memory of a forgotten row's values. The test keeps the
    original rows alive, so that memory cannot have been reused by a new allocation."""
    return any(b.address <= a < b.address + b.size for g in model.ensemble_.groups.values()
               for b in _buffers(g.rows) for a in addresses)


def _setup(**kw):
    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1, **kw)
    model.fit(X, y, ids=ids)
    victim = int(ids[40])
    return model, X, y, ids, test, victim, *_held(model, victim)


def _held(model, row_id: int):
    """The group rows holding ``row_id`` (kept alive by the caller) and the addresses of that row's values."""
    g = next(g for g in model.ensemble_.groups.values() if row_id in g.id_index)
    return g.rows, _row_bytes(g.rows, int(np.searchsorted(g.id_index, row_id)))


def test_retrain_pending_drops_the_buffers_of_forgotten_rows():
    model, X, y, ids, test, victim, _rows, addresses = _setup()
    model.forget_rows([victim], retrain="deferred")
    assert _still_referenced(model, addresses)  # zero-copy: the slices still point into the old buffers
    model.retrain_pending()
    assert not _still_referenced(model, addresses)
    keep = ids != victim
    fresh = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST["lightgbm"], n_jobs=1).fit(
        X[keep], y[keep], ids=ids[keep])
    assert np.array_equal(model.predict_proba(test), fresh.predict_proba(test))


def test_save_and_commit_drop_them(tmp_path):
    model, *_, ids, test, victim, _rows, addresses = _setup()
    model.forget_rows([victim], retrain="deferred")
    model.save(tmp_path / "a")
    assert not _still_referenced(model, addresses)
    # bound to a store: the commit of a deferred forget lets go of them too
    _rows2, addresses = _held(model, int(ids[41]))
    model.forget_rows([int(ids[41])], retrain="deferred")
    assert not _still_referenced(model, addresses)
    assert cf.verify(cf.load(tmp_path / "a"), [victim, int(ids[41])]).ok


def test_bounded_number_of_removals():
    model, *_, ids, test, victim, rows, _ = _setup()
    held = rows.column("__cf_id__").to_numpy()
    addresses = _row_bytes(rows, 1)
    for i in held[1: 3 * MAX_CHUNKS: 2].tolist():  # every other row: each removal adds a slice
        model.forget_rows([i], retrain="deferred")
        assert max(g.rows.column("__cf_id__").num_chunks for g in model.ensemble_.groups.values()) <= MAX_CHUNKS
    assert not _still_referenced(model, addresses)
