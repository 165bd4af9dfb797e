"""Authenticated stores (issue #11): with a key kept outside the store, every forgery listed is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.store.commit import manifest_checksum
from clusterforget.store.fs import LEDGER, MANIFEST, dumps, sha

FAST = {"num_iterations": 5, "num_leaves": 4, "min_data_in_leaf": 2}
KEY = secrets.token_bytes(32)


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"k": rng.choice(["a", "b"], 80), "x": rng.normal(size=80)})
    y = (X["x"] > 0).astype(int).to_numpy()
    m = cf.ForgetClassifier(grouping="k", learner_params=FAST, n_jobs=1).fit(X, y)
    m.save(tmp_path / "s", key=KEY)
    m.forget_rows([1, 2, 3])
    return tmp_path / "s", X, y


def manifest(path) -> dict:
    return json.loads((path / MANIFEST).read_bytes())


def rewrite(path, doc: dict) -> None:
    """What an attacker without the key does: recompute every checksum the store has."""
    doc["checksum"] = manifest_checksum(doc)
    (path / MANIFEST).write_bytes(dumps(doc))


def test_round_trip_and_tombstones_keyed_with_the_key(store, monkeypatch):
    path, X, y = store
    m = cf.load(path, key=KEY)
    assert m.n_rows_ == 77 and m._store.is_forgotten(2)
    with pytest.raises(cf.TombstoneError):
        m.add_rows(X.iloc[:1], y[:1], ids=[2])
    m.forget_rows([10])
    monkeypatch.setenv("CLUSTERFORGET_KEY", KEY.hex())
    again = cf.load(path)  # the key from the environment
    assert again.n_rows_ == 76 and np.array_equal(again.predict_proba(X), m.predict_proba(X))
    # tombstones are HMACs under the key, not under the store's own secret.key: a copy cannot test ids
    doc = manifest(path)
    tomb = b"".join((path / name).read_bytes() for name in doc["tombstones"])
    secret = bytes.fromhex((path / "secret.key").read_text().strip())
    digest = lambda k, i: hmac.new(k, b"i:%d" % i, hashlib.sha256).digest()  # noqa: E731
    assert digest(KEY, 2) in tomb and digest(secret, 2) not in tomb
    assert all("mac" in e for e in cf.read_ledger(path))


def test_refused_without_the_key_or_with_another(store):
    path, _, _ = store
    with pytest.raises(cf.AuthenticationError, match="pass its key"):
        cf.load(path, key=False)
    with pytest.raises(cf.AuthenticationError, match="another key"):
        cf.load(path, key=secrets.token_bytes(32))


def test_leaf_values_changed_with_recomputed_checksums(store):
    path, _, _ = store
    doc = manifest(path)
    name = next(g["member"]["file"] for g in doc["groups"] if g["member"])
    text = (path / name).read_text()
    forged = re.sub(r"leaf_value=(\S+)", "leaf_value=9.5", text, count=1)
    assert forged != text
    (path / name).write_text(forged)
    doc["files"][name] = sha(forged.encode())
    rewrite(path, doc)
    with pytest.raises(cf.AuthenticationError, match="manifest.*HMAC"):
        cf.load(path, key=KEY)


def test_tombstones_dropped(store):
    path, _, _ = store
    doc = manifest(path)
    for name in doc.pop("tombstones"):
        del doc["files"][name]
        (path / name).unlink()
    doc["tombstones"] = []
    rewrite(path, doc)
    with pytest.raises(cf.AuthenticationError, match="manifest.*HMAC"):
        cf.load(path, key=KEY)


def test_ledger_rewritten_with_its_chain(store):
    path, _, _ = store
    lines = [json.loads(x) for x in (path / LEDGER).read_bytes().splitlines()]
    lines[1]["rows_removed"] = 0  # hide the deletion
    prev, out = "", []
    for line in lines:
        line["prev"] = prev
        data = dumps(line)
        prev = sha(data)
        out.append(data)
    raw = b"\n".join(out) + b"\n"
    (path / LEDGER).write_bytes(raw)
    doc = manifest(path)
    doc["ledger"] = {"size": len(raw), "tail": prev, "lines": len(out)}
    rewrite(path, doc)
    with pytest.raises(cf.AuthenticationError, match="manifest.*HMAC"):
        cf.load(path, key=KEY)
    # the manifest's mac restored by hand: the ledger line's own mac still fails
    good = manifest(path)
    good["mac"] = hmac.new(KEY, b"manifest:" + good["checksum"].encode(), hashlib.sha256).hexdigest()
    (path / MANIFEST).write_bytes(dumps(good))
    with pytest.raises(cf.AuthenticationError, match="line 2"):
        cf.load(path, key=KEY)


def test_authentication_stripped(store):
    path, _, _ = store
    doc = manifest(path)
    doc.pop("auth")
    doc.pop("mac")
    rewrite(path, doc)
    with pytest.raises(cf.AuthenticationError, match="not authenticated"):
        cf.load(path, key=KEY)


def test_unauthenticated_store_saved_with_a_key_keeps_refusing_forgotten_ids(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int)
    m = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=FAST, n_jobs=1).fit(X, y)
    m.save(tmp_path / "plain")
    m.forget_rows([5])
    m.save(tmp_path / "keyed", key=KEY)
    m.forget_rows([6])
    keyed = cf.load(tmp_path / "keyed", key=KEY)
    assert keyed._store.tombstoned([5, 6, 7]) == [5, 6]
    with pytest.raises(cf.StoreError, match="same key"):
        keyed.save(tmp_path / "other", key=False)
    assert cf.load(tmp_path / "plain").n_rows_ == 59  # without a key: as before
