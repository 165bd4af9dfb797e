"""Kill harness: run store operations in child processes, kill them at every write / fsync / rename / delete
step and at random moments, and check what a crash leaves.

After each kill the store must load, its checksums verify, it must hold exactly the old or the new version
(compared by a fingerprint of the manifest's content with file names replaced by their sha256), and if the
operation had returned, the new version, with no forgotten row in any file of the directory.

Children are forked from this process (no interpreter start per kill) and run side by side; the parent
never loads a model or trains (a process that ran OpenMP threads must not fork), so checks run in
forked checkers too. Long run (figures in README "Guarantees")::

    python tests/faults.py --kills 1000
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import clusterforget as cf
from clusterforget.data import ID
from clusterforget.store import fs
from clusterforget.store.commit import _content, read_manifest, verify

# The package imports its layers lazily; load them here, once, so that every forked child does not import
# scikit-learn and the store again (that made each run seconds slower)
import clusterforget.estimators  # noqa: E402,F401
import clusterforget.store.codec  # noqa: E402,F401
import clusterforget.export  # noqa: E402,F401

FAST = {"num_iterations": 3, "num_leaves": 4, "min_data_in_leaf": 2}
N = 48


def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"k": rng.choice(["a", "b", "c"], N), "x": rng.normal(size=N)})
    return X, (X["x"].to_numpy() > 0).astype(int)


def _model() -> cf.ForgetClassifier:
    return cf.ForgetClassifier(grouping="k", learner_params=FAST, n_jobs=1)


# each operation: (name, function of (store path) run in the child, ids it forgets)
def _fit(path: Path) -> None:
    X, y = data()
    _model().fit(X.iloc[:40], y[:40]).save(path)


def _loaded(path: Path) -> Any:
    return cf.load(path, n_jobs=1)


OPERATIONS: dict[str, tuple[Callable[[Path], Any], list]] = {
    "fit": (_fit, []),
    "forget_rows": (lambda p: _loaded(p).forget_rows([3, 7, 11]), [3, 7, 11]),
    "forget_group": (lambda p: _loaded(p).forget_group("b"), None),  # None: the ids of group "b"
    "relabel": (lambda p: _loaded(p).relabel("x > 0.5", 0), []),
    "add_rows": (lambda p: _loaded(p).add_rows(data()[0].iloc[40:], data()[1][40:]), []),
    "set_group_weight": (lambda p: _loaded(p).set_group_weight("a", 0.25), []),
}


@contextlib.contextmanager
def disk_full():
    """Every file the store starts writing fails with ENOSPC (as on a full disk), until the block ends."""

    def hook(stage: str) -> None:
        if stage == "create":
            raise OSError(errno.ENOSPC, "No space left on device")

    fs.set_crash_hook(hook)
    try:
        yield
    finally:
        fs.set_crash_hook(None)


def fingerprint(path: Path) -> str | None:
    """The version's content, independent of the random file names; None if there is no manifest."""
    if not (path / fs.MANIFEST).exists():
        return None
    doc = read_manifest(path)
    content = _content(doc)
    content["files"].pop(fs.SECRET)  # random per store: every fit draws its own
    for g in content["groups"]:
        g.pop("fit_seconds", None)  # how long the member took to train: timing, not the model
    content["files"] = sorted(content["files"].values())  # names are random; the set of contents is not
    text = fs.dumps(content).decode()
    for name, digest in doc["files"].items():
        text = text.replace(json.dumps(name), json.dumps(digest))
    return text


def ids_on_disk(path: Path) -> set:
    """Every row id in every Parquet file of the directory (referenced or not)."""
    out: set = set()
    for f in path.rglob("*.parquet"):
        try:
            out |= set(pq.read_table(f, columns=[ID], use_threads=False).column(ID).to_pylist())
        except Exception:  # a torn, unreferenced file: read its bytes instead
            raw = f.read_bytes()
            out |= {i for i in range(N) if f"{i}".encode() in raw}  # conservative: flags more, never fewer
    return out


@dataclass
class Expected:
    old: str | None
    new: str
    steps: int
    seconds: float
    forgotten: list


def _child(path: Path, op: str, kill_at: int | None, marker: Path, count_to: Path | None) -> None:
    """In the forked child: run ``op`` on ``path``; with ``kill_at``, SIGKILL ourselves at that step."""
    steps = 0

    def hook(stage: str) -> None:
        nonlocal steps
        steps += 1
        if kill_at is not None and steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    code = 0
    try:
        fs.set_crash_hook(hook)
        t0 = time.perf_counter()
        OPERATIONS[op][0](path)
        elapsed = time.perf_counter() - t0
        marker.write_text("returned")
        if count_to is not None:
            count_to.write_text(json.dumps({"steps": steps, "seconds": elapsed}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent through the exit code
        sys.stderr.write(f"child {op}: {type(exc).__name__}: {exc}\n")
        code = 3
    finally:
        os._exit(code)


def _fork(path: Path, op: str, kill_at: int | None, marker: Path, count_to: Path | None = None) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(path, op, kill_at, marker, count_to)
    return pid


class Harness:
    def __init__(self, root: Path, parallel: int = 2, seed: int = 0):
        self.root = root
        self.parallel = parallel
        self.rng = random.Random(seed)
        self.base = root / "base"
        self.expected: dict[str, Expected] = {}
        self.kills = 0
        self.outcomes = {"old": 0, "new": 0}
        self.n = 0

    def _run_clean(self, op: str, path: Path) -> dict:
        count = self.root / f"count-{op}.json"
        pid = _fork(path, op, None, self.root / f"marker-{op}", count)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{op} failed without a kill")
        return json.loads(count.read_text())

    def prepare(self) -> None:
        """The base store, and each operation's old/new fingerprints, step count and duration."""
        self.root.mkdir(parents=True, exist_ok=True)
        info = self._run_clean("fit", self.base)
        base_fp = fingerprint(self.base)
        self.expected["fit"] = Expected(None, base_fp, info["steps"], info["seconds"], [])
        b_ids = [i for i in range(40) if data()[0]["k"].iloc[i] == "b"]
        for op, (_, forgotten) in OPERATIONS.items():
            if op == "fit":
                continue
            path = self.root / f"clean-{op}"
            shutil.copytree(self.base, path)
            info = self._run_clean(op, path)
            self.expected[op] = Expected(base_fp, fingerprint(path), info["steps"], info["seconds"],
                                         b_ids if forgotten is None else forgotten)
            assert self.expected[op].new != base_fp, op

    def _more(self, n: int) -> list[tuple[str, int | None, float | None]]:
        """``n`` more runs killed at a random step (these always end in a kill)."""
        ops = list(self.expected)
        return [(op, self.rng.randint(1, self.expected[op].steps), None) for op in self.rng.choices(ops, k=n)]

    def plan(self, kills: int) -> list[tuple[str, int | None, float | None]]:
        """Every step of every operation first, then random steps and random moments, to ``kills`` in all."""
        out: list[tuple[str, int | None, float | None]] = []
        for op, e in self.expected.items():
            out += [(op, k, None) for k in range(1, e.steps + 1)]
        ops = list(self.expected)
        while len(out) < kills:
            op = self.rng.choice(ops)
            if self.rng.random() < 0.5:
                out.append((op, self.rng.randint(1, self.expected[op].steps), None))
            else:  # a SIGKILL from outside at a random moment of the child's life
                out.append((op, None, self.rng.uniform(0.0, 1.5 * self.expected[op].seconds + 0.05)))
        return out

    def _start(self, op: str, kill_at: int | None, delay: float | None) -> tuple:
        self.n += 1
        work = self.root / f"run-{self.n}"
        work.mkdir()
        path = work / "s"
        if op != "fit":
            shutil.copytree(self.base, path)
        marker = work / "returned"
        pid = _fork(path, op, kill_at, marker)
        return pid, op, path, marker, delay, time.monotonic()

    def check(self, op: str, path: Path, marker: Path) -> str:
        """What the kill left (runs in a forked checker: loading builds members, which may start OpenMP
        threads, and a process that ran them must not fork again)."""
        e = self.expected[op]
        returned = marker.exists()
        if op == "fit" and not (path / fs.MANIFEST).exists():
            assert not returned, "fit returned but the store has no manifest"
            return "old"
        model = cf.load(path)  # recovery: cleans what the crash left
        verify(path)
        fp = fingerprint(path)
        assert fp in (e.old, e.new), f"{op}: the store is neither the old nor the new version"
        outcome = "new" if fp == e.new else "old"
        if returned:
            assert outcome == "new", f"{op} returned, but the store holds the old version"
        if outcome == "new" and e.forgotten:
            assert not (set(e.forgotten) & ids_on_disk(path)), f"{op}: a forgotten row is still in a file"
            assert model._store.tombstoned(e.forgotten) == e.forgotten
        return outcome

    def _fork_check(self, op: str, path: Path, marker: Path) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the checker
            code = 2
            try:
                code = {"old": 0, "new": 1}[self.check(op, path, marker)]
            except BaseException as exc:  # noqa: BLE001
                sys.stderr.write(f"CHECK FAILED after a kill in {op}: {type(exc).__name__}: {exc}\n")
            finally:
                os._exit(code)
        return pid

    def run(self, kills: int, progress: bool = False) -> dict:
        t0 = time.perf_counter()
        if not self.expected:
            self.prepare()
        todo = self.plan(kills)
        running: list[dict] = []
        done = 0
        while todo or running:
            if not todo and self.kills + len(running) < kills:
                # a random-moment kill can arrive after the operation returned: plan more until enough kills
                todo = self._more(kills - self.kills - len(running))
            while todo and len(running) < self.parallel:
                pid, op, path, marker, delay, started = self._start(*todo.pop(0))
                running.append({"pid": pid, "op": op, "path": path, "marker": marker, "delay": delay,
                                "started": started, "stage": "op"})
            time.sleep(0.002)
            for r in list(running):
                if r["delay"] is not None and time.monotonic() - r["started"] >= r["delay"]:
                    try:
                        os.kill(r["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    r["delay"] = None
                got, status = os.waitpid(r["pid"], os.WNOHANG)
                if got == 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
                if r["stage"] == "op":
                    if code not in (0, -signal.SIGKILL):
                        raise AssertionError(f"{r['op']}: the child failed with exit code {code}")
                    self.kills += code == -signal.SIGKILL
                    r["delay"] = None  # the op ended before its random kill: never kill its checker
                    r["pid"], r["stage"] = self._fork_check(r["op"], r["path"], r["marker"]), "check"
                    continue
                if code not in (0, 1):
                    raise AssertionError(f"{r['op']}: the check after a kill failed (exit code {code})")
                self.outcomes["new" if code == 1 else "old"] += 1
                running.remove(r)
                shutil.rmtree(r["path"].parent)
                done += 1
                if progress and done % 100 == 0:
                    print(f"{done} runs, {self.kills} kills, {time.perf_counter() - t0:.0f}s", flush=True)
        return {"runs": done, "kills": self.kills, **self.outcomes, "seconds": round(time.perf_counter() - t0, 1),
                "steps": {op: e.steps for op, e in self.expected.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs to deliver (runs whose random kill came "
                        "after the operation returned are checked too, and do not count)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        result = Harness(Path(tmp), a.parallel, a.seed).run(a.kills, progress=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
