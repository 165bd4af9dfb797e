"""The output-difference attack: deletion itself can leak the deleted rows (Chen et al., CCS 2021).

Whoever can query the model before and after a deletion sees which inputs' outputs moved most; the
deleted rows' outputs move more than other rows', so they stand out. The attack needs the previous
version, whose members exist only until the commit purges them, so it runs inside the forget:
``forget_rows(ids, audit=True)`` scores the forgotten rows and an equal-size sample of remaining training
rows (the controls) before and after the change, and the result (aggregates only: no id, no feature value)
goes into ``report.audit`` and the ledger line.

Reported: attack AUC (forgotten vs controls, score = L1 change of the output) with a bootstrap 95 %
interval, and the same attack against two mitigations — label-only outputs (only a changed predicted class
counts) and outputs rounded to one decimal. Further mitigations: serve labels or rounded scores only,
batch deletion requests so that one before/after pair mixes many requests, and publish new versions on a
schedule rather than after each request.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import ID
from ..ensemble import GroupedEnsemble, Outcome
from ..members import CLASSIFICATION
from ..report import Report
from .exact import rows_at
from .mia import attack_metrics
from .result import Check

MAX_CONTROLS = 1_000
ATTACK = "output difference before/after the deletion (Chen et al., CCS 2021)"
MITIGATIONS = ("serve labels only", "round scores", "batch deletion requests", "publish versions on a schedule")


def _rows(ens: GroupedEnsemble, ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """(forgotten rows, control rows) as feature tables, before the change. Chosen on the rows held here (the
    skeletons when the rows live on a cluster); only the chosen rows' features are fetched."""
    forgotten, others = [], []
    for g in ens.groups.values():
        hit = pc.is_in(g.rows.column(ID), value_set=ids)
        forgotten.append((g, g.rows.filter(hit)))
        others.append((g, g.rows.filter(pc.invert(hit))))
    names = list(ens.schema.names)
    f = rows_at(ens, forgotten, np.arange(sum(t.num_rows for _, t in forgotten))).select(names)
    total = sum(t.num_rows for _, t in others)
    n = min(MAX_CONTROLS, max(f.num_rows, 50), total)
    pick = np.sort(np.random.default_rng(0).choice(total, size=n, replace=False)) if n else np.zeros(0, int)
    controls = rows_at(ens, others, pick)
    return f, controls.select(names)


def _auc(pos: np.ndarray, neg: np.ndarray) -> dict[str, Any]:
    if len(pos) == 0 or len(neg) == 0 or np.all(np.r_[pos, neg] == np.r_[pos, neg][0]):
        return {"auc": 0.5, "auc_ci": [0.5, 0.5]}
    m = attack_metrics(pos, neg, n_boot=100)
    return {"auc": m["auc"], "auc_ci": m["auc_ci"]}


def audit_forget(ens: GroupedEnsemble, ids: pa.Array, run: Callable[[], Outcome]) -> Outcome:
    """Run the change ``run`` on the state ``ens`` and attach the output-difference attack's figures (old state
    against the new one) as ``report.audit``."""
    ready = any(g.member is not None for g in ens.groups.values())
    if not ready:
        outcome = run()
        outcome.report.audit = {"attack": ATTACK, "skipped": "no member could predict before the change"}
        return outcome
    f, c = _rows(ens, ids)
    probe = pa.concat_tables([f, c])
    before = ens.predict_raw(probe)
    outcome = run()
    # the change is made: from here on nothing may raise, or the change would not be committed for an audit
    try:
        outcome.report.audit = _figures(outcome.state, f, c, probe, before)
    except Exception as exc:  # noqa: BLE001 - the deletion stands; the audit says why it has no figures
        outcome.report.audit = {"attack": ATTACK, "skipped": f"the audit failed: {type(exc).__name__}: {exc}"}
    return outcome


def _figures(ens: GroupedEnsemble, f: pa.Table, c: pa.Table, probe: pa.Table, before: np.ndarray) -> dict[str, Any]:
    if not any(g.member is not None for g in ens.groups.values()):
        return {"attack": ATTACK, "skipped": "no member can predict after the change (deferred)"}
    after = ens.predict_raw(probe)
    nf = f.num_rows
    change = np.abs(after - before).sum(axis=1)
    audit: dict[str, Any] = {"attack": ATTACK, "forgotten": nf, "controls": c.num_rows,
                             "mean_change_forgotten": round(float(change[:nf].mean()), 6) if nf else 0.0,
                             "mean_change_controls": round(float(change[nf:].mean()), 6) if len(change) > nf else 0.0}
    audit.update(_auc(change[:nf], change[nf:]))
    if ens.task == CLASSIFICATION:
        flipped = (np.argmax(after, axis=1) != np.argmax(before, axis=1)).astype(float)
        audit["label_only"] = _auc(flipped[:nf], flipped[nf:])
    rounded = np.abs(np.round(after, 1) - np.round(before, 1)).sum(axis=1)
    audit["rounded_0.1"] = _auc(rounded[:nf], rounded[nf:])
    audit["mitigations"] = list(MITIGATIONS)
    return audit


def check_diff(lines: list[dict]) -> Check:
    """Report the audits recorded in ledger lines (by ``forget_rows(..., audit=True)``); informational."""
    audits = [ln["audit"] for ln in lines if isinstance(ln.get("audit"), dict) and "auc" in ln["audit"]]
    if not audits:
        return Check("diff", None, "no output-difference audit recorded for this deletion; run forget_rows(ids, "
                                   "audit=True) (the previous version is gone once the forget commits)", {})
    a = audits[-1]
    leaks = a["auc_ci"][0] > 0.5
    text = (f"{ATTACK}: AUC {a['auc']:.3f} {a['auc_ci']} over {a['forgotten']} forgotten vs {a['controls']} "
            f"control row(s)" + ("; the deletion is visible in before/after outputs" if leaks else "; no signal"))
    if "label_only" in a:
        text += f"; label-only AUC {a['label_only']['auc']:.3f}"
    text += f"; rounded AUC {a['rounded_0.1']['auc']:.3f}. Mitigations: {', '.join(MITIGATIONS)}"
    return Check("diff", None, text, {"audits": audits, "leaks": leaks})


__all__ = ["audit_forget", "check_diff", "MITIGATIONS"]
