"""One side of the fit wall-time / peak-memory comparison, in its own process.

    python -m bench.memchild --side mono|grouped --data bench/results/tmp/scale_1000000 --grouping hash:16

Loads the scale data (``.npy`` files the parent wrote; no pickle), resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``, falling back to ``ru_maxrss`` where that is not possible), fits, and prints one
JSON line: fit seconds, RSS before the fit and the peak RSS during it (MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024.0
    return out


def reset_peak() -> tuple[float, str]:
    """Current RSS (MiB) and how the peak will be read: 'VmHWM' after a reset, else 'ru_maxrss'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return _status()["VmRSS"], "VmHWM"
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "ru_maxrss"


def peak_rss_mb(mark: str) -> float:
    if mark == "VmHWM":
        return _status()["VmHWM"]
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["mono", "grouped"], required=True)
    ap.add_argument("--data", required=True, help="prefix of <prefix>_X.npy and <prefix>_y.npy")
    ap.add_argument("--grouping", default="hash:16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import numpy as np  # noqa: F401
    import lightgbm  # noqa: F401  (both sides import the same libraries before the baseline is taken)

    import clusterforget as cf
    from bench.common import monolith_fit

    X = np.load(a.data + "_X.npy")
    y = np.load(a.data + "_y.npy")
    before, peak_mark = reset_peak()
    t0 = time.perf_counter()
    if a.side == "mono":
        model = monolith_fit(X, y.astype(float), "classification", 2, [], seed=a.seed)
    else:
        kind, k = a.grouping.split(":")
        grouping = cf.HashGroups(int(k)) if kind == "hash" else cf.KMeansGroups(int(k))
        model = cf.ForgetClassifier(grouping=grouping, random_state=a.seed).fit(X, y)
    fit_s = time.perf_counter() - t0
    peak = peak_rss_mb(peak_mark)
    del model
    print(json.dumps({"side": a.side, "fit_s": fit_s, "rss_before_mb": before, "rss_peak_mb": peak,
                      "peak_source": peak_mark, "threads": os.cpu_count(), "rows": int(len(y))}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
