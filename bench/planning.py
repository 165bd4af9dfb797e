"""``cf.plan`` on every bundled data set: what it recommends within the default accuracy budget, and how long
planning takes (its own time budget is ``time_budget``)."""

from __future__ import annotations

from typing import Any

import numpy as np

import clusterforget as cf
from clusterforget.plan import DEFAULT_MAX_LOSS

from .common import SEED, load_real, log


def run_planning(cfg) -> list[dict[str, Any]]:
    rows = []
    for name in cfg.plan_datasets:
        ds = load_real(name)
        X = ds.X
        y = ds.y
        p = cf.plan(X, y, ids=ds.ids, max_accuracy_loss=DEFAULT_MAX_LOSS[ds.task], task=ds.task,
                    group_by=ds.keys[:1] or None, time_budget=cfg.plan_time_budget, random_state=SEED, progress=False)
        measured = [c for c in p.candidates if c.measured]
        one = measured[0]
        b = p.best
        rows.append({"dataset": name, "task": ds.task, "rows": p.rows_train, "metric": p.metric,
                     "budget": p.max_accuracy_loss, "best": b.name, "k": b.k, "loss": b.loss,
                     "forget_s": b.forget_s, "one_model_forget_s": one.forget_s,
                     "speedup": one.forget_s / b.forget_s if b.forget_s else float("nan"), "bound": p.bound,
                     "candidates": len(measured), "skipped": len(p.candidates) - len(measured), "plan_s": p.seconds,
                     "time_budget": cfg.plan_time_budget, "table": str(p)})
        log(f"plan {name}: {b.name} (loss {b.loss:+.4f} <= {p.max_accuracy_loss}), forget {b.forget_s:.3f} s vs one "
            f"model {one.forget_s:.3f} s; {len(measured)} measured in {p.seconds:.0f} s")
    return rows
