"""The six ways deletion evidence passed when the deletion did not hold (or failed when it did), one test each.

Each test failed on the code before the fix; the whole matrix of checks x groupings x stores x plants is in
tests/test_verify_matrix.py.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf
from clusterforget.store.commit import manifest_checksum
from clusterforget.verify import verify_store
from conftest import DATA

KEY = "3f" * 32


@pytest.fixture(scope="module")
def titanic():
    df = pd.read_csv(DATA / "titanic.csv")
    y = df.pop("survived").to_numpy()
    return df, y


def _model(titanic, **kw):
    X, y = titanic
    return cf.ForgetClassifier(grouping="pclass", n_jobs=1, learner_params={"num_iterations": 20}, **kw).fit(X, y)


def _fix_checksums(store, rel, data=None):
    """What anyone who can write the store can do: change a file and recompute its sha256 and the manifest's."""
    if data is not None:
        (store / rel).write_bytes(data)
    doc = json.loads((store / "manifest.json").read_text())
    doc["files"][rel] = hashlib.sha256((store / rel).read_bytes()).hexdigest()
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))


def test_1_keyed_stores_name_ids_with_the_key_outside_the_store(tmp_path, titanic):
    X, y = titanic
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store, key=KEY)
    model.forget_rows([17, 42], request_id="REQ-1")
    # a genuinely forgotten id is found in the tombstones (it was looked up under the store's secret.key)
    assert cf.verify(model, forgotten=[42], checks=("purge",)).ok
    cert = cf.certificate(model, "REQ-1", key=KEY)
    assert cf.verify_certificate(cert, store, key=KEY).ok
    model.add_rows(X.iloc[[17]], y[[17]], ids=[17], allow_forgotten=True)
    # row 17 is back in a rows file: neither the certificate nor purge may pass
    res = cf.verify_certificate(cert, store, key=KEY)
    assert not res.ok and res.checks["purge"].ok is False
    assert not cf.verify(model, request_id="REQ-1", checks=("purge",)).ok
    # every reader authenticates a keyed store, and refuses it without its key, as cf.load does
    with pytest.raises(cf.AuthenticationError):
        cf.verify(str(store), request_id="REQ-1", checks=("purge",), key=False)
    res = cf.verify_certificate(cert, store, key=KEY, store_key="cd" * 32)
    assert not res.ok and res.checks["store"].ok is False
    from click.testing import CliRunner

    from clusterforget.cli import cli

    key_file = tmp_path / "key.hex"
    key_file.write_text(KEY)
    out = CliRunner().invoke(cli, ["verify", str(store), "--request-id", "REQ-1", "--checks", "purge"],
                             env={"CLUSTERFORGET_KEY": None, "CLUSTERFORGET_KEY_FILE": None})
    assert isinstance(out.exception, cf.AuthenticationError), out.output  # the command line maps it to exit 3
    out = CliRunner().invoke(cli, ["verify", str(store), "--request-id", "REQ-1", "--checks", "purge", "--key", str(key_file)])
    assert out.exit_code == 1 and "FAIL" in out.output, (out.output, out.exception)  # row 17 is back
    # the authentication stripped (manifest mac and auth removed, checksum fixed): the certificate fails
    doc = json.loads((store / "manifest.json").read_text())
    del doc["auth"], doc["mac"]
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))
    res = cf.verify_certificate(cert, store, key=KEY)
    assert not res.ok and "stripped" in res.checks["store"].summary
    # a key given for the store is binding: every reader refuses the stripped store, none reads it as unkeyed
    with pytest.raises(cf.AuthenticationError, match="not authenticated"):
        verify_store(store, request_id="REQ-1", checks="held", key=KEY, store_key=KEY)
    with pytest.raises(cf.AuthenticationError, match="not authenticated"):
        cf.certificate(str(store), "REQ-1", key="cd" * 32, store_key=KEY)
    assert not cf.verify_certificate(cert, store, key=KEY, store_key=KEY).ok
    for args in (["--ids", "42", "--key", str(key_file)], ["--request-id", "REQ-1", "--store-key", str(key_file)]):
        out = CliRunner().invoke(cli, ["verify", str(store), *args])
        assert isinstance(out.exception, cf.AuthenticationError), (args, out.output)
    out = CliRunner().invoke(cli, ["certificate", str(store), "--request-id", "REQ-1", "--store-key", str(key_file)],
                             env={"CLUSTERFORGET_KEY": "cd" * 32})
    assert isinstance(out.exception, cf.AuthenticationError), out.output


def test_2_fast_exact_retrains_the_members_the_ledger_names(tmp_path, titanic):
    X, y = titanic
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    before = {g.name: g.member for g in model.ensemble_.groups.values()}
    rows_before = {g.name: g.rows for g in model.ensemble_.groups.values()}
    report = model.forget_rows([17, 42], request_id="REQ-1")
    touched = sorted(report.groups_retrained)
    for how in ({"request_id": "REQ-1"}, {"forgotten": [17, 42]}):
        check = cf.verify(model, checks=("exact",), **how).checks["exact"]
        assert check.ok and sorted(check.details["members_retrained"]) == touched, check.summary
        assert "0 of" not in check.summary and all(f"'{n}' (ledger" in check.summary for n in touched)
    # the pre-deletion member put back, with its row count, sha256 and the manifest checksum fixed
    name = touched[0]
    doc = json.loads((store / "manifest.json").read_text())
    entry = next(g for g in doc["groups"] if g["name"] == name)
    old = before[name]
    entry["member"]["meta"]["n_rows"] = next(g.n_rows for g in model.ensemble_.groups.values() if g.name == name)
    (store / entry["member"]["file"]).write_bytes(old.model_bytes())
    (store / "manifest.json").write_text(json.dumps(doc))
    _fix_checksums(store, entry["member"]["file"])
    assert any(i in rows_before[name].column("__cf_id__").to_pylist() for i in (17, 42))
    for how in ({"request_id": "REQ-1"}, {"forgotten": [17, 42]}):
        res = cf.verify(str(store), checks=("exact",), **how)
        assert not res.ok and name in res.checks["exact"].details["members_differ"], str(res)


def test_3_an_unkeyed_stores_own_secret_is_not_trusted(tmp_path, titanic):
    X, y = titanic
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    model.forget_rows([17, 42], request_id="REQ-1")
    cert = cf.certificate(model, "REQ-1", key=KEY)
    res = cf.verify_certificate(cert, store, key=KEY)
    assert res.ok and "proves nothing against whoever can write the store" in res.checks["proves"].summary
    model.add_rows(X.iloc[[17]], y[[17]], ids=[17], allow_forgotten=True)
    (store / "secret.key").write_text(os.urandom(32).hex() + "\n")
    _fix_checksums(store, "secret.key")
    res = cf.verify_certificate(cert, store, key=KEY)
    assert not res.ok and res.checks["names"].ok is False
    res = cf.verify(str(store), request_id="REQ-1", checks=("purge", "exact"))
    assert not res.ok and res.checks["names"].ok is False and "secret.key was replaced" in str(res)


def test_4_stale_rows_put_back_are_kept_as_evidence_and_fail_purge(tmp_path, titanic):
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    saved = {r: (store / r).read_bytes() for r in json.loads((store / "manifest.json").read_text())["files"]
             if r.startswith("rows/")}
    model.forget_rows([17, 42], request_id="REQ-1")
    stale = [r for r in saved if not (store / r).exists()]
    assert stale
    for r in stale:
        (store / r).write_bytes(saved[r])
    loaded = cf.load(store)
    assert all((store / r).exists() for r in stale)  # load's clean-up does not remove them
    res = cf.verify(loaded, request_id="REQ-1", checks=("purge",))
    assert not res.ok and all(r in res.checks["purge"].summary for r in stale), str(res)
    # a documented command removes them, and records that it did
    removed = cf.remove_unreferenced(store)
    assert sorted(removed) == sorted(stale)
    assert cf.read_ledger(store)[-1]["operation"] == "remove_unreferenced"
    assert cf.verify(cf.load(store), request_id="REQ-1", checks=("purge",)).ok


def test_5_the_manifest_records_the_environment_and_exact_names_a_mismatch(tmp_path, titanic):
    import lightgbm

    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    model.forget_rows([17, 42], request_id="REQ-1")
    env = json.loads((store / "manifest.json").read_text())["environment"]
    assert set(env) >= {"clusterforget", "lightgbm", "xgboost", "numpy", "pyarrow", "scikit-learn"}
    assert env["lightgbm"] == lightgbm.__version__
    doc = json.loads((store / "manifest.json").read_text())
    doc["environment"]["lightgbm"] = "4.3.0"  # as if written under another LightGBM
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))
    with pytest.warns(cf.EnvironmentWarning, match="lightgbm"):
        loaded = cf.load(store)
    res = cf.verify(loaded, request_id="REQ-1", checks=("exact",))
    summary = res.checks["exact"].summary
    assert not res.ok and f"lightgbm 4.3.0 (here {lightgbm.__version__})" in summary
    assert "pip install" in summary and "lightgbm==4.3.0" in summary


def test_6_requests_are_unambiguous(tmp_path, titanic):
    X, y = titanic
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    model.forget_rows([17], request_id="REQ-1", retrain="deferred")
    model.retrain_pending(request_id="REQ-1")
    model.forget_rows([42], request_id="REQ-1")  # a request served in three operations
    for bad in ({"forgotten": []}, {"request_id": ""}, {"request_id": "  "}):
        with pytest.raises(cf.InputError):
            cf.verify(model, checks=("purge",), **bad)
    with pytest.raises(cf.ClusterForgetError):
        cf.verify(model, forgotten=["17"])
    with pytest.raises(cf.ClusterForgetError):
        cf.verify(model, forgotten=["17"], checks=("purge", "exact"))
    # the certificate covers every operation of the request: both ids
    cert = cf.certificate(model, "REQ-1", key=KEY)
    assert cert["ids"]["count"] == 2 and len(cert["ledger"]["lines"]) == 3
    assert cf.verify_certificate(cert, store, key=KEY).ok
    model.add_rows(X.iloc[[17]], y[[17]], ids=[17], allow_forgotten=True)  # the first operation's id
    res = cf.verify_certificate(cert, store, key=KEY)
    assert not res.ok and res.checks["readded"].ok is False


def test_4_the_command_line_removes_unreferenced_files_and_records_it(tmp_path, titanic):
    from click.testing import CliRunner

    from clusterforget.cli import cli

    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    (store / "rows" / "copy.parquet").write_bytes(b"PAR1 not really")
    res = CliRunner().invoke(cli, ["remove-unreferenced", str(store), "--yes"])
    assert res.exit_code == 0, res.output
    assert not (store / "rows" / "copy.parquet").exists()
    assert cf.read_ledger(store)[-1]["removed"] == ["rows/copy.parquet"]
    assert cf.verify(cf.load(store), checks=("purge",)).ok


def test_4_remove_unreferenced_holds_the_lock_from_listing_to_removal(tmp_path, titanic, monkeypatch):
    import click
    from click.testing import CliRunner

    from clusterforget.cli import cli

    store = tmp_path / "s"
    _model(titanic).save(store)
    bad = "rows/copy\x1b]0;x\x07.parquet"  # a name is data: printed with its control characters escaped
    (store / bad).write_bytes(b"PAR1 not really")
    asked = []

    def confirm(*args, **kwargs):
        # while the user looks at the list: no writer can change the store, and a file put there now stays
        with pytest.raises(cf.LockError):
            cf.load(store, lock_timeout=0.1)
        (store / "rows" / "later.parquet").write_bytes(b"PAR1 later")
        asked.append(args)
        return True

    monkeypatch.setattr(click, "confirm", confirm)
    res = CliRunner().invoke(cli, ["remove-unreferenced", str(store)])
    assert res.exit_code == 0 and asked, (res.output, res.exception)
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "1 unreferenced file(s):\nrows/copy\\x1b]0;x\\x07.parquet" in res.output, res.output
    assert "removed 1 file(s), recorded in the ledger:\nrows/copy\\x1b" in res.output, res.output
    assert not (store / bad).exists() and (store / "rows" / "later.parquet").exists()
    assert cf.read_ledger(store)[-1]["removed"] == [bad]
    # declined: nothing removed, nothing recorded
    monkeypatch.setattr(click, "confirm", lambda *a, **k: False)
    res = CliRunner().invoke(cli, ["remove-unreferenced", str(store)])
    assert res.exit_code == 1 and (store / "rows" / "later.parquet").exists()
    assert cf.read_ledger(store)[-1]["removed"] == [bad]


def test_4_load_removes_only_what_an_interrupted_commit_left_and_records_it(tmp_path, titanic):
    from clusterforget.estimators import store_of

    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store)
    version = json.loads((store / "manifest.json").read_text())["version"]
    attempt = f"rows/{version + 1}-{'0' * 16}.parquet"  # what a commit killed before its manifest swap wrote
    (store / attempt).write_bytes(b"PAR1 half a file")
    (store / "manifest.json.tmp-deadbeef").write_bytes(b"{")
    foreign = "rows/0-copy.parquet"  # not named like a commit's file, or of an older version: evidence
    (store / foreign).write_bytes(b"PAR1 a copy")
    loaded = cf.load(store)
    assert not (store / attempt).exists() and not (store / "manifest.json.tmp-deadbeef").exists()
    assert (store / foreign).exists()
    assert store_of(loaded).recovered == sorted([attempt, "manifest.json.tmp-deadbeef"])
    res = cf.verify(loaded, checks=("purge",))
    assert not res.ok and foreign in res.checks["purge"].summary
    loaded.forget_rows([5], request_id="REQ-2")
    assert cf.read_ledger(store)[-1]["recovered"] == sorted([attempt, "manifest.json.tmp-deadbeef"])


@pytest.mark.parametrize("named", [[], ["no-such-group"]])
def test_2_zero_members_retrained_is_not_a_pass_when_the_request_touched_members(tmp_path, named):
    from test_verify_matrix import REQ, World

    world = World(tmp_path / "s", "key1", "unkeyed")
    assert cf.verify(world.root, request_id=REQ, checks=("exact",)).ok
    doc = json.loads((world.root / "manifest.json").read_text())
    world._rechain(world.root, doc)  # names another group; now make it name none that can be found
    raw = (world.root / "ledger.jsonl").read_bytes().splitlines()
    lines = [json.loads(r) for r in raw]
    pos = next(i for i, e in enumerate(lines) if e.get("request_id") == REQ)
    lines[pos]["groups_retrained"] = named
    prev, out = "", []
    for e in lines:
        e["prev"] = prev
        b = json.dumps(e, sort_keys=True, separators=(",", ":")).encode()
        prev = hashlib.sha256(b).hexdigest()
        out.append(b)
    data = b"\n".join(out) + b"\n"
    (world.root / "ledger.jsonl").write_bytes(data)
    doc["ledger"] = {"size": len(data), "tail": prev, "lines": len(out)}
    doc["checksum"] = manifest_checksum(doc)
    (world.root / "manifest.json").write_text(json.dumps(doc))
    res = cf.verify(world.root, request_id=REQ, checks=("exact",))
    assert not res.ok and ("name no group" in str(res) or "none of which can be found" in str(res)), str(res)


def test_7_a_request_that_removed_no_row_is_not_verified_nor_certified(tmp_path, titanic):
    X, y = titanic
    store = tmp_path / "s"
    model = _model(titanic)
    model.save(store, key=False)
    reports = {
        "REQ-ADD": model.add_rows(X.iloc[[3]], y[[3]], ids=[10_000], request_id="REQ-ADD"),
        "REQ-RELABEL": model.relabel(ids=[5], label=1 - y[5], request_id="REQ-RELABEL"),
        "REQ-REWEIGHT": model.reweight([6], [2.0], request_id="REQ-REWEIGHT"),
        "REQ-WEIGHT": model.set_group_weight(1, 0.5, request_id="REQ-WEIGHT"),
    }
    deferred = model.forget_rows([7], retrain="deferred", request_id="REQ-DEFER")
    pending = model.retrain_pending(request_id="REQ-DEFER")
    dropped = model.forget_group(3, request_id="REQ-GROUP")
    assert all(not r.is_deletion for r in reports.values()) and not pending.is_deletion
    assert deferred.is_deletion and dropped.is_deletion
    lines = {e.get("request_id"): e for e in cf.read_ledger(store) if e.get("operation") != "retrain_pending"}
    assert [rid for rid, e in lines.items() if e["is_deletion"]] == ["REQ-DEFER", "REQ-GROUP"]
    for rid in reports:
        for checks in (("held",), ("purge",), ("exact",), ("held", "purge", "exact")):
            res = cf.verify(store, request_id=rid, checks=checks)
            assert not res.ok and res.checks["request"].ok is False and "removed no row" in str(res), str(res)
            assert all(res.checks[c].ok is False for c in checks)
        with pytest.raises(cf.CertificateError, match="removed no row"):
            cf.certificate(model, rid, key=KEY)
    # a deferred forget and its retrain, and a dropped group, are deletions that verify and are certified
    for rid in ("REQ-DEFER", "REQ-GROUP"):
        assert cf.verify(store, request_id=rid, checks=("held", "purge", "exact")).ok
        assert cf.verify_certificate(cf.certificate(model, rid, key=KEY), store, key=KEY).ok
