"""backend="dask": members trained on a LocalCluster (2 worker processes) equal the local backend's bit for bit.

Every model here is compared with its local twin (same data, same parameters) with ``np.array_equal``, after
fit and after each operation; the local backend itself equals a fresh fit (tests/test_contract.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import clusterforget as cf
from clusterforget import members
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


@pytest.mark.parametrize("learner", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_operations_equal_local_bitwise(client, task, learner):
    X, y, ids, test = make_table(task, n=240)
    local, remote = _pair(task, learner)
    local.fit(X, y, ids)
    remote.fit(X, y, ids)
    _same(local, remote, test)

    for m in (local, remote):
        m.forget_rows(ids[:15])
    _same(local, remote, test)

    label = 1 if task == "binary" else ("top" if task == "multiclass" else 9.5)
    for m in (local, remote):
        m.relabel("a > 1.5", label)
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

    def __init__(self, params, seed, marker: str):
        super().__init__(params, seed)
        self.marker = marker

    def train(self, rows, schema, task, n_threads):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return super().train(rows, schema, task, n_threads)
        os.close(fd)
        os._exit(1)  # the worker dies mid-task; its nanny restarts it and the scheduler reruns the task


def test_worker_lost_mid_fit_and_mid_forget_gives_the_exact_model(client, tmp_path, monkeypatch):
    X, y, ids, test = make_table("binary", n=240)
    local, remote = _pair("binary", "lightgbm")
    local.fit(X, y, ids)
    marker = tmp_path / "fit-killed"
    monkeypatch.setitem(members.LEARNERS, "lightgbm", lambda params, seed: KillOnceLearner(params, seed, str(marker)))
    remote.fit(X, y, ids)
    assert marker.exists()  # a worker did die
    _same(local, remote, test)

    remote.save(tmp_path / "store")
    marker = tmp_path / "forget-killed"
    remote.ensemble_.learner = KillOnceLearner(FAST["lightgbm"], 0, str(marker))
    local.forget_rows(ids[:10])
    remote.forget_rows(ids[:10])
    assert marker.exists()
    _same(local, remote, test)
    assert len(cf.read_ledger(tmp_path / "store")) == 2  # save + one forget, nothing half-written
    _same(local, cf.load(tmp_path / "store"), test)


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
    model.ensemble_.learner = learner_class(FAST["lightgbm"], 0)
    with pytest.raises(error, match=match):
        model.forget_rows(ids[:5])
    assert np.array_equal(model.predict_proba(test), before)
    assert model.n_rows_ == 200
    assert len(cf.read_ledger(tmp_path / "store")) == 1
    assert np.array_equal(cf.load(tmp_path / "store").predict_proba(test), before)


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
