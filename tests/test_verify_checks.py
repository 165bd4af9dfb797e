"""verify's checks catch each planted failure, pass on honest stores, and certificates resist tampering."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import clusterforget as cf
from clusterforget.data import ID
from clusterforget.store.fs import parquet_bytes
from clusterforget.verify import certificate_for, verify_store
from clusterforget.verify.mia import check_mia
from conftest import make_table
from test_contract import GROUPINGS, build

KEY = "ab" * 32


def _forgotten_store(tmp_path, grouping="key-route", learner="lightgbm", task="binary", str_ids=False, n=5):
    X, y, ids, test = make_table(task, str_ids=str_ids)
    # one thread: these models are tiny, and OpenMP threads only wait on a busy machine
    model = build(learner, task, grouping).set_params(n_jobs=1).fit(X, y, ids=ids)
    model.save(tmp_path / "store")
    gone = np.arange(3, 3 + n)  # rows 3.. (rows 0-2 are the tiny group)
    before = {gid: g.rows for gid, g in model.ensemble_.groups.items()}
    model.forget_rows(ids[gone], request_id="REQ-1", audit=True)
    return model, X, y, ids, test, gone, before


@pytest.mark.parametrize("grouping,learner,task", [(g, "lightgbm", "binary") for g in GROUPINGS]
                         + [("kmeans-route", "xgboost", "multiclass"), ("key-route", "lightgbm", "regression")])
def test_every_check_passes_on_an_honest_store(tmp_path, grouping, learner, task):
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, grouping, learner, task, str_ids=grouping == "hash")
    res = cf.verify(model, forgotten=ids[gone], checks=("purge", "exact", "diff"), X_forgotten=X.iloc[gone],
                    y_forgotten=y[gone], request_id="REQ-1")
    assert res.ok, str(res)
    assert res.checks["purge"].ok and res.checks["exact"].ok and res.fresh_fit_equal
    assert res.checks["exact"].details["members_retrained"]  # the affected members were retrained and compared
    assert "auc" in res.checks["diff"].details["audits"][0]
    doc = json.loads(res.to_json())
    assert doc["ok"] and doc["checks"]["purge"]["status"] == "pass"
    assert "purge" in str(res) and "exact" in str(res)
    # the command line's function, on the store alone (read-only): the ledger line names the ids and groups
    by_store = verify_store(tmp_path / "store", request_id="REQ-1", checks="purge,exact", key=KEY)
    assert by_store.ok and by_store.signature, str(by_store)


def test_fast_exact_agrees_with_a_full_refit_and_retrains_only_affected_members(tmp_path):
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "hash")
    fast = cf.verify(model, forgotten=ids[gone], checks=("exact",), X_probe=test)
    full = cf.verify(model, forgotten=ids[gone], checks=("exact",), X_probe=test, exact="full")
    assert fast.ok and full.ok and full.fresh_fit_equal
    fresh = cf.verify.__globals__["fresh_fit"](model)
    assert np.array_equal(fresh.predict_proba(test), model.predict_proba(test))
    retrained = fast.checks["exact"].details["members_retrained"]
    assert 0 < len(retrained) <= len(gone) and len(retrained) <= len(model.ensemble_.groups)


def _member_with_row(model, before, forgotten_id):
    """A member for the group that held ``forgotten_id``, trained on its rows *including* that row."""
    ens = model.ensemble_
    for gid, rows in before.items():
        if pc.any(pc.equal(rows.column(ID), pa.scalar(forgotten_id, rows.column(ID).type))).as_py():
            member = ens.learner.train(rows, ens.schema, ens.task, 1)
            member.n_rows = ens.groups[gid].n_rows  # hide the extra row from the row count, too
            return gid, member
    raise AssertionError("no group held the id")


@pytest.mark.parametrize("how", ["ledger", "ids"])
def test_exact_catches_a_member_secretly_trained_with_a_forgotten_row(tmp_path, how):
    model, X, y, ids, test, gone, before = _forgotten_store(tmp_path, "hash")
    gid, planted = _member_with_row(model, before, ids[gone[0]])
    ens = model.ensemble_
    model.ensemble_ = ens.evolve(groups={**ens.groups, gid: ens.groups[gid].with_member(planted)})
    if how == "ledger":  # the store alone: which groups held the rows comes from the ledger line
        res = cf.verify(model, checks=("exact",), request_id="REQ-1")
    else:  # no store knowledge: hash shards follow from the ids
        model._store = None
        res = cf.verify(model, forgotten=ids[gone], checks=("exact",))
    assert not res.ok and res.checks["exact"].ok is False
    assert model.ensemble_.groups[gid].name in res.checks["exact"].details["members_differ"]


def test_exact_catches_global_state_left_unrefitted(tmp_path):
    X, y, ids, test = make_table("binary")
    model = build("lightgbm", "binary", "kmeans-route").fit(X, y, ids=ids)
    ens = model.ensemble_
    old_state = ens.state
    h = np.concatenate([g.rows.column("__cf_hash__").to_numpy() for g in ens.groups.values()])
    all_ids = np.concatenate([g.rows.column(ID).to_numpy() for g in ens.groups.values()])
    in_sample = all_ids[np.argsort(h)[:30]]  # rows of the clustering sample: forgetting them refits it
    report = model.forget_rows(in_sample)
    assert report.clustering_refit
    assert cf.verify(model, checks=("exact",)).ok
    refit = model.ensemble_
    if report.clustering_changed:
        model.ensemble_ = refit.evolve(state=old_state)
    else:  # the refit came out equal: plant a shifted centroid instead
        import copy

        stale = copy.deepcopy(refit.state)
        stale.centroids = stale.centroids + 1.0
        model.ensemble_ = refit.evolve(state=stale)
    res = cf.verify(model, checks=("exact",))
    assert not res.ok and any("clustering" in p for p in res.checks["exact"].details["problems"])

    # a class list not re-derived from the labels held
    model.ensemble_ = refit
    model2 = build("lightgbm", "binary", "hash").fit(X, y, ids=ids)
    model2.ensemble_ = model2.ensemble_.evolve(classes=np.array([0, 1, 2]))
    res2 = cf.verify(model2, checks=("exact",))
    assert not res2.ok and any("classes" in p for p in res2.checks["exact"].details["problems"])


def test_full_exact_refits_with_the_settings_the_members_were_trained_with(tmp_path):
    """Parameters set after fit take effect at the next fit (scikit-learn's rule): the members, a forget's retrain
    and a store's fitted_with keep the old ones, so the full refit must too. It refitted with the new ones and
    failed an honest model (and store) with "members differ"."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    X, y, ids, _ = make_table("binary")
    impute = ColumnTransformer([("i", SimpleImputer(strategy="median"), ["a", "b"])])
    model = cf.ForgetClassifier(grouping="region", combine="auto", preprocessor=impute,
                                learner_params={"num_iterations": 15}, n_jobs=1).fit(X, y, ids=ids)
    model.set_params(class_weight="balanced", validation_fraction=0.3, early_stopping=True, preprocessor=None)
    model.save(tmp_path / "s", key=False)
    model.forget_rows(ids[:3], request_id="R")
    for target in (model, tmp_path / "s"):
        res = cf.verify(target, request_id="R", checks=("exact",), exact="full", key=False)
        assert res.ok, str(res)
    assert cf.verify(model, forgotten=ids[:3], checks=("exact",), exact="fast").ok


@pytest.mark.parametrize("change", [dict(grouping="colour"), dict(combine="average"), dict(max_group_rows=50),
                                    dict(learner_params={"num_iterations": 5}), dict(random_state=3)],
                         ids=["grouping", "combine", "max-group-rows", "learner-params", "seed"])
def test_full_exact_refits_with_the_grouping_and_learner_the_model_was_fitted_with(change):
    X, y, ids, _ = make_table("binary")
    model = cf.ForgetClassifier(grouping="region", combine="route", learner_params={"num_iterations": 15},
                                n_jobs=1).fit(X, y, ids=ids)
    model.set_params(**change)
    model.forget_rows(ids[:3])
    res = cf.verify(model, forgotten=ids[:3], checks=("exact",), exact="full")
    assert res.ok, str(res)


def test_full_exact_passes_a_model_with_a_group_weight_and_compares_its_members(tmp_path):
    """A group weight is a setting (as an output override): the full refit carries it, so an honest model
    passes; and the full refit compares every member's bytes, not only predictions."""
    X, y, ids, test = make_table("binary")
    model = build("lightgbm", "binary", "hash").set_params(n_jobs=1).fit(X, y, ids=ids)
    model.forget_rows(ids[3:6])
    key = model.ensemble_.groups[next(iter(model.ensemble_.groups))].key
    model.set_group_weight(key, 2.5)
    res = cf.verify(model, forgotten=ids[3:6], checks=("exact",), exact="full")
    assert res.ok, str(res)
    assert "every member byte-identical" in res.checks["exact"].summary


def test_exact_catches_a_combine_choice_left_stale():
    """combine="auto" on keys is fitted state (FITTED_STATE): a choice not re-derived after a change fails the
    fast check too, not only a full refit."""
    from test_contract import _flip_world

    X, y, ids = _flip_world()
    model = cf.ForgetClassifier(grouping="key", learner_params={"num_iterations": 20}, n_jobs=1).fit(X, y, ids=ids)
    model.forget_rows(ids[:4])
    assert cf.verify(model, forgotten=ids[:4], checks=("exact",)).ok
    choice, r, a = model.ensemble_.combine_choice
    model.ensemble_ = model.ensemble_.evolve(combine_choice=("average" if choice == "route" else "route", r, a))
    res = cf.verify(model, forgotten=ids[:4], checks=("exact",))
    assert not res.ok and any("combine" in p for p in res.checks["exact"].details["problems"])


@pytest.mark.parametrize("where", ["rows/0-stale.parquet", "manifest.json.tmp-crashed", "exports/copy.parquet"])
def test_purge_catches_stale_parquet_and_temp_files_holding_forgotten_rows(tmp_path, where):
    model, X, y, ids, test, gone, before = _forgotten_store(tmp_path, "key-route", str_ids=True)
    held = next(rows for rows in before.values()
                if pc.any(pc.is_in(rows.column(ID), value_set=pa.array(ids[gone].tolist()))).as_py())
    target = tmp_path / "store" / where
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(parquet_bytes(held))
    # the store alone is enough: the ids' keyed hashes in the ledger find the rows
    res = cf.verify(tmp_path / "store", checks=("purge",), request_id="REQ-1")
    purge = res.checks["purge"]
    assert not res.ok and purge.details["found"][where]["ids"] > 0
    assert where in purge.details["unreferenced"]
    # and never in the store's own files
    assert set(purge.details["found"]) == {where}


def test_purge_finds_forgotten_rows_without_ids_and_ids_in_text(tmp_path):
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "hash", str_ids=True)
    store = tmp_path / "store"
    X.iloc[gone].to_csv(store / "export.csv", index=False)  # an export inside the store: features only
    (store / "rows" / "notes.txt").write_text(f"request for {ids[gone[1]]}\n")
    res = cf.verify(model, forgotten=ids[gone], checks=("purge",), X_forgotten=X.iloc[gone])
    found = res.checks["purge"].details["found"]
    assert not res.ok
    assert found["export.csv"]["feature_rows"] == len(gone)
    assert found["rows/notes.txt"]["ids"] == 1


def test_purge_flags_an_unreferenced_file_and_an_id_never_forgotten(tmp_path):
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "hash")
    store = tmp_path / "store"
    assert cf.verify(model, checks=("purge",)).ok
    (store / "members" / "9-orphan.txt").write_bytes(b"tree\n")
    res = cf.verify(model, checks=("purge",))
    assert not res.ok and res.checks["purge"].details["unreferenced"] == ["members/9-orphan.txt"]
    (store / "members" / "9-orphan.txt").unlink()
    # an id that is still held was never forgotten: not in the tombstones either
    res = cf.verify(model, forgotten=ids[gone[:1]].tolist() + [ids[20]], checks=("purge",))
    assert not res.ok and res.ids_still_held == [ids[20]] and res.checks["purge"].details["not_tombstoned"] == 1


def test_certificate_signs_the_request_and_detects_tampering(tmp_path, monkeypatch):
    # string ids: an integer id could occur inside a hex digest by chance
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "hash", str_ids=True)
    store = tmp_path / "store"
    with pytest.raises(cf.CertificateError, match="no signing key"):
        monkeypatch.delenv("CLUSTERFORGET_KEY", raising=False)
        monkeypatch.delenv("CLUSTERFORGET_KEY_FILE", raising=False)
        cf.certificate(model, request_id="REQ-1")
    with pytest.raises(cf.CertificateError, match="REQ-9"):
        cf.certificate(model, request_id="REQ-9", key=KEY)
    cert = cf.certificate(model, request_id="REQ-1", key=KEY)
    assert cert["ids"]["count"] == len(gone) and cert["version_after"] == cert["version_before"] + 1
    assert cert["checks"]["purge"]["status"] == "pass" and cert["checks"]["exact"]["status"] == "pass"
    assert "auc" in cert["audit"] and cert["signature"]["alg"] == "HMAC-SHA256"
    assert all(str(i) not in json.dumps(cert["ids"]) for i in ids[gone])
    assert cf.verify_certificate(json.dumps(cert), store, key=KEY).ok
    # the command line's function gives the same certificate, and later versions still verify
    assert certificate_for(store, "REQ-1", key=KEY)["ledger"] == cert["ledger"]
    model.forget_rows(ids[40:42].tolist())
    assert cf.verify_certificate(cert, store, key=KEY).ok

    tampered = json.loads(json.dumps(cert))
    tampered["groups_touched"] = []
    res = cf.verify_certificate(tampered, store, key=KEY)
    assert not res.ok and res.checks["signature"].ok is False
    assert not cf.verify_certificate(cert, store, key="cd" * 32).ok  # another key

    # a certificate re-signed by someone with the key, but pointing at another line, fails the ledger check
    from clusterforget.verify.certificate import _sign

    moved = {k: v for k, v in json.loads(json.dumps(cert)).items() if k != "signature"}
    moved["ledger"]["position"] = 0
    forged = {**moved, "signature": {**cert["signature"], "value": _sign(moved, bytes.fromhex(KEY))}}
    res = cf.verify_certificate(forged, store, key=KEY)
    assert res.checks["signature"].ok and res.checks["ledger"].ok is False

    # rows brought back later: the store no longer holds up the certificate
    model.add_rows(X.iloc[gone[:1]], y[gone[:1]], ids=ids[gone[:1]].tolist(), allow_forgotten=True)
    res = cf.verify_certificate(cert, store, key=KEY)
    assert not res.ok and res.checks["purge"].ok is False and res.checks["held"].ok is False
    version = model._store.version
    assert res.checks["readded"].ok is False and f"version {version} (add_rows)" in res.checks["readded"].summary


def test_forget_audit_goes_in_the_ledger_without_ids(tmp_path):
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "key-route", str_ids=True)
    line = cf.read_ledger(tmp_path / "store")[-1]
    audit = line["audit"]
    assert audit["forgotten"] == len(gone) and 0 <= audit["auc"] <= 1 and "label_only" in audit
    text = (tmp_path / "store" / "ledger.jsonl").read_text()
    assert not any(i in text for i in ids[gone])


def _mia_model():
    """A model with enough capacity to remember its rows, its data, and a holdout of the same distribution."""
    X, y, ids, _ = make_table("binary", n=700)
    hold = make_table("binary", n=700, seed=5)
    params = {"num_iterations": 60, "num_leaves": 31, "min_data_in_leaf": 2}
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=params, n_jobs=1).fit(X, y, ids=ids)
    return model, X, y, ids, hold


def test_mia_has_power_on_training_rows_and_forgotten_rows_look_never_seen():
    model, X, y, ids, hold = _mia_model()
    gone = np.arange(100)
    model.forget_rows(ids[gone])
    check = check_mia(model, hold[0], hold[1], X.iloc[gone], y[gone], n_shadows=4, n_boot=100)
    power = check.details["training_vs_never_seen"]["lira"]
    assert power["auc_ci"][0] > 0.5, power
    forgotten = check.details["forgotten_vs_never_seen"]["lira"]
    assert forgotten["auc_ci"][0] <= 0.5 <= forgotten["auc_ci"][1] and check.ok, forgotten


def test_verify_refuses_unknown_checks_and_options(tmp_path):
    model, *_ = _forgotten_store(tmp_path, "hash")
    with pytest.raises(cf.InputError, match="'speed'"):
        cf.verify(model, checks=("purge", "speed"))
    with pytest.raises(cf.InputError, match="'quick'"):
        cf.verify(model, checks=("exact",), exact="quick")
    skipped = cf.verify(model, checks=("mia",))
    assert skipped.ok and skipped.checks["mia"].ok is None and "X_holdout" in skipped.checks["mia"].summary


def test_attack_metrics_equal_sklearns_roc():
    from sklearn.metrics import roc_auc_score, roc_curve

    from clusterforget.verify.mia import _auc, _tpr_at

    rng = np.random.default_rng(1)
    for _ in range(50):
        pos = np.round(rng.normal(0.3, 1, size=rng.integers(5, 300)), 1)  # rounded: many ties
        neg = np.round(rng.normal(0, 1, size=rng.integers(5, 3000)), 1)
        y, s = np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]
        assert _auc(pos, neg) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for target in (0.1, 0.01, 0.001):
            assert _tpr_at(pos, neg, target) == pytest.approx(np.max(tpr[fpr <= target]), abs=1e-12)


def test_mia_flags_rows_that_were_not_really_forgotten():
    model, X, y, ids, hold = _mia_model()
    still_held = np.arange(100, 400)  # claimed forgotten, but the model still trains on them
    check = check_mia(model, hold[0], hold[1], X.iloc[still_held], y[still_held], n_shadows=4, n_boot=100)
    assert check.ok is False and "DISTINGUISHABLE" in check.summary, check.summary


def _resigned(document: dict) -> dict:
    import hashlib

    body = {k: v for k, v in document.items() if k != "sha256"}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}


def _fitted(document: dict, name: str) -> dict:
    """The state of the ColumnTransformer step ``name`` in a member's preprocessor document."""
    return next(t["$tuple"][1]["state"] for t in document["object"]["state"]["transformers_"] if t["$tuple"][0] == name)


def test_purge_reads_values_inside_every_preprocessor_document(tmp_path):
    """A scaler's mean, an encoder's category (encoded arrays in the manifest, a bundle and any JSON copy): set to a
    value only a forgotten row had and re-signed, purge names the file and the field; a document it cannot decode
    fails it; the honest store passes with the same rows given."""
    import base64

    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    from clusterforget.store.commit import manifest_checksum

    X, y, ids, _ = make_table("binary")
    X["colour"] = X["colour"].astype(object)
    X.loc[7, "colour"] = "violet"  # a category only the forgotten row 7 has
    pre = ColumnTransformer([("scale", StandardScaler(), ["a", "b"]),
                             ("codes", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["colour"])])
    model = cf.ForgetClassifier(grouping="region", combine="route", preprocessor=pre, n_jobs=1,
                                learner_params={"num_iterations": 5}).fit(X, y, ids=ids)
    store = tmp_path / "store"
    model.save(store)
    gone = [5, 6, 7]
    model.forget_rows(ids[gone], request_id="REQ-P")
    given = dict(request_id="REQ-P", checks=("purge",), X_forgotten=X.iloc[gone])
    honest = cf.verify(store, **given).checks["purge"]
    assert honest.ok, honest.summary
    assert honest.details["preprocessor_documents"] > 0 and honest.details["values_looked_for"] > 0
    assert "decoded and searched" in honest.summary
    without_rows = cf.verify(store, request_id="REQ-P", checks=("purge",)).checks["purge"]
    assert without_rows.ok and "pass X_forgotten" in without_rows.summary

    # the manifest: a member's scaler mean set to forgotten row 5's value of a, re-signed
    doc = json.loads((store / "manifest.json").read_text())
    entry = doc["groups"][1]["member"]["meta"]
    scale = _fitted(entry["preprocessor"], "scale")
    mean = np.frombuffer(base64.b64decode(scale["mean_"]["data"]), "<f8").copy()
    mean[0] = X.loc[5, "a"]
    scale["mean_"]["data"] = base64.b64encode(mean.tobytes()).decode()
    entry["preprocessor"] = _resigned(entry["preprocessor"])
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))
    purge = cf.verify(store, **given).checks["purge"]
    assert not purge.ok
    assert purge.details["found"]["manifest.json"]["preprocessor_values"] == [
        f"groups[1].member.meta.preprocessor: transformers_[0][1].mean_ holds {float(X.loc[5, 'a'])!r}"]
    assert "manifest.json groups[1].member.meta.preprocessor: transformers_[0][1].mean_" in purge.summary

    # a copy of the document in any JSON file (an export inside the store), at any depth
    (store / "exports").mkdir()
    (store / "exports" / "manifest.json").write_text(json.dumps({"members": [{"preprocessor": entry["preprocessor"]}]}))
    found = cf.verify(store, **given).checks["purge"].details["found"]
    assert found["exports/manifest.json"]["preprocessor_values"] == [
        f"members[0].preprocessor: transformers_[0][1].mean_ holds {float(X.loc[5, 'a'])!r}"]
    # a bundle exported inside the store carries its members' documents: each one is read
    model.export(store / "bundle")
    found = cf.verify(store, **given).checks["purge"].details["found"]
    assert "bundle/manifest.json" not in found or not found["bundle/manifest.json"]["preprocessor_values"]
    bundle = json.loads((store / "bundle" / "manifest.json").read_text())  # an encoder's category, as text
    meta = bundle["members"][2]["meta"]
    _fitted(meta["preprocessor"], "codes")["categories_"][0]["$objects"][0] = "violet"
    meta["preprocessor"] = _resigned(meta["preprocessor"])
    (store / "bundle" / "manifest.json").write_text(json.dumps(bundle))
    found = cf.verify(store, **given).checks["purge"].details["found"]
    assert found["bundle/manifest.json"]["preprocessor_values"] == [
        "members[2].meta.preprocessor: transformers_[1][1].categories_[0] holds 'violet'"]

    # a document the check cannot decode: what it holds is unknown, so the check cannot pass
    broken = json.loads(json.dumps(entry["preprocessor"]))
    _fitted(broken, "scale")["mean_"]["data"] = "not base64!"
    (store / "exports" / "broken.json").write_text(json.dumps(broken))
    purge = cf.verify(store, **given).checks["purge"]
    assert purge.details["found"]["exports/broken.json"]["preprocessor_unreadable"]
    assert "cannot be decoded" in purge.summary and not purge.ok
    # nested past the JSON parser's depth around a document's format name: unreadable, not a crash
    (store / "exports" / "deep.json").write_text("[" * 100_000 + '"clusterforget-preprocessor"' + "]" * 100_000)
    assert cf.verify(store, **given).checks["purge"].details["found"]["exports/deep.json"]["preprocessor_unreadable"]


def test_fast_exact_fails_while_a_touched_member_is_pending(tmp_path):
    """A deferred forget leaves the touched member out: nothing to compare, and not a fresh fit's model until the
    retrain (the full check fails too); by the request or the ids, the fast check says so instead of passing."""
    model, X, y, ids, test, gone, _ = _forgotten_store(tmp_path, "key-route")
    model.forget_rows(ids[[40]], retrain="deferred", request_id="REQ-D")
    pending = sorted(g.name for g in model.ensemble_.groups.values() if g.member is None)
    assert pending
    for given in ({"request_id": "REQ-D"}, {"forgotten": ids[[40]]}):
        exact = cf.verify(tmp_path / "store", checks=("exact",), **given).checks["exact"]
        assert exact.ok is False and exact.details["members_pending"] == pending and "retrain_pending" in exact.summary
    assert not cf.verify(tmp_path / "store", request_id="REQ-D", checks=("exact",), exact="full").ok
    model.retrain_pending(request_id="REQ-D")
    exact = cf.verify(tmp_path / "store", request_id="REQ-D", checks=("exact",)).checks["exact"]
    assert exact.ok and exact.details["members_retrained"] == pending, exact.summary


def test_purge_finds_a_forgotten_row_s_median_in_an_earlier_version_s_document(tmp_path):
    """The realistic stale state: a group's median imputer (an odd count: the median is one row's value) fitted
    before the forget, its document put back in the current manifest (checksum recomputed, its own sha256 right).
    The forgotten row was the median: purge, given it, names the field; exact fails too."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    from clusterforget.store.commit import manifest_checksum

    X, y, ids, _ = make_table("binary")
    north = np.flatnonzero(X["region"].to_numpy() == "north")
    if len(north) % 2 == 0:
        X.loc[north[-1], "a"] = np.nan  # not counted: the median is one row's value
    a = X["a"].to_numpy()
    counted = north[~np.isnan(a[north])]
    median_row = counted[np.argsort(a[counted])][len(counted) // 2]
    pre = ColumnTransformer([("median", SimpleImputer(strategy="median"), ["a"])])
    model = cf.ForgetClassifier(grouping="region", combine="route", preprocessor=pre, n_jobs=1,
                                learner_params={"num_iterations": 5}).fit(X, y, ids=ids)
    store = tmp_path / "store"
    model.save(store)
    before = {g["name"]: g for g in json.loads((store / "manifest.json").read_text())["groups"]}
    model.forget_rows(ids[[median_row]], request_id="REQ-M")
    given = dict(request_id="REQ-M", checks=("purge",), X_forgotten=X.iloc[[median_row]])
    assert cf.verify(store, **given).ok
    doc = json.loads((store / "manifest.json").read_text())
    i, entry = next((i, g) for i, g in enumerate(doc["groups"]) if g["name"] == "north")
    entry["member"]["meta"]["preprocessor"] = before["north"]["member"]["meta"]["preprocessor"]
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))
    purge = cf.verify(store, **given).checks["purge"]
    assert not purge.ok and purge.details["found"]["manifest.json"]["preprocessor_values"] == [
        f"groups[{i}].member.meta.preprocessor: transformers_[0][1].statistics_ holds {float(a[median_row])!r}"]
    assert not cf.verify(store, request_id="REQ-M", checks=("exact",)).ok
