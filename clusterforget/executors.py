"""Where members train: the one seam between deciding *what* to train (the ensemble) and running it.

``GroupedEnsemble.apply`` decides which groups need a new member and hands them to its executor as
``TrainJob``s; the executor returns one member per job, in job order. A member is a pure function of its
job (rows in id order, schema, task, learner settings), so any executor that runs ``train_member`` on the
job gives the same member bit for bit: the thread executor here, or a cluster executor in
``clusterforget.backends`` that runs it on remote workers and ships back the native model bytes.

An executor must raise (and so leave the ensemble unchanged) if any job fails; it never commits anything.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import pyarrow as pa

from .data import Schema
from .errors import ClusterForgetError, InputError
from .members import Learner, Member

# Members smaller than this train on one thread. `python -m bench.threads` on an idle 2-core Xeon under
# OMP_WAIT_POLICY=PASSIVE (what our entry points set): 2 threads / 1 thread = 3.4x the time at 25k rows,
# 2.2x at 62.5k, 1.6x at 125k, 1.06x at 250k, 0.76x at 500k; with the default policy about even up to
# 250k. Members are trained side by side anyway (one per thread), so a fit still uses every core.
MULTITHREAD_MIN_ROWS = 250_000


@dataclass(frozen=True)
class TrainJob:
    """One member to train: a group's rows (in id order) and the group's name for messages.

    When the rows live on a cluster (``sources``: handles of tables there that hold at least these rows), ``rows``
    is the group's *skeleton*: its ids, id hashes, the grouping's columns and its labels, in id order. The member
    trains on the full rows with exactly the skeleton's ids and labels (``ensemble.materialize``).
    """

    name: str
    rows: pa.Table
    sources: tuple = ()

    @property
    def n_rows(self) -> int:
        return self.rows.num_rows


def resolve_threads(n_jobs: int | None) -> int:
    """Worker threads: ``n_jobs`` as joblib reads it (None: every core; -1: every core; -2: all but one)."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return cores
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return max(1, int(n_jobs))


def member_threads(learner: Learner, n_rows: int, threads: int) -> int:
    """Threads one member trains with.

    Small members train on one thread: OpenMP barriers cost more than they save there, and on a busy machine
    two threads were measured 300x slower (0.38s vs 113s for 15k rows). Learners whose models depend on the
    thread count (``thread_invariant = False``) always get one thread, whatever the executor.
    """
    if n_rows < MULTITHREAD_MIN_ROWS or not learner.thread_invariant:
        return 1
    return max(1, threads)


def train_member(learner: Learner, schema: Schema, task: str, job: TrainJob, n_threads: int = 1) -> Member:
    """Train one member; a learner's own error becomes an ``InputError`` naming the group."""
    try:
        t0 = time.perf_counter()
        member = learner.train(job.rows, schema, task, member_threads(learner, job.n_rows, n_threads))
        member.fit_seconds = time.perf_counter() - t0  # for time estimates of planned retrains only
        return member
    except (ClusterForgetError, MemoryError):
        raise
    except Exception as exc:  # the learner's own errors (bad learner_params, ...) join the family
        detail = " ".join(str(exc).split())  # learners end their messages with newlines
        raise InputError(
            f"{learner.name} could not train group {job.name!r} ({job.n_rows} rows): {detail}; check "
            f"learner_params {learner.params!r}. Nothing was changed"
        ) from exc


class Executor(Protocol):
    """Trains members for the ensemble: one member per job, in job order, or raises."""

    def train(self, learner: Learner, schema: Schema, task: str, jobs: Sequence[TrainJob]) -> list[Member]:
        ...  # pragma: no cover


@runtime_checkable
class RowHolder(Protocol):
    """An executor that also keeps the groups' rows where it trains them (``backends.dask``).

    Handles are opaque to the core. A group's full rows are the rows of its handles whose ids are in its
    skeleton, in id order, with the skeleton's labels: a handle may hold more rows (removed ones, other groups'),
    never fewer. Every method returns at once with handles of work in flight, except ``fetch`` and ``masks``.
    """

    def put(self, rows: pa.Table) -> Any:
        """A handle to ``rows`` (full rows of this process) on the cluster."""

    def shuffle(self, sources: Sequence[Any], assign: Any, n: int, schema: Schema) -> list[tuple]:
        """Split the rows of ``sources`` by ``assign(table) -> group index (-1: none)`` where they are: for each
        of the ``n`` groups, the handles of its pieces."""

    def place(self, skeletons: Sequence[pa.Table], sources: Sequence[tuple], schema: Schema) -> list[Any]:
        """For each group, one handle to exactly its full rows (dropping whatever else its sources hold)."""

    def detach(self, handles: Sequence[Any]) -> list[Any]:
        """The same tables, derived from nothing: no record of how they were made (the input, removed rows, rows
        sent from here) is kept anywhere on the cluster. Called once an operation's tables are final."""

    def cannot_read(self, path: str, digest: str) -> str | None:
        """None if the cluster is connected and its workers read this file (by absolute path) with this sha256;
        otherwise why not, in words."""

    def read(self, path: str, digest: str, columns: Sequence[str]) -> Any:
        """A handle to the rows of the Parquet file at ``path``, read on a worker, which checks its sha256 and
        that it has exactly ``columns`` (a ``ChecksumError`` / ``StoreError`` otherwise)."""

    def row_counts(self, handles: Sequence[Any]) -> list[int]:
        """The number of rows of each table (waits for them: errors of their reads raise here)."""

    def lost(self, handles: Sequence[Any]) -> bool:
        """Whether any of these tables is gone from the cluster (``RowsLostError`` when one is used)."""

    def fetch(self, skeleton: pa.Table, sources: tuple, schema: Schema) -> pa.Table:
        """A group's full rows, brought into this process."""

    def masks(self, fn: Any, sources: Sequence[tuple], skeletons: Sequence[pa.Table], schema: Schema) -> list:
        """``fn(full rows)`` of each group (a boolean array per group), computed where the rows are."""


class ThreadExecutor:
    """Trains members in this process: several at once on a thread pool, or one with every thread."""

    name = "local"

    def __init__(self, n_jobs: int | None = None, verbose: bool = False):
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"ThreadExecutor(n_jobs={self.n_jobs!r})"

    def train(self, learner: Learner, schema: Schema, task: str, jobs: Sequence[TrainJob]) -> list[Member]:
        if not jobs:
            return []
        threads = resolve_threads(self.n_jobs)
        progress = None
        if self.verbose and len(jobs) > 1:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(jobs), desc="training members", unit="member")

        def one(job: TrainJob, n_threads: int) -> Member:
            m = train_member(learner, schema, task, job, n_threads)
            if progress is not None:
                progress.update(1)
            return m

        try:
            if threads > 1 and len(jobs) > 1:
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    return list(pool.map(lambda j: one(j, 1), jobs))
            return [one(j, threads) for j in jobs]
        finally:
            if progress is not None:
                progress.close()


# backend name -> factory(n_jobs, verbose) -> Executor; ``backends`` registers the others (loaded lazily)
BACKENDS: dict[str, Any] = {"local": ThreadExecutor}


def make_executor(backend: str, n_jobs: int | None, verbose: bool) -> Executor:
    if backend not in BACKENDS:
        from .errors import InputError

        raise InputError(f"backend={backend!r} is not known; use one of {sorted(BACKENDS)!r}")
    return BACKENDS[backend](n_jobs, verbose)


__all__ = ["BACKENDS", "make_executor", "TrainJob", "Executor", "RowHolder", "ThreadExecutor", "train_member", "member_threads", "resolve_threads",
           "MULTITHREAD_MIN_ROWS"]
