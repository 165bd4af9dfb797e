"""Rows and members on a Dask cluster: ``backend="dask"``.

Where things run
----------------
* **Input** (a dask DataFrame, or Parquet paths / globs / fsspec URLs): each partition is converted to the
  canonical Arrow layout on its worker (``DaskInput``). Only the labels, the ids and the columns the grouping
  reads (key columns, clustering features; none for hash shards) come to the client: its *skeleton* of the rows.
* **Partition**: the client runs the ensemble's own partition logic on the skeletons (so the groups, the
  clustering sample and its state are the local backend's by construction), then the rows move on the workers:
  ``DaskExecutor.shuffle`` runs the same assignment (``ensemble.Assigner``) where the rows are and sends each row
  to its group, through a fixed number of buckets.
* **Members** train where their group's table is (``place`` then ``train``: the training task depends on the
  table, so the scheduler runs it on that worker). Workers send back the member's **native model bytes and its
  JSON meta** (``Member.model_bytes`` / ``Member.meta``), the pair the store writes; the client rebuilds the
  member with ``members.member_from_bytes``. No model is ever pickled.
* **Later changes** (``forget_rows``, ``relabel``, ``add_rows``, ``retrain_pending``): the client finds the
  affected groups from the skeletons; each new group table is cut on the workers from the old tables of its key
  (``ensemble.materialize``: exactly the skeleton's ids, its labels, or it raises), relabel masks are computed
  there, and only the members of changed groups retrain.

Fault tolerance is Dask's: every table is a task result with its lineage (the input partitions, or rows sent
from the client inside a task), so when a worker is lost its tables are recomputed elsewhere and the reruns give
the same bytes. The executor returns only when every member trained, and the ensemble installs nothing (and a
bound store commits nothing) before that.

This module imports dask only inside its functions: ``import clusterforget`` never imports dask.
"""

from __future__ import annotations

import os
import uuid
import warnings
from concurrent.futures import CancelledError
from pathlib import PurePath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .._compat import optional
from ..data import ID, NUMERIC, RESERVED, RemoteInput, Schema, canonical, kind_of, raw_table
from ..errors import ChecksumError, ClusterError, InputError, RowsLostError, StoreError
from ..ensemble import Assigner, materialize
from ..executors import TrainJob, train_member
from ..members import Learner, Member, member_from_bytes
from ..store.fs import sha

PURPOSE = "backend='dask'"


def _lost(exc: BaseException) -> RowsLostError:
    return RowsLostError(
        f"the cluster lost rows this model keeps there: a worker holding them died ({exc}). Nothing was changed. A "
        "model bound to a store recovers them from its files by itself; otherwise cf.load a saved store of this "
        "model, or fit again"
    )


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


def _train_remote(learner: Learner, schema: dict, task: str, job: TrainJob, sources: list) -> tuple[dict, bytes]:
    """On a worker: train one member, return its meta and native model bytes (never the model object).

    ``sources``: the tables that hold the job's rows on the cluster (Dask passes their values); the job's rows
    are then its skeleton."""
    try:
        threads = _distributed().get_worker().state.nthreads
    except ValueError:  # run outside a worker (tests calling it directly)
        threads = 1
    spec = Schema.from_dict(schema)
    if sources:
        job = TrainJob(job.name, materialize(job.rows, sources, spec.names))
    member = train_member(learner, spec, task, job, threads)
    return member.meta(), member.model_bytes()


# ------------------------------------------------------------------ tasks on the workers (pure functions of tables)
GROUP = "__cf_group__"


def _identity(rows: pa.Table) -> pa.Table:
    return rows


def _cut(rows: pa.Table, assign: Assigner, buckets: int, names: tuple) -> list[pa.Table]:
    """Stage 1 of the shuffle: a table's rows by bucket (group index mod ``buckets``), each tagged with its group."""
    rows = rows.select([ID, *names])
    group = assign(rows)
    keep = group >= 0
    tagged = rows.filter(pa.array(keep)).append_column(GROUP, pa.array(group[keep], pa.int64()))
    bucket = group[keep] % buckets
    return [tagged.filter(pa.array(bucket == b)) for b in range(buckets)]


def _piece(parts: list[pa.Table], b: int) -> pa.Table:
    return parts[b]


def _regroup(pieces: list[pa.Table]) -> dict[int, pa.Table]:
    """Stage 2: one bucket's pieces from every source, by group."""
    t = pa.concat_tables([p for p in pieces if p.num_rows] or pieces[:1])
    group = t.column(GROUP).to_numpy()
    t = t.drop_columns([GROUP])
    return {int(i): t.filter(pa.array(group == i)) for i in np.unique(group)}


def _pick(groups: dict[int, pa.Table], i: int) -> pa.Table | None:
    return groups.get(i)


def _place(skeleton: pa.Table, sources: list, names: tuple) -> pa.Table:
    return materialize(skeleton, sources, names)


def _detach(tables: list, name: str) -> str:
    """On the worker that holds ``tables``: store them again as plain data (scattered: no task, no lineage) and
    hand the new futures to the client under ``name``; the tasks that made them can then be forgotten."""
    distributed = _distributed()
    client = distributed.get_client()
    here = distributed.get_worker().address
    futures = [client.scatter(t, workers=[here], hash=False) for t in tables]
    client.publish_dataset(futures, name=name, override=True)
    return name


def _bytes_if(path: str, digest: str) -> bytes | None:
    """On a worker: the file's bytes if it is there with this sha256, else None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if sha(data) == digest else None


def _read_verified(path: str, digest: str, columns: list) -> pa.Table:
    """On a worker: a store's rows file, checked against the manifest's sha256 and layout before it is used."""
    import pyarrow.parquet as pq

    data = _bytes_if(path, digest)
    if data is None:
        raise ChecksumError(f"file {path!r} is missing or does not match its sha256 in the manifest (read on a Dask "
                            "worker); the store is corrupt or was modified outside clusterforget")
    table = pq.read_table(pa.BufferReader(data), use_threads=False)
    if table.column_names != list(columns):
        raise StoreError(f"file {path!r} does not hold the rows layout the manifest describes")
    return table


def _sees(path: str, digest: str) -> bool:
    return _bytes_if(path, digest) is not None


def _num_rows(t: pa.Table) -> int:
    return t.num_rows


def _mask(fn: Any, skeleton: pa.Table, sources: list, names: tuple) -> np.ndarray:
    return np.asarray(fn(materialize(skeleton, sources, names)), dtype=bool)


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

    # buckets of the two-stage shuffle: sources x BUCKETS pieces, then one table per bucket, then one per group
    BUCKETS = 32

    def _submit(self, client: Any, fn: Any, *args: Any) -> Any:
        # unique keys (pure=False): the same arguments in two calls must run again, never reuse a released result
        return client.submit(fn, *args, pure=False)

    def put(self, rows: pa.Table) -> Any:
        """The rows ride inside the task (not scattered): a lost worker's copy is recomputed from it."""
        client = current_client(self.client)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            return self._submit(client, _identity, rows)

    def shuffle(self, sources: Sequence[Any], assign: Assigner, n: int, schema: Schema) -> list[tuple]:
        names = schema.names
        client = current_client(self.client)
        buckets = max(1, min(n, self.BUCKETS))
        cut = [self._submit(client, _cut, s, assign, buckets, names) for s in sources]
        bucket = [self._submit(client, _regroup, [self._submit(client, _piece, c, b) for c in cut])
                  for b in range(buckets)]
        return [(self._submit(client, _pick, bucket[i % buckets], i),) for i in range(n)]

    def place(self, skeletons: Sequence[pa.Table], sources: Sequence[tuple], schema: Schema) -> list[Any]:
        client = current_client(self.client)
        return [self._submit(client, _place, sk, list(src), schema.names) for sk, src in zip(skeletons, sources)]

    def detach(self, handles: Sequence[Any]) -> list[Any]:
        """Each table is re-stored on its worker as plain data, so the scheduler forgets every task behind it:
        the input partitions, rows sent from the client, older tables that held forgotten rows. One task per
        worker; the new futures come back through a published dataset (how Dask passes futures between clients)."""
        if not handles:
            return []
        client = current_client(self.client)
        # wait until computed (a lost worker's share is recomputed now, while lineage exists); only counts travel
        self.row_counts(handles)
        where = client.who_has(list(handles))
        by_worker: dict[str, list[int]] = {}
        for i, h in enumerate(handles):
            holders = sorted(where.get(h.key) or [""])
            by_worker.setdefault(holders[0], []).append(i)
        batch = uuid.uuid4().hex[:12]
        tasks = {
            worker: client.submit(_detach, [handles[i] for i in idx], f"cf-detach-{batch}-{n}", pure=False,
                                  workers=[worker] if worker else None, allow_other_workers=True)
            for n, (worker, idx) in enumerate(by_worker.items())
        }
        out: list[Any] = [None] * len(handles)
        for worker, name in zip(tasks, self._gather(list(tasks.values()))):
            futures = client.get_dataset(name)
            client.unpublish_dataset(name)
            for i, f in zip(by_worker[worker], futures):
                out[i] = f
        return out

    def fetch(self, skeleton: pa.Table, sources: tuple, schema: Schema) -> pa.Table:
        return self._gather([self.place([skeleton], [sources], schema)[0]])[0]

    def masks(self, fn: Any, sources: Sequence[tuple], skeletons: Sequence[pa.Table], schema: Schema) -> list:
        client = current_client(self.client)
        return self._gather([self._submit(client, _mask, fn, sk, list(src), schema.names)
                             for sk, src in zip(skeletons, sources)])

    def _gather(self, futures: list) -> list:
        distributed = _distributed()
        try:
            return current_client(self.client).gather(futures)
        except distributed.KilledWorker as exc:
            raise ClusterError(
                f"Dask lost every worker that ran a task ({exc}); nothing was changed. Check the workers' memory "
                "limit and logs, then run the operation again"
            ) from exc
        except (distributed.client.FutureCancelledError, CancelledError) as exc:
            raise _lost(exc) from exc

    def cannot_read(self, path: str, digest: str) -> str | None:
        client = self.client if self.client is not None else _client_or_none()
        if client is None:
            return "no Dask client is connected"
        try:
            seen = self._gather([client.submit(_sees, path, digest, pure=False)])[0]
        except ClusterError as exc:  # a worker died running the probe: no cluster to read the store on now
            return f"no Dask worker could read the store ({exc})"
        if not seen:
            return f"the Dask workers do not see {path!r} as this process does (the store is not on storage they share)"
        return None

    def read(self, path: str, digest: str, columns: Sequence[str]) -> Any:
        # the task's lineage is the path and digest only: a lost worker's table is read again from the store
        return self._submit(current_client(self.client), _read_verified, path, digest, list(columns))

    def row_counts(self, handles: Sequence[Any]) -> list[int]:
        client = current_client(self.client)
        return self._gather([self._submit(client, _num_rows, h) for h in handles])

    def lost(self, handles: Sequence[Any]) -> bool:
        """Whether any of these tables is gone (its worker died: a detached table has no lineage to rerun)."""
        return any(getattr(h, "status", "finished") in ("lost", "cancelled", "error") for h in handles)

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
            # rows held here ride in the tasks on purpose (scattered data would die with its worker, and a rerun
            # after a worker loss would fail), so Dask's "large graph" advice does not apply here
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            # unique keys: identical jobs in two calls must train again, never reuse a cached result; the
            # sources go as their own argument, where Dask resolves futures to the tables they hold
            futures = [
                client.submit(_train_remote, learner, schema.to_dict(), task, TrainJob(job.name, job.rows),
                              list(job.sources), key=f"cf-member-{batch}-{i}", pure=False)
                for i, job in enumerate(jobs)
            ]
        try:
            if self.verbose and len(jobs) > 1:
                from tqdm.auto import tqdm

                for f in tqdm(distributed.as_completed(futures), total=len(futures), desc="training members",
                              unit="member"):
                    if f.status == "error":
                        break
            results = self._gather(futures)  # raises the first job's error, as the thread executor does
        finally:
            client.cancel(futures)
        return [member_from_bytes(meta, data) for meta, data in results]


def _is_paths(X: Any) -> bool:
    if isinstance(X, (str, PurePath, os.PathLike)):
        return True
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(p, (str, PurePath)) for p in X)


def _is_dask(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "dask"


def _raw_part(frame: Any, drop: list) -> pa.Table:
    return raw_table(frame.drop(columns=drop))[0]


def _describe(raw: pa.Table) -> tuple[int, list]:
    """Rows and per-column kind of one partition (None: only missing values, so no kind of its own)."""
    return raw.num_rows, [(n, None if pa.types.is_null(raw.column(n).type) else kind_of(n, raw.column(n).type))
                          for n in raw.column_names]


def _canonical_part(raw: pa.Table, schema: dict) -> pa.Table:
    return canonical(raw, Schema.from_dict(schema))


def _columns_of(frame: Any, names: list) -> Any:
    return frame[names]


def _select(t: pa.Table, names: list) -> pa.Table:
    return t.select(names)


def _with_ids(t: pa.Table, ids: pa.Array) -> pa.Table:
    return t.add_column(0, ID, ids)


class DaskInput(RemoteInput):
    """Rows of a dask DataFrame (or Parquet files), canonical and kept on the workers, one table per partition."""

    def __init__(self, client: Any, parts: list, lengths: list[int], schema: Schema, labels: Any, ids: Any):
        self.client = client
        self.parts = parts  # futures of the partitions' canonical feature tables
        self.lengths = lengths
        self.schema = schema
        self.n_rows = int(sum(lengths))
        self.labels = labels
        self.ids = ids

    def __repr__(self) -> str:
        return f"DaskInput({self.n_rows} rows in {len(self.parts)} partitions, columns {list(self.schema.names)!r})"

    def columns(self, names: Sequence[str]) -> pa.Table:
        if not names:
            return pa.table({})
        tables = self.client.gather([self.client.submit(_select, p, list(names), pure=False) for p in self.parts])
        return pa.concat_tables(tables)

    def sources(self, ids: pa.Array) -> tuple:
        out, start = [], 0
        for part, n in zip(self.parts, self.lengths):
            # a copy of the slice: the task carries these ids only (they are its lineage), not every id's buffer
            piece = ids.slice(start, n).take(pa.array(np.arange(n)))
            out.append(self.client.submit(_with_ids, part, piece, pure=False))
            start += n
        return tuple(out)


def _client_or_none() -> Any:
    try:
        return _distributed().default_client()
    except ValueError:
        return None


def read_input(X: Any, y: Any, ids: Any) -> tuple[Any, Any, Any]:
    """A dask DataFrame or Parquet paths (globs, fsspec URLs) as (``DaskInput``, labels, ids); others unchanged.

    ``y`` and ``ids`` name columns of the input (``y="label", ids="row_id"``); those columns are taken out
    of the features and brought to the client. Every partition is converted to the canonical layout on its
    worker and stays there; the schema is the one a single table of all partitions would give. Without a Dask
    client (``backend="local"``), Dask's local scheduler reads the input into this process instead.
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
    for name in cols:
        if name in RESERVED:
            raise InputError(f"column name {name!r} is reserved by clusterforget; rename that column")
    taken = [c for c in (y, ids) if c is not None]
    client = _client_or_none()
    if client is None:  # no cluster: Dask's local scheduler reads the input into this process, as one table
        table = pa.Table.from_pandas(X.compute(), preserve_index=False)
        labels = table.column(y).to_numpy()
        row_ids = table.column(ids).to_numpy() if ids is not None else None
        return table.drop_columns(taken), labels, row_ids
    frames = client.compute(X.to_delayed())  # the partitions, read and kept on the workers
    raw = [client.submit(_raw_part, f, taken, pure=False) for f in frames]
    described = client.gather([client.submit(_describe, r, pure=False) for r in raw])
    lengths = [n for n, _ in described]
    names = [n for n, _ in described[0][1]] if described else []
    if not names:
        raise InputError(f"the input has no feature column besides {taken!r}; pass at least one feature column")
    if not sum(lengths):
        raise InputError(f"the input has 0 rows (columns {cols[:20]!r}); pass at least one training row")
    kinds = []
    for j, name in enumerate(names):
        seen = {d[1][j][1] for d in described} - {None}
        if len(seen) > 1:
            raise InputError(f"column {name!r} holds numbers in some partitions and text in others; give it one type "
                             "(numbers, or strings for categories) in every partition")
        kinds.append(seen.pop() if seen else NUMERIC)
    schema = Schema(tuple(names), tuple(kinds), True)
    parts = [client.submit(_canonical_part, r, schema.to_dict(), pure=False) for r in raw]
    # the label and id columns come here, joined as one table of all partitions would hold them
    pd = optional("pandas", "reading a dask DataFrame")
    small = client.gather([client.submit(_columns_of, f, taken, pure=False) for f in frames])
    table = pa.Table.from_pandas(pd.concat(small, ignore_index=True), preserve_index=False)
    labels = table.column(y).to_numpy()
    row_ids = table.column(ids).to_numpy() if ids is not None else None
    return DaskInput(client, parts, lengths, schema, labels, row_ids), labels, row_ids


def dask_executor(n_jobs: int | None = None, verbose: bool = False) -> DaskExecutor:
    """``BACKENDS["dask"]``: fails at once, naming the extra, when dask is not installed."""
    _distributed()
    return DaskExecutor(n_jobs, verbose)


__all__ = ["ClusterError", "DaskExecutor", "DaskInput", "dask_executor", "read_input", "current_client"]
