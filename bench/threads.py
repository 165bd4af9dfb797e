"""Re-measure ``executors.MULTITHREAD_MIN_ROWS`` (members under it train on one thread) under an OpenMP wait
policy: ``python -m bench.threads [--policy PASSIVE] [--busy] [--sizes 10000,25000,50000,100000]``.

One LightGBM member (the determinism settings of ``members.LightGBMLearner``, 100 rounds) is trained with 1
and with 2 threads, interleaved, ``--repeats`` times; the median seconds and the ratio 2 threads / 1 thread
are printed side by side. ``--busy`` runs a busy-looping process beside it (the contention of issue #11).
The policy is read when LightGBM's OpenMP runtime loads, so it is set before importing anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="PASSIVE", help="OMP_WAIT_POLICY for this run (PASSIVE or ACTIVE)")
    ap.add_argument("--busy", action="store_true", help="a busy process beside the training")
    ap.add_argument("--sizes", default="10000,25000,50000,100000")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    os.environ["OMP_WAIT_POLICY"] = a.policy
    import lightgbm as lgb
    import numpy as np

    from clusterforget.executors import MULTITHREAD_MIN_ROWS

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.busy else None
    try:
        print(f"OMP_WAIT_POLICY={a.policy}  busy process: {a.busy}  rule: {MULTITHREAD_MIN_ROWS} rows")
        print(f"{'rows':>8} {'1 thread s':>11} {'2 threads s':>12} {'2t / 1t':>8}")
        rng = np.random.default_rng(0)
        for n in (int(s) for s in a.sizes.split(",")):
            X = rng.normal(size=(n, 10))
            y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(a.repeats):
                for t in (1, 2):
                    params = {"objective": "binary", "num_threads": t, "deterministic": True, "force_row_wise": True,
                              "verbose": -1, "seed": 0, "bin_construct_sample_cnt": n}
                    t0 = time.perf_counter()
                    lgb.train(params, lgb.Dataset(X, y), 100)
                    times[t].append(time.perf_counter() - t0)
            one, two = statistics.median(times[1]), statistics.median(times[2])
            print(f"{n:>8} {one:>11.2f} {two:>12.2f} {two / one:>8.2f}", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
