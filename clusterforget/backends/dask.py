"""Members trained as Dask tasks: ``backend="dask"``.

A member is a pure function of its job (rows in id order, schema, task, learner settings), so running
``executors.train_member`` on a Dask worker gives the member the thread executor would give, bit for bit.
Workers send back the member's **native model bytes and its JSON meta** (``Member.model_bytes`` /
``Member.meta``), the same pair the store writes; the client rebuilds the member with
``members.member_from_bytes``. No model is ever pickled.

Fault tolerance is Dask's: each job's rows travel inside its task (not as scattered data that would die
with a worker), so when a worker is lost mid-fit the scheduler reruns its tasks elsewhere, and the rerun
trains the same member. The executor returns only when every member trained, and the ensemble installs
nothing (and a bound store commits nothing) before that.

Inputs that live outside the client, a dask DataFrame or Parquet paths / globs / fsspec URLs, are read by
``read_input``: the columns are computed on the workers and gathered to the client as one Arrow table, where
the ensemble assigns groups exactly as the local backend does (so the partition is identical by
construction).

This module imports dask only inside its functions: ``import clusterforget`` never imports dask.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import PurePath
from typing import Any, Sequence

from .._compat import optional
from ..data import Schema
from ..errors import ClusterForgetError, InputError
from ..executors import TrainJob, train_member
from ..members import Learner, Member, member_from_bytes

PURPOSE = "backend='dask'"


class ClusterError(ClusterForgetError, RuntimeError):
    """The Dask cluster could not run a member's task (its workers kept dying); nothing was changed."""


def _distributed():
    return optional("distributed", PURPOSE)


def current_client(client: Any = None) -> Any:
    """The given client, or the current one (``Client(...)`` / ``LocalCluster`` made in this process)."""
    if client is not None:
        return client
    try:
        return _distributed().default_client()
    except ValueError:
        raise InputError(
            "backend='dask' found no Dask client; connect one first, e.g. "
            "`from dask.distributed import Client; client = Client('tcp://scheduler:8786')` "
            "(or Client(LocalCluster())), then fit again"
        ) from None


def _train_remote(learner: Learner, schema: dict, task: str, job: TrainJob) -> tuple[dict, bytes]:
    """On a worker: train one member, return its meta and native model bytes (never the model object)."""
    try:
        threads = _distributed().get_worker().state.nthreads
    except ValueError:  # run outside a worker (tests calling it directly)
        threads = 1
    member = train_member(learner, Schema.from_dict(schema), task, job, threads)
    return member.meta(), member.model_bytes()


class DaskExecutor:
    """Trains each member as one Dask task on the current (or given) client; members come back in job order.

    Parameters
    ----------
    n_jobs : ignored
        Kept for the ``BACKENDS`` factory signature; a member uses its worker's threads.
    verbose : bool
        Print the dashboard link once and show a progress bar over completed members.
    client : distributed.Client, optional
        Default: the current client, looked up at each ``train`` (so a model loaded from a store trains on
        whatever cluster is current then).
    """

    name = "dask"

    def __init__(self, n_jobs: int | None = None, verbose: bool = False, client: Any = None):
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.client = client
        self._announced = False

    def __repr__(self) -> str:
        return f"DaskExecutor(client={self.client!r})"

    def train(self, learner: Learner, schema: Schema, task: str, jobs: Sequence[TrainJob]) -> list[Member]:
        if not jobs:
            return []
        distributed = _distributed()
        client = current_client(self.client)
        if self.verbose and not self._announced:
            print(f"clusterforget: training on Dask, dashboard {client.dashboard_link}")
            self._announced = True
        batch = uuid.uuid4().hex[:12]
        with warnings.catch_warnings():
            # the rows ride in the tasks on purpose (scattered data would die with its worker, and a rerun
            # after a worker loss would fail), so Dask's "large graph" advice does not apply here
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            # unique keys: identical jobs in two calls must train again, never reuse a cached result
            futures = [
                client.submit(_train_remote, learner, schema.to_dict(), task, job, key=f"cf-member-{batch}-{i}",
                              pure=False)
                for i, job in enumerate(jobs)
            ]
        try:
            if self.verbose and len(jobs) > 1:
                from tqdm.auto import tqdm

                for f in tqdm(distributed.as_completed(futures), total=len(futures), desc="training members",
                              unit="member"):
                    if f.status == "error":
                        break
            results = client.gather(futures)  # raises the first job's error, as the thread executor does
        except distributed.KilledWorker as exc:
            raise ClusterError(
                f"Dask lost every worker that ran a member's task ({exc}); nothing was changed. Check the workers' "
                "memory limit and logs, then run the operation again"
            ) from exc
        finally:
            client.cancel(futures)
        return [member_from_bytes(meta, data) for meta, data in results]


def _is_paths(X: Any) -> bool:
    if isinstance(X, (str, PurePath, os.PathLike)):
        return True
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(p, (str, PurePath)) for p in X)


def _is_dask(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "dask"


def read_input(X: Any, y: Any, ids: Any) -> tuple[Any, Any, Any]:
    """A dask DataFrame or Parquet paths (globs, fsspec URLs) as (Arrow table, labels, ids); others unchanged.

    ``y`` and ``ids`` name columns of the input (``y="label", ids="row_id"``); those columns are taken out
    of the features. The partitions are read and converted on the workers; the result is gathered to the
    client, where the ensemble partitions it into groups.
    """
    if not (_is_paths(X) or _is_dask(X)):
        return X, y, ids
    dd = optional("dask.dataframe", "reading a dask DataFrame or Parquet paths")
    if _is_paths(X):
        paths = [os.fspath(p) for p in X] if isinstance(X, (list, tuple)) else os.fspath(X)
        try:
            X = dd.read_parquet(paths)
        except (OSError, ValueError) as exc:
            raise InputError(f"could not read Parquet from {paths!r}: {exc}; pass existing Parquet files, a glob "
                             "or an fsspec URL") from exc
    if not hasattr(X, "columns"):
        raise InputError(f"got a dask {type(X).__name__}; pass a dask DataFrame with the label and id columns")
    cols = list(X.columns)
    named = {"y": y, "ids": ids}
    for what, v in named.items():
        if v is not None and not isinstance(v, str):
            raise InputError(f"{what}={type(v).__name__} with a dask DataFrame or Parquet input; pass {what} as "
                             f"the name of a column, one of {cols[:20]!r}")
        if isinstance(v, str) and v not in cols:
            raise InputError(f"{what}={v!r} is not a column of the input; its columns are {cols[:20]!r}")
    if y is None:
        raise InputError(f"y=None with a dask DataFrame or Parquet input; pass y as the label column, one of {cols[:20]!r}")
    import pyarrow as pa

    frame = X.compute()  # gathered to the client: the ensemble assigns groups in one place (see module doc)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    labels = table.column(y).to_numpy()
    row_ids = table.column(ids).to_numpy() if ids is not None else None
    features = table.drop_columns([c for c in (y, ids) if c is not None])
    return features, labels, row_ids


def dask_executor(n_jobs: int | None = None, verbose: bool = False) -> DaskExecutor:
    """``BACKENDS["dask"]``: fails at once, naming the extra, when dask is not installed."""
    _distributed()
    return DaskExecutor(n_jobs, verbose)


__all__ = ["ClusterError", "DaskExecutor", "dask_executor", "read_input", "current_client"]
