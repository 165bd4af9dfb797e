"""Section ``scoring``, the exports' rows: ``format="compiled"`` and ``format="onnx"`` against one LightGBM model.

Same model and rows as the routed rows of ``bench.scoring`` (adult by ``native-country``, routed), same "one model"
(``Booster.predict`` on the encoded float64 matrix, one thread), each pair timed back to back:

* **Compiled** (target: 3x faster, so at most 0.33x one model's time): ``cf.Scorer`` of an authenticated compiled
  export (tl2cgen libraries) on the DataFrame, against the one model on its matrix and from the same DataFrame
  (conversion and encoding included), on one thread each and, with ``n_threads=2``, against the one model on one
  and on two threads; the compiled members' tree work alone (each member's library on its own
  rows, routed and encoded beforehand) and the DataFrame's conversion alone (``conform``), which are the two
  floors; parity (bitwise against ``predict_proba``).
* **ONNX** (target: within 1.5x): the routed graph in onnxruntime (one thread) vs one model's graph (an export of
  ``HashGroups(1)`` without early stopping: the same trees as the one model), on prepared feeds (the graph alone)
  and from the DataFrame (``feeds`` included), at 10k rows and for one row; parity (max |diff|).
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import log, paired, summary


def _compiled(routed: Any, one: Any, data: dict[int, tuple[Any, np.ndarray]], tmp: Path, reps: int,
              pairs: Callable, row: Callable, table: list[dict[str, Any]]) -> dict[str, Any]:
    import clusterforget as cf
    from clusterforget._compat import available
    from clusterforget.data import conform
    from clusterforget.members import encode
    from clusterforget.scoring import Encoded

    if not (available("tl2cgen") and available("treelite") and shutil.which("gcc")):
        log("scoring: compiled export skipped (needs the compiled extra and gcc)")
        return {"skipped": "needs treelite, tl2cgen and gcc"}
    key = b"bench-scoring-compiled-key-32-by"
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    routed.export(tmp / "compiled", format="compiled", key=key)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the members compile side by side (one gcc per core): wall time and the gcc runs' CPU time, which load hides less
    out: dict[str, Any] = {"export_s": time.perf_counter() - t0, "rows": {}, "compile_cpu_s": (
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)}
    scorer = cf.Scorer(tmp / "compiled", key=key)
    scorer2 = cf.Scorer(tmp / "compiled", key=key, n_threads=2)
    spec = scorer.spec
    compiled = [type(sm.member).__name__ == "CompiledMember" for sm in spec.members]
    out["members"], out["compiled_members"] = len(compiled), sum(compiled)
    for n, (rows, M) in data.items():
        table_ = conform(rows, spec.schema)
        # the tree work alone: each compiled member on its routed rows, matrices built beforehand
        by_key = spec.routes()
        where = spec.grouping.route(table_, spec.state, {k: i for i, k in enumerate(by_key)})
        enc = Encoded(table_, spec.schema)
        work = []
        for g, positions in enumerate(by_key.values()):
            rows_g = np.flatnonzero((where == g) | (where < 0))  # a row of an unknown group goes to every member
            for i in positions:
                if compiled[i] and len(rows_g):
                    work.append((spec.members[i].member, enc.matrix(spec.members[i].member, rows_g)))
        got = pairs({"one": lambda: one.booster.predict(M, num_threads=1),
                     "one_2": lambda: one.booster.predict(M, num_threads=2),
                     # one model from the same DataFrame: its conversion and encoding, then its trees
                     "one_frame": lambda: one.booster.predict(encode(conform(rows, spec.schema), spec.schema,
                                                                     one.vocab), num_threads=1),
                     "scorer": lambda: scorer.predict_proba(rows),
                     "scorer_2": lambda: scorer2.predict_proba(rows),
                     "members": lambda: [m.predict_encoded(X, spec.schema) for m, X in work],
                     "conform": lambda: conform(rows, spec.schema)}, reps)
        res = {k: summary(v) for k, v in got.items()}
        for k in ("scorer", "scorer_2", "members", "conform"):
            res[f"{k}_x"] = 1 / paired(got["one"], got[k])
        for k in ("scorer", "members", "conform"):
            res[f"{k}_cpu_x"] = 1 / paired(got["one_cpu"], got[f"{k}_cpu"])
        res["scorer_frame_x"] = 1 / paired(got["one_frame"], got["scorer"])
        res["scorer_2_vs_one_2_x"] = 1 / paired(got["one_2"], got["scorer_2"])  # both on two threads
        res["bitwise"] = bool(np.array_equal(scorer.predict_proba(rows), routed.predict_proba(rows))
                              and np.array_equal(scorer2.predict_proba(rows), routed.predict_proba(rows)))
        out["rows"][n] = res
        table.append(row(f"compiled cf.Scorer, {n:,} rows / one model, one thread each (bitwise: {res['bitwise']})",
                         res["scorer_x"], 1 / 3))
        table.append(row(f"compiled cf.Scorer, {n:,} rows / one model scoring the same DataFrame (conversion, "
                         "encoding, trees)", res["scorer_frame_x"], 1 / 3))
        table.append(row(f"  of which the compiled members' tree work, {n:,} rows / one model", res["members_x"], None))
        table.append(row(f"  of which the DataFrame's conversion (conform), {n:,} rows / one model", res["conform_x"],
                         None))
        table.append(row(f"  the same in CPU time, {n:,} rows / one model (members' tree work {res['members_cpu_x']:.2f}x, "
                         f"conversion {res['conform_cpu_x']:.2f}x)", res["scorer_cpu_x"], 1 / 3))
        table.append(row(f"compiled cf.Scorer(n_threads=2), {n:,} rows / one model on one thread", res["scorer_2_x"],
                         1 / 3))
        table.append(row(f"compiled cf.Scorer(n_threads=2), {n:,} rows / one model on two threads",
                         res["scorer_2_vs_one_2_x"], 1 / 3))
        log(f"scoring: compiled, {n:,} rows: one model {res['one']['median'] * 1e3:.1f} ms "
            f"({res['one_2']['median'] * 1e3:.1f} ms on two threads, {res['one_frame']['median'] * 1e3:.1f} ms from "
            f"the DataFrame), compiled Scorer {res['scorer']['median'] * 1e3:.1f} ms ({res['scorer_x']:.2f}x; "
            f"{res['scorer_frame_x']:.2f}x the DataFrame's), on two threads {res['scorer_2']['median'] * 1e3:.1f} ms "
            f"({res['scorer_2_x']:.2f}x; {res['scorer_2_vs_one_2_x']:.2f}x one model on two threads), its members' "
            f"tree work {res['members']['median'] * 1e3:.1f} ms ({res['members_x']:.2f}x), conversion "
            f"{res['conform']['median'] * 1e3:.1f} ms ({res['conform_x']:.2f}x); bitwise {res['bitwise']}; "
            f"{out['compiled_members']} of {out['members']} members compiled in {out['export_s']:.0f} s "
            f"({out['compile_cpu_s']:.0f} s of gcc CPU)")
    return out


def _onnx(routed: Any, ds: Any, rounds: int, data: dict[int, tuple[Any, np.ndarray]], tmp: Path, reps: int,
          pairs: Callable, row: Callable, table: list[dict[str, Any]]) -> dict[str, Any]:
    import clusterforget as cf
    from clusterforget._compat import available

    if not (available("onnx") and available("onnxruntime")):
        log("scoring: ONNX export skipped (needs the onnx extra)")
        return {"skipped": "needs onnx and onnxruntime"}
    from clusterforget.export.onnx import feeds, session

    single = cf.ForgetClassifier(grouping=cf.HashGroups(1), combine="average", early_stopping=False,
                                 learner_params={"num_iterations": rounds}, n_jobs=2).fit(ds.X, ds.y, ids=ds.ids)
    t0 = time.perf_counter()
    routed.export(tmp / "routed.onnx", format="onnx")
    out: dict[str, Any] = {"export_s": time.perf_counter() - t0, "bytes": (tmp / "routed.onnx").stat().st_size,
                           "rows": {}}
    single.export(tmp / "one.onnx", format="onnx")
    s_routed, s_one = session(tmp / "routed.onnx"), session(tmp / "one.onnx")
    schema, schema1 = routed.ensemble_.schema, single.ensemble_.schema
    cases = {**{n: rows for n, (rows, _) in data.items()}, 1: ds.X_test.head(1)}
    for n, rows in cases.items():
        f_routed, f_one = feeds(rows, schema), feeds(rows, schema1)
        got = pairs({"one": lambda: s_one.run(None, f_one), "routed": lambda: s_routed.run(None, f_routed),
                     "one_frame": lambda: s_one.run(None, feeds(rows, schema1)),
                     "routed_frame": lambda: s_routed.run(None, feeds(rows, schema))}, reps if n > 1 else 200)
        res = {k: summary(v) for k, v in got.items()}
        res["graph_x"] = 1 / paired(got["one"], got["routed"])
        res["frame_x"] = 1 / paired(got["one_frame"], got["routed_frame"])
        res["max_abs_diff"] = float(np.abs(s_routed.run(None, f_routed)[1] - routed.predict_proba(rows)).max())
        out["rows"][n] = res
        what = f"{n:,} rows" if n > 1 else "one row"
        table.append(row(f"routed ONNX graph, {what} / one model's graph (max |diff| {res['max_abs_diff']:.1e})",
                         res["graph_x"], 1.5 if n > 1 else None))
        table.append(row(f"  the same from the DataFrame (feeds included), {what}", res["frame_x"], None))
        log(f"scoring: ONNX, {what}: one model's graph {res['one']['median'] * 1e3:.2f} ms, routed graph "
            f"{res['routed']['median'] * 1e3:.2f} ms ({res['graph_x']:.2f}x; from the DataFrame "
            f"{res['frame_x']:.2f}x); max |diff| {res['max_abs_diff']:.1e}")
    return out


def run_exports(routed: Any, one: Any, ds: Any, rounds: int, data: dict[int, tuple[Any, np.ndarray]],
                tmp: Path, reps: int, pairs: Callable, row: Callable, table: list[dict[str, Any]]) -> dict[str, Any]:
    """The compiled and ONNX rows; ``data`` maps a row count to (the DataFrame, its matrix for the one model)."""
    return {"compiled": _compiled(routed, one, data, tmp, reps, pairs, row, table),
            "onnx": _onnx(routed, ds, rounds, data, tmp, reps, pairs, row, table)}
