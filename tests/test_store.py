"""The persistent store: round trips, forgotten data gone from disk, crash safety, no pickle, ledger, locks."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from filelock import FileLock

import clusterforget as cf
from clusterforget import store as cfstore
from clusterforget.store import commit as cfcommit
from clusterforget.store import read_ledger, verify

REPO = Path(__file__).resolve().parents[1]
LEARNER_PARAMS = {
    "lightgbm": {"num_iterations": 10, "min_data_in_leaf": 5},
    "xgboost": {"num_boost_round": 10, "max_depth": 3},
}
GROUPINGS = {
    "key": lambda: "region",
    "kmeans": lambda: cf.KMeansGroups(3, features=["a", "c"]),
    "hash": lambda: cf.HashGroups(3),
}
SECRET_CITY = "ZQX-secret-city"  # a distinctive feature value held only by rows that get forgotten
SECRET_NUMBER = 987654.3125  # a distinctive numeric feature value (exact in binary)


def make_data(task: str, n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.uniform(0, 10, n),
            "city": rng.choice(["north", "south", "east"], n),
            "region": rng.choice(["r1", "r2", "r3"], n),
        }
    )
    X.loc[rng.random(n) < 0.05, "b"] = np.nan
    score = X["a"].to_numpy() + 0.5 * X["b"].fillna(0).to_numpy() + (X["city"] == "north").to_numpy()
    if task == "binary":
        y = (score > 0.3).astype(int)
    elif task == "multiclass":
        y = np.array(["lo", "mid", "hi"], dtype=object)[np.digitize(score, [-0.3, 0.7])]
    else:
        y = score + rng.normal(scale=0.1, size=n)
    ids = np.array([f"user-{i:06x}" for i in range(n)], dtype=object)
    return X, y, ids


def make_model(task: str, learner: str = "lightgbm", grouping: str = "key", **kw):
    cls = cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier
    return cls(grouping=GROUPINGS[grouping](), learner=learner, learner_params=LEARNER_PARAMS[learner], n_jobs=1, **kw)


def outputs(model, X) -> list[np.ndarray]:
    out = [model.predict(X)]
    if hasattr(model, "predict_proba"):
        out.append(model.predict_proba(X))
    return out


def assert_same_outputs(a, b, X) -> None:
    for pa_, pb in zip(outputs(a, X), outputs(b, X)):
        assert pa_.dtype == pb.dtype
        assert np.array_equal(pa_, pb)


def all_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_bytes())


def assert_only_referenced_files(root: Path) -> None:
    expected = set(manifest(root)["files"]) | {"manifest.json", "ledger.jsonl", ".lock", ".clean"}
    assert set(all_files(root)) <= expected
    assert set(manifest(root)["files"]) <= set(all_files(root))


def find_secrets(root: Path, needles_text: list[str], numbers: list[float]) -> list[str]:
    """Every place under ``root`` where a forgotten id or feature value still appears."""
    hits = []
    for rel, data in all_files(root).items():
        for s in needles_text:
            if s.encode() in data:
                hits.append(f"{rel}: bytes {s!r}")
        for v in numbers:
            for pattern in (struct.pack("<d", v), repr(v).encode()):
                if pattern in data:
                    hits.append(f"{rel}: number {v!r}")
        if rel.endswith(".parquet"):
            t = pq.read_table(root / rel)
            for name in t.column_names:
                values = set(t.column(name).to_pylist())
                hits += [f"{rel}: column {name} holds {s!r}" for s in needles_text if s in values]
                hits += [f"{rel}: column {name} holds {v!r}" for v in numbers if v in values]
    return hits


# ---------------------------------------------------------------------------------------------- 1. round trip
@pytest.mark.parametrize("grouping", ["key", "kmeans", "hash"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
def test_save_load_predictions_bitwise_equal(tmp_path, learner, task, grouping):
    X, y, ids = make_data(task)
    model = make_model(task, learner, grouping).fit(X, y, ids=ids)
    report = model.save(tmp_path / "s")
    assert report.operation == "save" and report.version == model.version_
    loaded = cf.load(tmp_path / "s")
    assert type(loaded) is type(model)
    assert loaded.get_params()["learner_params"] == model.get_params()["learner_params"]
    assert loaded.n_features_in_ == 5 and list(loaded.feature_names_in_) == list(X.columns)
    assert loaded.groups_ == model.groups_
    assert loaded.version_ == model.version_
    assert_same_outputs(model, loaded, X)
    if task != "regression":
        assert loaded.classes_.dtype == model.classes_.dtype and np.array_equal(loaded.classes_, model.classes_)
    # the loaded model keeps behaving like the original: the same forget gives the same model
    ref = make_model(task, learner, grouping).fit(X, y, ids=ids)  # unbound twin (model is bound to the store)
    ref.forget_rows(ids[:4])
    r = loaded.forget_rows(ids[:4])
    assert r.version == loaded.version_ == ref.version_
    assert_same_outputs(ref, loaded, X)
    assert_same_outputs(ref, cf.load(tmp_path / "s"), X)


def test_round_trip_numpy_input_int_ids_weights_and_shards(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(2), max_group_rows=60, n_jobs=1,
                                learner_params={"num_iterations": 8}).fit(X, y)
    model.set_group_weight(1, 0.25)
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert not hasattr(loaded, "feature_names_in_")
    assert loaded.ensemble_.weight_overrides == {(1,): 0.25}
    assert loaded.ensemble_.label_type == model.ensemble_.label_type
    assert len(loaded.groups_) == len(model.groups_) > 2
    assert_same_outputs(model, loaded, X)
    loaded.add_rows(X[:3] + 5.0, y[:3])  # integer ids continue after the largest held
    assert loaded.n_rows_ == 303
    assert_same_outputs(loaded, cf.load(tmp_path / "s"), X)


def test_override_rules_survive_save_load(tmp_path):
    rules = pytest.importorskip("clusterforget.rules", reason="clusterforget.rules (issue 5) is not in this tree yet")
    if not hasattr(rules, "compile_mask"):
        pytest.skip("clusterforget.rules has no compile_mask yet (issue 5 in progress)")
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    model.relabel("c > 9", 1, mode="override")
    loaded = cf.load(tmp_path / "s")
    assert loaded.rules == model.rules and len(loaded.rules) == 1
    assert_same_outputs(model, loaded, X)
    assert (loaded.predict(X[X["c"] > 9]) == 1).all()


# ---------------------------------------------------------------------------------------------- 2. gone from disk
def data_with_secrets(n: int = 240):
    X, y, ids = make_data("binary", n)
    secret_rows = [5, 17, 101]
    X.loc[secret_rows, "city"] = SECRET_CITY
    X.loc[secret_rows, "c"] = SECRET_NUMBER
    return X, y, ids, [ids[i] for i in secret_rows]


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("retrain", ["now", "deferred"])
def test_forget_rows_leaves_no_trace_on_disk(tmp_path, learner, retrain):
    X, y, ids, gone = data_with_secrets()
    model = make_model("binary", learner).fit(X, y, ids=ids)
    root = tmp_path / "s"
    model.save(root)
    needles = [*gone, SECRET_CITY]
    before = find_secrets(root, needles, [SECRET_NUMBER])
    assert any(SECRET_CITY in h for h in before) and any(gone[0] in h for h in before)  # the check can see them
    report = model.forget_rows(gone, retrain=retrain)
    assert report.rows_removed == 3 and report.version == 2
    assert find_secrets(root, needles, [SECRET_NUMBER]) == []
    assert_only_referenced_files(root)
    assert verify(root) == 2
    if retrain == "deferred":
        model.retrain_pending()
        assert find_secrets(root, needles, [SECRET_NUMBER]) == []
        assert_only_referenced_files(root)


def test_forget_group_leaves_no_trace_on_disk(tmp_path):
    X, y, ids = make_data("binary")
    X["region"] = X["region"].astype(object)
    X.loc[X["region"] == "r3", "region"] = "ZQX-group"  # the group key itself is a feature value
    secret_ids = list(ids[(X["region"] == "ZQX-group").to_numpy()])
    model = make_model("binary", "lightgbm", "key").fit(X, y, ids=ids)
    root = tmp_path / "s"
    model.save(root)
    assert find_secrets(root, ["ZQX-group", secret_ids[0]], [])
    report = model.forget_group("ZQX-group")
    assert report.rows_removed == len(secret_ids) > 20
    assert find_secrets(root, ["ZQX-group", *secret_ids], []) == []
    entry = read_ledger(root)[-1]
    assert entry["operation"] == "forget_group" and entry["groups_dropped"][0].startswith("hmac:")
    assert_only_referenced_files(root)


# ---------------------------------------------------------------------------------------------- 3. crashes
CRASH_SCRIPT = """
import sys, clusterforget as cf
model = cf.load(sys.argv[1])
print("ready", flush=True)
for i in sys.argv[2:]:
    r = model.forget_rows([i])
    print("committed", r.version, flush=True)
"""


def _run_child(root: Path, ids: list[str], env_extra: dict[str, str]):
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(root), *ids], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory):
    X, y, ids, gone = data_with_secrets()
    model = make_model("binary").fit(X, y, ids=ids)
    after = make_model("binary").fit(X, y, ids=ids)
    after.forget_rows(gone[:1])
    return X, y, ids, gone, model, after


@pytest.mark.parametrize(
    "stage,survives",
    [("files-written", False), ("ledger-appended", False), ("manifest-staged", False),
     ("manifest-swapped", True), ("cleaned", True)],
)
def test_crash_during_commit_leaves_old_or_new_version(tmp_path, crash_setup, stage, survives):
    X, y, ids, gone, model, after = crash_setup
    root = tmp_path / "s"
    make_model("binary").fit(X, y, ids=ids).save(root)
    child = _run_child(root, gone[:1], {"CLUSTERFORGET_TEST_CRASH_AT": stage})
    out, err = child.communicate(timeout=60)
    assert child.returncode == 86, err
    assert "committed" not in out
    expected_version = 2 if survives else 1
    assert verify(root) == expected_version  # read-only check of every sha256 and the ledger chain
    loaded = cf.load(root)  # recovers: deletes leftovers, cuts an uncommitted ledger tail
    assert loaded.version_ == expected_version
    assert_same_outputs(loaded, after if survives else model, X)
    assert_only_referenced_files(root)
    assert len(read_ledger(root)) == expected_version
    if survives:
        assert find_secrets(root, [gone[0]], []) == []
    # and the store keeps working
    loaded.forget_rows(gone[1:2])
    assert verify(root) == expected_version + 1
    assert [e["version"] for e in read_ledger(root)] == list(range(1, expected_version + 2))


def test_sigkill_at_a_random_moment(tmp_path, crash_setup):
    X, y, ids, gone, model, after = crash_setup
    root = tmp_path / "s"
    make_model("binary").fit(X, y, ids=ids).save(root)
    victims = list(ids[50:90])
    child = _run_child(root, victims, {})
    assert child.stdout.readline().strip() == "ready"
    time.sleep(random.Random(7).uniform(0.05, 0.4))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=60)
    done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
    last_reported = done[-1] if done else 1
    version = verify(root)
    assert version in (last_reported, last_reported + 1)
    loaded = cf.load(root)
    assert loaded.n_rows_ == 240 - (version - 1)
    assert_only_referenced_files(root)
    ref = make_model("binary").fit(X, y, ids=ids)
    if version > 1:  # under load the kill can come before the child's first commit
        ref.forget_rows(victims[: version - 1])
    assert_same_outputs(loaded, ref, X)


# ---------------------------------------------------------------------------------------------- 4. no code runs
@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
def test_load_never_unpickles_or_evaluates(tmp_path, monkeypatch, learner):
    X, y, ids = make_data("multiclass")
    model = make_model("multiclass", learner, "kmeans").fit(X, y, ids=ids)
    model.forget_rows(ids[:2], retrain="deferred")  # a pending group too
    model.save(tmp_path / "s")
    cf.load(tmp_path / "s")  # warm up imports (module import may legitimately compile code)

    def refuse(*a, **k):
        raise AssertionError("the store must never unpickle or evaluate anything")

    for mod, name in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (builtins, "eval"), (builtins, "exec")]:
        monkeypatch.setattr(mod, name, refuse)
    loaded = cf.load(tmp_path / "s")
    assert_same_outputs(model, loaded, X)
    assert cfstore.verify(tmp_path / "s") == model.version_


# ---------------------------------------------------------------------------------------------- 5. tombstones, ledger, lock, checksums
def test_tombstones_refuse_forgotten_ids(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X.iloc[:200], y[:200], ids=ids[:200])
    model.save(tmp_path / "s")
    model.forget_rows(ids[:3])
    loaded = cf.load(tmp_path / "s")
    assert loaded._store.tombstoned(ids[:6]) == list(ids[:3])
    assert loaded._store.is_forgotten(ids[1]) and not loaded._store.is_forgotten(ids[150])
    with pytest.raises(cf.TombstoneError, match="allow_forgotten=True"):
        loaded.add_rows(X.iloc[[0, 1, 220]], y[[0, 1, 220]], ids=[ids[0], ids[1], ids[220]])
    assert loaded.version_ == 2 and verify(tmp_path / "s") == 2 and loaded.n_rows_ == 197
    r = loaded.add_rows(X.iloc[[0, 1, 220]], y[[0, 1, 220]], ids=[ids[0], ids[1], ids[220]], allow_forgotten=True)
    assert r.rows_added == 3 and r.version == 3 and cf.load(tmp_path / "s").n_rows_ == 200
    # a copy saved elsewhere keeps the tombstones and the history
    loaded.save(tmp_path / "copy")
    copy = cf.load(tmp_path / "copy")
    assert copy._store.tombstoned(ids[:3]) == list(ids[:3])
    assert [e["operation"] for e in read_ledger(tmp_path / "copy")] == ["save", "forget_rows", "add_rows", "save"]


def test_ledger_records_operations_with_keyed_hashes_only(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    model.forget_rows(ids[:5])
    model.forget_rows(ids[5:7], retrain="deferred")
    model.retrain_pending()
    model.set_group_weight("r1", 0.5)
    entries = read_ledger(tmp_path / "s")
    assert [e["operation"] for e in entries] == ["save", "forget_rows", "forget_rows", "retrain_pending",
                                                 "set_group_weight"]
    assert [(e["old_version"], e["version"]) for e in entries] == [(None, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    forget = entries[1]
    assert forget["rows_removed"] == 5 and forget["groups_retrained"] and forget["is_deletion"]
    assert forget["time"].endswith("Z") and forget["seconds"] >= 0
    assert sorted(forget["forgotten"]["hmac_sha256"]) == sorted(model._store.digest(i) for i in ids[:5])
    assert entries[2]["groups_pending"] and entries[3]["groups_retrained"] == entries[2]["groups_pending"]
    assert entries[4]["is_deletion"] is False and "NOT a deletion" in entries[4]["note"]
    raw = (tmp_path / "s" / "ledger.jsonl").read_bytes()
    assert not any(i.encode() in raw for i in ids)
    for rel, data in all_files(tmp_path / "s").items():
        if not rel.endswith(".parquet"):
            assert not any(i.encode() in data for i in ids[:7]), rel
    # a no-op commits nothing
    assert model.retrain_pending().version == 5 and len(read_ledger(tmp_path / "s")) == 5


def test_second_writer_gets_lock_error(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s", lock_timeout=0.2)
    before = loaded.predict_proba(X)
    other = FileLock(str(tmp_path / "s" / ".lock"))
    with other.acquire(timeout=1):
        t0 = time.perf_counter()
        with pytest.raises(cf.LockError, match="another writer"):
            loaded.forget_rows(ids[:2])
        assert time.perf_counter() - t0 < 5
        with pytest.raises(cf.LockError):
            cf.load(tmp_path / "s", lock_timeout=0.1)
    assert loaded.n_rows_ == 240 and loaded.version_ == 1 and np.array_equal(loaded.predict_proba(X), before)
    assert verify(tmp_path / "s") == 1
    assert loaded.forget_rows(ids[:2]).version == 2


def test_stale_writer_is_refused(tmp_path):
    X, y, ids = make_data("binary")
    make_model("binary").fit(X, y, ids=ids).save(tmp_path / "s")
    a, b = cf.load(tmp_path / "s"), cf.load(tmp_path / "s")
    a.forget_rows(ids[:1])
    with pytest.raises(cf.StoreError, match="another writer"):
        b.add_rows(X.iloc[:1], y[:1], ids=["new-1"])
    assert b.n_rows_ == 240 and b.version_ == 1
    assert cf.load(tmp_path / "s").n_rows_ == 239


@pytest.mark.parametrize("target", ["rows", "members", "manifest", "secret"])
def test_tampered_file_raises_checksum_error(tmp_path, target):
    X, y, ids = make_data("binary")
    make_model("binary").fit(X, y, ids=ids).save(tmp_path / "s")
    root = tmp_path / "s"
    if target in ("rows", "members"):
        victim = sorted((root / target).iterdir())[0]
    else:
        victim = root / ("manifest.json" if target == "manifest" else "secret.key")
    data = bytearray(victim.read_bytes())
    pos = data.index(b"1") if target == "manifest" else len(data) // 2
    data[pos] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(cf.ChecksumError) as info:
        cf.load(root)
    assert victim.name in str(info.value)


def test_tampered_ledger_is_detected(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    model.forget_rows(ids[:2])
    model.forget_rows(ids[2:4])
    p = tmp_path / "s" / "ledger.jsonl"
    lines = p.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"rows_removed":2', b'"rows_removed":0')
    p.write_bytes(b"".join(lines))
    with pytest.raises(cf.ChecksumError, match="hash chain"):
        read_ledger(tmp_path / "s")


def test_failed_commit_rolls_back_model_and_store(tmp_path, monkeypatch):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    before = model.predict_proba(X)
    real = cfcommit.write_durable

    def failing(path, data):
        if Path(path).name.startswith("manifest.json.tmp"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(cfcommit, "write_durable", failing)
    with pytest.raises(cf.StoreError, match="No space left"):
        model.forget_rows(ids[:3])
    monkeypatch.undo()
    assert model.n_rows_ == 240 and model.version_ == 1 and np.array_equal(model.predict_proba(X), before)
    assert verify(tmp_path / "s") == 1 and len(read_ledger(tmp_path / "s")) == 1
    assert_only_referenced_files(tmp_path / "s")
    assert model.forget_rows(ids[:3]).version == 2  # the store is fine afterwards


def test_save_refuses_foreign_directories(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(cf.StoreError, match="not empty"):
        model.save(tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    make_model("binary").fit(X, y, ids=ids).save(tmp_path / "other")
    with pytest.raises(cf.StoreError, match="another model"):
        model.save(tmp_path / "other")
    model.save(tmp_path / "mine")
    again = model.save(tmp_path / "mine")  # its own store: nothing to write
    assert again.version == 1 and len(read_ledger(tmp_path / "mine")) == 1
    with pytest.raises(cf.StoreError, match="not a clusterforget store"):
        cf.load(tmp_path / "busy")


# ---------------------------------------------------------------------------------------------- 6. deferred
@pytest.mark.parametrize("grouping", ["key", "hash"])
def test_deferred_forgetting_is_recorded_and_resumable(tmp_path, grouping):
    X, y, ids = make_data("multiclass")
    model = make_model("multiclass", "lightgbm", grouping).fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    first = next(iter(model.ensemble_.groups.values()))  # forget rows of one group: the others still predict
    forget = first.rows.column("__cf_id__").to_pylist()[:4]
    report = model.forget_rows(forget, retrain="deferred")
    assert report.groups_pending
    doc = manifest(tmp_path / "s")
    assert sorted(doc["pending"]) == sorted(report.groups_pending)
    loaded = cf.load(tmp_path / "s")
    assert sorted(g["name"] for g in loaded.groups_ if g["pending"]) == sorted(report.groups_pending)
    assert_same_outputs(model, loaded, X)
    r = loaded.retrain_pending()
    assert sorted(r.groups_retrained) == sorted(report.groups_pending)
    assert manifest(tmp_path / "s")["pending"] == []
    keep = ~np.isin(ids, forget)
    fresh = make_model("multiclass", "lightgbm", grouping).fit(X[keep], y[keep], ids=ids[keep])
    assert_same_outputs(fresh, loaded, X)
    assert_same_outputs(fresh, cf.load(tmp_path / "s"), X)


# ---------------------------------------------------------------------------------------------- incremental commits
def test_commit_writes_only_what_changed_and_compacts_tombstones(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    root = tmp_path / "s"
    model.save(root)

    def files_by_group():
        return {tuple(g["key"]): (g["rows"], (g["member"] or {}).get("file")) for g in manifest(root)["groups"]}

    before = files_by_group()
    victim = next(i for i, r in zip(ids, X["region"]) if r == "r2")
    model.forget_rows([victim])
    after = files_by_group()
    assert after[("r2",)][0] != before[("r2",)][0] and after[("r2",)][1] != before[("r2",)][1]
    assert {k: v for k, v in after.items() if k != ("r2",)} == {k: v for k, v in before.items() if k != ("r2",)}
    model.set_group_weight("r1", 2.0)  # a setting only: no data or model file is rewritten
    assert files_by_group() == after
    # many small deferred forgets: the tombstone files are merged, nothing is lost
    victims = [i for i, r in zip(ids, X["region"]) if r == "r3"][:20]
    for v in victims:
        model.forget_rows([v], retrain="deferred")
    assert 1 <= len(manifest(root)["tombstones"]) <= 16
    assert_only_referenced_files(root)
    loaded = cf.load(root, n_jobs=2)
    assert loaded.n_jobs == 2 and loaded.ensemble_.n_jobs == 2
    assert loaded._store.tombstoned([victim, *victims, ids[0]]) == [victim, *victims]
    assert [e["n_rows"] for e in read_ledger(root)][-1] == 240 - 21


def test_request_id_is_recorded_in_report_and_ledger(tmp_path):
    X, y, ids = make_data("binary")
    model = make_model("binary").fit(X, y, ids=ids)
    model.save(tmp_path / "s")
    report = model.forget_rows(ids[:2], request_id="REQ-123")
    assert report.request_id == "REQ-123" and "request REQ-123" in str(report)
    model.forget_group("r1", request_id="REQ-124")
    entries = read_ledger(tmp_path / "s")
    assert [e.get("request_id") for e in entries] == [None, "REQ-123", "REQ-124"]
    before = (tmp_path / "s" / "manifest.json").read_bytes()
    for bad in ("", "x" * 201, "line\nbreak", 42):
        with pytest.raises(cf.InputError, match="request_id"):
            model.forget_rows(ids[5:6], request_id=bad)
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before and model.n_rows_ == 240 - 2 - (X["region"] == "r1").sum() + (X.loc[:1, "region"] == "r1").sum()


@pytest.mark.parametrize("changed", [dict(early_stopping=False), dict(validation_fraction=0.3),
                                     dict(class_weight="balanced")], ids=["stopping", "fraction", "class-weight"])
def test_a_loaded_model_trains_with_the_settings_its_members_were_fitted_with(tmp_path, changed):
    """Parameters set after fit do not change the fitted model (scikit-learn: they take effect at the next fit);
    the store records what the members were trained with, so a forget after a load retrains as one before it."""
    from conftest import make_table

    X, y, ids, test = make_table("binary", n=400)
    model = cf.ForgetClassifier(grouping="region", combine="route", early_stopping=True, validation_fraction=0.2,
                                learner_params={"num_iterations": 30}, n_jobs=1).fit(X, y, ids=ids)
    model.set_params(**changed)
    import copy

    held = copy.deepcopy(model)  # in memory, bound to no store
    model.save(tmp_path / "s", key=False)
    loaded = cf.load(tmp_path / "s", key=False)
    model = held
    gone = ids[10:40:6]  # rows of several groups
    assert model.forget_rows(gone).groups_retrained == loaded.forget_rows(gone).groups_retrained != []
    assert [g.member.model_bytes() for g in loaded.ensemble_.groups.values()] == [
        g.member.model_bytes() for g in model.ensemble_.groups.values()]
    assert np.array_equal(loaded.predict_proba(test), model.predict_proba(test))
