"""backend="dask": members trained on a LocalCluster (2 worker processes) equal the local backend's bit for bit.

Every model here is compared with its local twin (same data, same parameters) with ``np.array_equal``, after
fit and after each operation; the local backend itself equals a fresh fit (tests/test_contract.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget import members
from clusterforget.data import id_hash
from clusterforget.ensemble import GroupedEnsemble
from conftest import FAST, make_table

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
import cloudpickle  # noqa: E402 - a dependency of distributed

# the learners below are defined in this module: ship them to the workers by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_class=distributed.Nanny) as cluster, distributed.Client(cluster) as c:
        yield c


def _estimator(task: str):
    return cf.ForgetRegressor if task == "regression" else cf.ForgetClassifier


def _out(model, X):
    return model.predict(X) if isinstance(model, cf.ForgetRegressor) else model.predict_proba(X)


def _pair(task: str, learner: str, **kw):
    params = dict(grouping="region", learner=learner, learner_params=FAST[learner], n_jobs=1, **kw)
    return _estimator(task)(**params), _estimator(task)(backend="dask", **params)


def _same(a, b, X) -> None:
    assert np.array_equal(_out(a, X), _out(b, X))
    assert [g["rows"] for g in a.groups_] == [g["rows"] for g in b.groups_]


def _ddf(X, y, ids, npartitions: int = 3):
    return dd.from_pandas(X.assign(label=y, row_id=ids), npartitions=npartitions)


def _ids_on_workers(client, ids) -> set:
    """Which of ``ids`` any worker holds in a table of rows (every table the workers keep in memory)."""
    wanted = pa.array(list(ids))

    def scan(dask_worker, wanted=wanted):
        import pyarrow as pa
        import pyarrow.compute as pc

        found = set()
        for value in list(dask_worker.data.values()):
            tables = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
            for t in tables:
                if isinstance(t, pa.Table) and "__cf_id__" in t.column_names:
                    col = t.column("__cf_id__")
                    found |= set(pc.filter(col, pc.is_in(col, value_set=wanted.cast(col.type))).to_pylist())
        return found

    return set().union(*client.run(scan).values())


def _eventually_empty(client, ids, seconds: float = 20.0) -> set:
    """Released tables leave the workers a moment after the last handle goes (the release is a message)."""
    import gc
    import time

    deadline = time.monotonic() + seconds
    while True:
        gc.collect()
        held = _ids_on_workers(client, ids)
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_operations_equal_local_bitwise(client, task, learner):
    """Rows read from a dask DataFrame stay on the workers; every operation equals the local backend's."""
    X, y, ids, test = make_table(task, n=240)
    local, remote = _pair(task, learner)
    w = np.random.default_rng(3).uniform(0, 2, len(ids)).round(2)  # sample weights, in input order
    local.fit(X, y, ids, sample_weight=w)
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id", sample_weight=w)
    assert remote.ensemble_.remote
    _same(local, remote, test)

    for m in (local, remote):
        m.forget_rows(ids[:15])
    _same(local, remote, test)

    label = 1 if task == "binary" else ("top" if task == "multiclass" else 9.5)
    for m in (local, remote):
        m.relabel("a > 1.5", label)
    _same(local, remote, test)

    for m in (local, remote):  # the weights live in the skeleton: nothing is fetched, the workers train on them
        m.reweight(ids[30:36], [0, 0.5, 4, 1, 2, 3])
    _same(local, remote, test)

    X2, y2, _, _ = make_table(task, n=130, seed=5)
    for m in (local, remote):
        m.add_rows(X2.iloc[:30], y2[:30], ids=np.arange(10**6, 10**6 + 30))
    _same(local, remote, test)

    for m in (local, remote):
        m.forget_rows(ids[20:25], retrain="deferred")
        m.retrain_pending()
        m.forget_group("east")
    _same(local, remote, test)

    X3, y3, _, _ = make_table(task, n=130, seed=7)
    X3, y3 = X3.iloc[:60], y3[:60]
    new_ids = np.arange(2 * 10**6, 2 * 10**6 + 60)
    local.add_rows(X3, y3, ids=new_ids)
    remote.add_rows(_ddf(X3, y3, new_ids, npartitions=2), y="label", ids="row_id")
    _same(local, remote, test)


def test_relabel_by_ids_on_the_cluster_equals_local(client):
    """A label per id: the skeleton's labels change here and the workers train on them (no row mask is sent)."""
    X, y, ids, test = make_table("regression", n=240)
    local, remote = _pair("regression", "lightgbm")
    local.fit(X, y, ids)
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    chosen = ids[::7][:30]
    for m in (local, remote):
        assert m.relabel(ids=chosen, label=np.arange(30) * 0.5).rows_relabeled == 30
    _same(local, remote, test)


def test_the_client_holds_only_each_groups_skeleton(client):
    """Ids, id hashes, the grouping's columns and labels come to the client; the features stay on the workers."""
    X, y, ids, test = make_table("binary", n=240)
    kw = dict(learner_params=FAST["lightgbm"], n_jobs=1, backend="dask")
    cases = {"region": ["region"], "hash": [], "kmeans": ["a", "b"]}
    groupings = {"region": "region", "hash": cf.HashGroups(3), "kmeans": cf.KMeansGroups(3, ["a", "b"], sample_size=90)}
    for name, grouping in groupings.items():
        model = cf.ForgetClassifier(grouping=grouping, **kw).fit(_ddf(X, y, ids), y="label", ids="row_id")
        for g in model.ensemble_.groups.values():
            assert g.rows.column_names == ["__cf_id__", "__cf_hash__", *cases[name], "__cf_label__", "__cf_weight__"]
            assert len(g.remote) == 1
        full = model.ensemble_.all_rows()  # brought here on request only
        assert full.column_names == ["__cf_id__", "__cf_hash__", "region", "a", "b", "colour", "__cf_label__", "__cf_weight__"]
        assert sorted(full.column("__cf_id__").to_pylist()) == sorted(ids.tolist())
        assert _ids_on_workers(client, ids[:40]) == set(ids[:40].tolist())


def test_forgotten_rows_leave_the_workers(client):
    """After a forget (and, deferred, after the retrain) no table on any worker holds a forgotten row."""
    X, y, ids, test = make_table("regression", n=240)
    local, remote = _pair("regression", "lightgbm")
    local.fit(X, y, ids)
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    gone = ids[:12]
    for m in (local, remote):
        m.forget_rows(gone)
    _same(local, remote, test)
    assert _eventually_empty(client, gone) == set()

    later = ids[12:16]
    for m in (local, remote):
        m.forget_rows(later, retrain="deferred")
    _same(local, remote, test)
    assert _ids_on_workers(client, later)  # deferred: the old tables stay until the retrain
    for m in (local, remote):
        m.retrain_pending()
    _same(local, remote, test)
    assert _eventually_empty(client, later) == set()

    remote.forget_group("west")
    local.forget_group("west")
    west = ids[X["region"].to_numpy() == "west"]
    assert _eventually_empty(client, west) == set()
    _same(local, remote, test)


def test_a_changed_clustering_reshuffles_on_the_workers(client):
    """Forgetting much of the clustering sample moves rows between clusters: the rows move on the workers."""
    X, y, ids, test = make_table("binary", n=300)
    kw = dict(grouping=cf.KMeansGroups(4, ["a", "b"], sample_size=60), learner_params=FAST["lightgbm"], n_jobs=1,
              max_group_rows=70)
    local = cf.ForgetClassifier(**kw).fit(X, y, ids)
    remote = cf.ForgetClassifier(backend="dask", **kw).fit(_ddf(X, y, ids), y="label", ids="row_id")
    _same(local, remote, test)
    sample = np.sort(remote.ensemble_.all_rows().column("__cf_hash__").to_numpy())[:60]
    in_sample = ids[np.isin(id_hash(pa.array(ids)), sample)]
    moved = 0
    for start in range(0, 50, 10):
        reports = [m.forget_rows(in_sample[start:start + 10]) for m in (local, remote)]
        assert reports[0].rows_moved == reports[1].rows_moved
        moved += reports[1].rows_moved
        _same(local, remote, test)
    assert moved > 0, "the test must move rows between clusters"
    X2, y2, _, _ = make_table("binary", n=130, seed=3)
    for m in (local, remote):
        m.add_rows(X2.iloc[:80], y2[:80], ids=np.arange(10**6, 10**6 + 80))  # rows from this process join the cluster's groups
    _same(local, remote, test)
    assert local.ensemble_.all_rows().equals(remote.ensemble_.all_rows())


def test_a_changed_shard_is_cut_from_its_own_shard_only(client):
    """Shards of a key (max_group_rows) keep their rows apart: a forget reads one old table, not the whole key's."""
    X, y, ids, test = make_table("binary", n=240)
    local, remote = _pair("binary", "lightgbm", max_group_rows=30)
    local.fit(X, y, ids)
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    _same(local, remote, test)
    north = ids[X["region"].to_numpy() == "north"]
    for m in (local, remote):
        m.forget_rows(north[:1], retrain="deferred")
    pending = [g for g in remote.ensemble_.groups.values() if g.member is None]
    assert len(pending) == 1 and pending[0].n_shards > 1 and len(pending[0].remote) == 1
    for m in (local, remote):
        m.retrain_pending()
    _same(local, remote, test)
    X2, y2, _, _ = make_table("binary", n=130, seed=9)
    for m in (local, remote):  # enough rows to change the key's shard count: every old shard feeds every new one
        m.add_rows(X2.iloc[:120], y2[:120], ids=np.arange(10**6, 10**6 + 120))
    _same(local, remote, test)


def test_auto_grouping_crossing_its_threshold_regroups_on_the_workers(client):
    """grouping="auto": 16,400 rows make 2 hash shards; forgetting 20 leaves fewer than 2 x 8,192, so 1 shard.
    Every row moves on the workers, and the model equals the local one before and after."""
    X, y, ids, test = make_table("binary", n=16_400)
    local, remote = _pair("binary", "lightgbm")
    local.set_params(grouping="auto")
    remote.set_params(grouping="auto")
    local.fit(X, y, ids)
    remote.fit(_ddf(X, y, ids, npartitions=4), y="label", ids="row_id")
    assert len(remote.ensemble_.groups) == 2
    _same(local, remote, test)
    reports = [m.forget_rows(ids[:20]) for m in (local, remote)]
    assert reports[1].regrouped and reports[0].regrouped
    assert len(remote.ensemble_.groups) == 1
    _same(local, remote, test)


def test_rows_on_the_cluster_save_load_and_verify(client, tmp_path, monkeypatch):
    """The store gets the same rows as the local backend's; cf.verify checks a model whose rows are remote."""
    X, y, ids, test = make_table("multiclass", n=240, str_ids=True)
    local, remote = _pair("multiclass", "lightgbm")
    local.fit(X, y, ids)
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    remote.save(tmp_path / "remote")
    local.save(tmp_path / "local")
    # audit=True: the output-difference attack picks the same rows (only those are fetched) and scores the same
    audits = [m.forget_rows(ids[:7], request_id="t-1", audit=True).audit for m in (local, remote)]
    assert audits[0] == audits[1] and audits[0]
    _same(local, remote, test)
    # the fast exact check works on the skeletons and fetches only its probe rows, never every row
    with monkeypatch.context() as patch:
        patch.setattr(GroupedEnsemble, "full_rows", lambda self, g: pytest.fail("verify fetched a whole group"))
        result = cf.verify(remote, forgotten=ids[:7], checks=("purge", "exact"))  # the bound store's files too
    assert result.ok, result
    assert result.checks["exact"].details["rows_probed"] > 100
    a, b = cf.load(tmp_path / "local"), cf.load(tmp_path / "remote")
    assert a.ensemble_.all_rows().equals(b.ensemble_.all_rows())
    _same(a, b, test)
    assert b.backend == "dask" and b.ensemble_.remote  # the workers read the store: rows stay on the cluster
    here = cf.load(tmp_path / "remote", rows="here")
    assert not here.ensemble_.remote and here.ensemble_.all_rows().equals(b.ensemble_.all_rows())


def test_a_store_loads_onto_the_cluster(client, tmp_path):
    """cf.load: the workers read and verify the rows files, the client reads only their skeleton columns."""
    X, y, ids, test = make_table("regression", n=240)
    local, remote = _pair("regression", "lightgbm")
    local.fit(X, y, ids)
    remote.fit(X, y, ids).save(tmp_path / "store")  # rows given here, saved; loaded onto the cluster
    loaded = cf.load(tmp_path / "store")
    assert loaded.ensemble_.remote
    # (a comprehension: a loop variable would keep the last group, and its table on the cluster, alive)
    assert {tuple(g.rows.column_names) for g in loaded.ensemble_.groups.values()} == {
        ("__cf_id__", "__cf_hash__", "region", "__cf_label__", "__cf_weight__")}
    _same(local, loaded, test)
    for m in (local, loaded):
        m.forget_rows(ids[:6])
        m.relabel("a > 1.0", 9.5)
    _same(local, loaded, test)
    assert _eventually_empty(client, ids[:6]) == set()
    _same(local, cf.load(tmp_path / "store"), test)


def test_loading_onto_the_cluster_checks_the_files_and_says_why_not(client, tmp_path, monkeypatch):
    from clusterforget.backends.dask import DaskExecutor

    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], backend="dask").fit(X, y, ids)
    model.save(tmp_path / "store")
    rows_file = sorted((tmp_path / "store" / "rows").iterdir())[0]
    good = rows_file.read_bytes()
    rows_file.write_bytes(good[:-8] + b"tampered")
    with pytest.raises(cf.ChecksumError, match="sha256"):  # checked on the worker that read it
        cf.load(tmp_path / "store")
    rows_file.write_bytes(good)
    monkeypatch.setattr(DaskExecutor, "cannot_read", lambda self, path, digest: "the workers do not see it")
    assert not cf.load(tmp_path / "store").ensemble_.remote  # auto: rows here instead
    with pytest.raises(cf.InputError, match="rows='cluster' cannot be honoured: the workers do not see it"):
        cf.load(tmp_path / "store", rows="cluster")
    with pytest.raises(cf.InputError, match="rows='elsewhere' is not one of"):
        cf.load(tmp_path / "store", rows="elsewhere")


def test_ids_numbered_by_the_model_and_parquet_input(client, tmp_path):
    X, y, ids, test = make_table("binary", n=200)
    frame = X.assign(label=y)
    local = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y)
    for i, start in enumerate(range(0, 200, 70)):
        frame.iloc[start:start + 70].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    remote = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1, backend="dask").fit(
        str(tmp_path / "*.parquet"), y="label")
    _same(local, remote, test)
    for m in (local, remote):
        m.forget_rows([3, 50, 199])
    _same(local, remote, test)


def test_dask_dataframe_and_parquet_give_the_local_partition(client, tmp_path):
    """Learned clusters (hash sample, centroids) and hash shards come out as the local backend's."""
    X, y, ids, test = make_table("binary", n=300)
    frame = X.assign(label=y, row_id=ids)
    kw = dict(grouping=cf.KMeansGroups(3, ["a", "b"], sample_size=100), learner_params=FAST["lightgbm"], max_group_rows=80,
              n_jobs=1)
    local = cf.ForgetClassifier(**kw).fit(X, y, ids)

    ddf = dd.from_pandas(frame, npartitions=3)
    from_ddf = cf.ForgetClassifier(backend="dask", **kw).fit(ddf, y="label", ids="row_id")
    _same(local, from_ddf, test)

    for i, start in enumerate(range(0, 300, 100)):
        frame.iloc[start:start + 100].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    from_parquet = cf.ForgetClassifier(backend="dask", **kw).fit(str(tmp_path / "*.parquet"), y="label", ids="row_id")
    _same(local, from_parquet, test)

    extra = dd.from_pandas(frame.iloc[:20].assign(row_id=np.arange(5000, 5020)), npartitions=2)
    local.add_rows(frame.iloc[:20][X.columns], y[:20], ids=np.arange(5000, 5020))
    from_ddf.add_rows(extra, y="label", ids="row_id")
    _same(local, from_ddf, test)


def test_without_a_client_the_input_is_read_here(client, tmp_path, monkeypatch):
    """backend="local" with a dask DataFrame or Parquet paths and no Dask client: read by Dask's local scheduler."""
    from clusterforget.backends import dask as backend

    monkeypatch.setattr(backend, "_client_or_none", lambda: None)
    X, y, ids, test = make_table("binary", n=150)
    kw = dict(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1)
    local = cf.ForgetClassifier(**kw).fit(X, y, ids)
    X.assign(label=y, row_id=ids).to_parquet(tmp_path / "rows.parquet", index=False)
    read = cf.ForgetClassifier(**kw).fit(str(tmp_path / "rows.parquet"), y="label", ids="row_id")
    assert not read.ensemble_.remote
    _same(local, read, test)


def test_dask_input_errors_name_the_columns(client):
    X, y, ids, _ = make_table("binary", n=150)
    ddf = dd.from_pandas(X.assign(label=y), npartitions=2)
    with pytest.raises(cf.InputError, match="'target' is not a column"):
        cf.ForgetClassifier(backend="dask").fit(ddf, y="target")
    with pytest.raises(cf.InputError, match="pass y as the name of a column"):
        cf.ForgetClassifier(backend="dask").fit(ddf, y=y)


def test_no_client_and_unknown_backend_say_what_to_do():
    X, y, ids, _ = make_table("binary", n=150)
    with pytest.raises(cf.InputError, match="backend='spark' is not known"):
        cf.ForgetClassifier(backend="spark").fit(X, y)
    from clusterforget.backends.dask import current_client

    if distributed.client._get_global_client() is None:
        with pytest.raises(cf.InputError, match="no Dask client"):
            current_client()


def test_the_package_does_not_import_dask():
    import subprocess

    code = "import sys, clusterforget; print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_verbose_prints_the_dashboard_link_once(client, capsys):
    X, y, ids, _ = make_table("binary", n=150)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], backend="dask", verbose=True)
    model.fit(X, y, ids)
    model.forget_rows(ids[:3])
    assert capsys.readouterr().out.count("dashboard") == 1


def test_loaded_model_keeps_the_backend(client, tmp_path):
    X, y, ids, test = make_table("regression", n=200)
    local, remote = _pair("regression", "lightgbm")
    local.fit(X, y, ids)
    remote.fit(X, y, ids).save(tmp_path / "store")
    loaded = cf.load(tmp_path / "store")
    assert loaded.backend == "dask"
    assert type(loaded.ensemble_.executor).__name__ == "DaskExecutor"
    loaded.forget_rows(ids[:3])
    local.forget_rows(ids[:3])
    _same(local, loaded, test)


# worker loss last: a killed worker restarts cold, and the tests above need not wait for it
class KillOnceLearner(members.LightGBMLearner):
    """Kills the worker process that runs the first member it trains (a marker file makes it happen once)."""

    def __init__(self, params, seed, marker: str, *settings):
        super().__init__(params, seed, *settings)  # class weight, preprocessor, early stopping: as the model's own
        self.marker = marker

    def train(self, rows, schema, task, n_threads):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return super().train(rows, schema, task, n_threads)
        os.close(fd)
        os._exit(1)  # the worker dies mid-task; its nanny restarts it and the scheduler reruns the task


def test_worker_lost_mid_fit_and_mid_forget_gives_the_exact_model(client, tmp_path, monkeypatch):
    """The killed worker held input partitions and shuffled groups: the scheduler recomputes them elsewhere."""
    X, y, ids, test = make_table("binary", n=240)
    local, remote = _pair("binary", "lightgbm")
    local.fit(X, y, ids)
    marker = tmp_path / "fit-killed"
    monkeypatch.setitem(members.LEARNERS, "lightgbm",
                        lambda params, seed, *settings: KillOnceLearner(params, seed, str(marker), *settings))
    remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    assert remote.ensemble_.remote
    assert marker.exists()  # a worker did die
    _same(local, remote, test)

    remote.save(tmp_path / "store")
    marker = tmp_path / "forget-killed"
    own = remote.ensemble_.learner
    remote.ensemble_ = remote.ensemble_.evolve(learner=KillOnceLearner(
        own.params, own.seed, str(marker), own.class_weight, own.preprocessor, own.stopping))
    local.forget_rows(ids[:10])
    report = remote.forget_rows(ids[:10])
    assert marker.exists()
    # the killed worker held the group's table, which has no lineage (detached): the store gave it back
    assert "put back on the cluster from the store" in report.note
    _same(local, remote, test)
    assert len(cf.read_ledger(tmp_path / "store")) == 2  # save + one forget, nothing half-written
    _same(local, cf.load(tmp_path / "store"), test)


def test_rows_lost_between_operations_come_back_from_the_store_or_raise(client, tmp_path):
    X, y, ids, test = make_table("binary", n=200)
    local, bound = _pair("binary", "lightgbm")
    _, unbound = _pair("binary", "lightgbm")
    local.fit(X, y, ids)
    bound.fit(_ddf(X, y, ids), y="label", ids="row_id").save(tmp_path / "store")
    unbound.fit(_ddf(X, y, ids), y="label", ids="row_id")
    before = unbound.predict_proba(test)
    # the tables go as when their worker dies (a detached table has no lineage to rerun)
    client.cancel([h for m in (bound, unbound) for g in m.ensemble_.groups.values() for h in g.remote])
    with pytest.raises(cf.RowsLostError, match="Nothing was changed"):
        unbound.forget_rows(ids[:4])
    assert unbound.n_rows_ == 200 and np.array_equal(unbound.predict_proba(test), before)
    report = bound.forget_rows(ids[:4])
    local.forget_rows(ids[:4])
    assert "put back on the cluster" in report.note
    _same(local, bound, test)
    _same(local, cf.load(tmp_path / "store"), test)


def test_the_scheduler_keeps_no_lineage_of_forgotten_rows(client):
    """After each operation the group tables are plain data: no task (holding input partitions, ids, rows sent
    from the client) is left behind them."""
    X, y, ids, test = make_table("binary", n=200)
    X2, y2, _, _ = make_table("binary", n=130, seed=4)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], backend="dask")
    model.fit(_ddf(X, y, ids), y="label", ids="row_id")
    model.add_rows(X2.iloc[:20], y2[:20], ids=np.arange(10**6, 10**6 + 20))
    model.forget_rows([ids[0], 10**6 + 1])
    keys = [h.key for g in model.ensemble_.groups.values() for h in g.remote]
    assert len(keys) == len(model.ensemble_.groups)

    def lineage(dask_scheduler, keys=keys):
        return {str(k): (dask_scheduler.tasks[k].run_spec is not None, len(dask_scheduler.tasks[k].dependencies))
                for k in keys}

    assert set(client.run_on_scheduler(lineage).values()) == {(False, 0)}


class FailingLearner(members.LightGBMLearner):
    def train(self, rows, schema, task, n_threads):
        raise ValueError("bad parameter")


class KillAlwaysLearner(members.LightGBMLearner):
    def train(self, rows, schema, task, n_threads):
        os._exit(1)


def _allow_failures(n: int):
    def set_on(dask_scheduler):
        dask_scheduler.allowed_failures = n

    return set_on


def _forget_fails_and_changes_nothing(client, tmp_path, learner_class, error, match) -> None:
    """A forget whose tasks fail raises ``error``; the model and its bound store stay as they were."""
    X, y, ids, test = make_table("binary", n=200)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], backend="dask").fit(X, y, ids)
    model.save(tmp_path / "store")
    before = model.predict_proba(test)
    model.ensemble_ = model.ensemble_.evolve(learner=learner_class(FAST["lightgbm"], 0))
    with pytest.raises(error, match=match):
        model.forget_rows(ids[:5])
    assert np.array_equal(model.predict_proba(test), before)
    assert model.n_rows_ == 200
    assert len(cf.read_ledger(tmp_path / "store")) == 1
    assert np.array_equal(cf.load(tmp_path / "store", rows="here").predict_proba(test), before)


def test_failed_task_leaves_model_and_store_unchanged(client, tmp_path):
    _forget_fails_and_changes_nothing(client, tmp_path, FailingLearner, cf.InputError, "could not train group")


def test_workers_that_keep_dying_raise_and_change_nothing(client, tmp_path):
    from clusterforget.backends.dask import ClusterError

    assert issubclass(ClusterError, cf.ClusterForgetError)
    client.run_on_scheduler(_allow_failures(0))  # give up after the first lost worker (default: 3 reruns)
    try:
        _forget_fails_and_changes_nothing(client, tmp_path, KillAlwaysLearner, ClusterError, "nothing was changed")
    finally:
        client.run_on_scheduler(_allow_failures(3))
        client.wait_for_workers(2)


def _encoder():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler, TargetEncoder

    return ColumnTransformer([("te", TargetEncoder(), ["colour", "region"]), ("scale", StandardScaler(), ["a"]),
                              ("impute", SimpleImputer(strategy="median"), ["b"])])


@pytest.mark.parametrize("task, rows", [("binary", "cluster"), ("regression", "here")])
def test_a_preprocessor_on_the_cluster_is_a_local_fresh_fit(client, tmp_path, task, rows):
    """preprocessor= on backend="dask" (rows on the workers, or given here): each worker fits its groups'
    transformers; after a forget, and loaded back onto the cluster, the model is bitwise a fresh local fit on the
    rows that remain, every member's fitted transformer (its document) and model file included."""
    X, y, ids, test = make_table(task, n=240)
    settings = dict(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1, preprocessor=_encoder())
    remote = _estimator(task)(backend="dask", **settings)
    if rows == "cluster":
        remote.fit(_ddf(X, y, ids), y="label", ids="row_id")
    else:
        remote.fit(X, y, ids)
    assert bool(remote.ensemble_.remote) == (rows == "cluster")
    remote.save(tmp_path / "store")
    gone = ids[::9]
    remote.forget_rows(gone)
    keep = ~np.isin(ids, gone)
    fresh = _estimator(task)(**settings).fit(X[keep], y[keep], ids[keep])
    members = lambda m: [(g.name, g.member.meta(), g.member.model_bytes()) for g in m.ensemble_.groups.values()]
    assert any("preprocessor" in meta for _, meta, _ in members(fresh))
    loaded = cf.load(tmp_path / "store")
    assert loaded.ensemble_.remote  # the workers read the store and its documents
    for model in (remote, loaded):
        _same(model, fresh, test)
        assert members(model) == members(fresh)


def _sklearn_named(version):
    """Make the preprocessor documents a process writes name scikit-learn ``version`` (None: the installed one)."""
    def patch(version=version):
        import sklearn

        from clusterforget import preprocess

        preprocess._sklearn_version = (lambda: version) if version else (lambda: sklearn.__version__)
    return patch


def test_retrain_refit_on_a_store_held_on_the_cluster_is_a_local_fresh_fit(client, tmp_path, monkeypatch):
    """A store written on the cluster under another scikit-learn version (the workers fit the documents): cf.load
    refuses it, `clusterforget retrain --refit` refits every preprocessed member with the rows on the workers, and
    the store then loads onto the cluster bitwise a fresh local fit."""
    from clusterforget import preprocess
    from clusterforget.cli import main

    X, y, ids, test = make_table("binary", n=240)
    settings = dict(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1, preprocessor=_encoder())
    store = tmp_path / "store"
    client.run(_sklearn_named("1.8.0"))
    try:
        with monkeypatch.context() as patch:
            patch.setattr(preprocess, "_sklearn_version", lambda: "1.8.0")
            written = cf.ForgetClassifier(backend="dask", **settings).fit(_ddf(X, y, ids), y="label", ids="row_id")
            assert written.ensemble_.remote
            written.save(store)
    finally:
        client.run(_sklearn_named(None))
    del written
    with pytest.raises(cf.VersionError, match="scikit-learn 1.8.0"):
        cf.load(store)
    assert main(["retrain", str(store), "--refit", "--yes", "--json"]) == 0
    loaded = cf.load(store)
    assert loaded.backend == "dask" and loaded.ensemble_.remote
    fresh = cf.ForgetClassifier(**settings).fit(X, y, ids)
    members = lambda m: [(g.name, g.member.meta(), g.member.model_bytes()) for g in m.ensemble_.groups.values()]
    assert members(loaded) == members(fresh)
    assert {m["preprocessor"]["sklearn"] for _, m, _ in members(loaded) if "preprocessor" in m} == {
        preprocess.installed_version()}
    assert loaded.ensemble_.combine_choice == fresh.ensemble_.combine_choice
    _same(loaded, fresh, test)
    assert cf.read_ledger(store)[-1]["operation"] == "retrain_pending"
