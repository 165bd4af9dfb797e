"""cProfile of the forget and predict paths on the scale models; file names are shown package-relative."""

from __future__ import annotations

import cProfile
import pstats
from typing import Any, Callable

import numpy as np


def _where(filename: str) -> str:
    """A package-relative location (never a machine path)."""
    f = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in f:
            return f.split(marker, 1)[1]
    for marker in ("/clusterforget/", "/bench/"):
        if marker in f:
            return marker.strip("/") + "/" + f.split(marker, 1)[1]
    if f.startswith("<") or f == "~":
        return f
    return f.rsplit("/", 1)[-1]


def profile(fn: Callable[[], Any], top: int = 14) -> dict[str, Any]:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    st = pstats.Stats(pr)
    total = max(st.total_tt, 1e-12)
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        name = func if filename == "~" else f"{_where(filename)}:{line}({func})"
        rows.append({"function": name, "calls": nc, "tottime_s": tt, "cumtime_s": ct})
    by_cum = sorted(rows, key=lambda r: -r["cumtime_s"])[:top]
    by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    return {"total_s": total, "by_cumtime": by_cum, "by_tottime": by_tot}


def run_profiles(scale: dict[str, Any], cfg) -> dict[str, Any]:
    models = scale["_models"]
    X, y, Xte = scale["_data"]
    out: dict[str, Any] = {"n_rows": scale["n_rows"]}
    rng = np.random.default_rng(12345)

    h = models.get("hash:16")
    if h is not None:
        # ids forgotten earlier in the run are gone: pick rows still held by the model
        held = set()
        for g in h.ensemble_.groups.values():
            held.update(g.rows.column("__cf_id__").to_numpy()[:2000].tolist())
        pool = sorted(held)
        pick = lambda: [pool[int(rng.integers(len(pool)))]]  # noqa: E731
        a = pick()
        out["forget_rows 1 row, retrain now (hash:16)"] = profile(lambda: h.forget_rows(a))
        b = pick()
        while b == a:
            b = pick()
        out["forget_rows 1 row, deferred (hash:16)"] = profile(lambda: h.forget_rows(b, retrain="deferred"))
        h.retrain_pending()
        snap = h.ensemble_  # states are immutable: keeping the reference is the undo
        out["forget_group (hash:16)"] = profile(lambda: h.forget_group(3))
        h.ensemble_ = snap
        n = min(len(Xte), 20_000)
        out[f"predict_proba average, {n:,} rows (hash:16)"] = profile(lambda: h.predict_proba(Xte[:n]))
    k = models.get("kmeans:16")
    if k is not None:
        n = min(len(Xte), 20_000)
        k.ensemble_ = k.ensemble_.evolve(combine="route")
        out[f"predict_proba route, {n:,} rows (kmeans:16)"] = profile(lambda: k.predict_proba(Xte[:n]))
        k.ensemble_ = k.ensemble_.evolve(combine="average")
    return out
