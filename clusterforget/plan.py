"""The planner: measure candidate groupings on the user's data and recommend one within their budgets.

``plan(X, y, ...)`` splits off a seeded holdout, fits each candidate (hash shards K = 1, 2, 4, ... bounded by the
data, the key columns the user names, learned clusters; route and average where both apply), scores it on the
holdout against one model (hash K=1), and times a few real single-row forgets on it. The recommendation is the
most accurate candidate that forgets a row within ``max_forget_seconds``, or the fastest whose accuracy loss is
within ``max_accuracy_loss``; the plan says which constraint bound the choice and why.

Accuracy loss is in the units of the task's primary metric, positive = worse than one model: AUC drop (binary),
log-loss increase (multiclass), relative RMSE increase (regression: 0.01 is 1%).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ._compat import optional
from .data import NUMERIC, as_ids, infer_schema, labels_array
from .errors import ClusterForgetError, InputError
from .estimators import ForgetClassifier, ForgetRegressor
from .members import DEFAULT_LEARNER
from .grouping import AutoGroups, Grouping, HashGroups, KeyGroups, KMeansGroups

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
METRIC = {BINARY: "auc", MULTICLASS: "log_loss", REGRESSION: "rmse"}
# used when the caller gives no budget at all: about what one hash shard costs on adult at K=4 (bench/)
DEFAULT_MAX_LOSS = {BINARY: 0.003, MULTICLASS: 0.005, REGRESSION: 0.01}
MIN_MEMBER_ROWS = 1_000  # smaller members are not candidates: LightGBM's leaf limits leave them near constant
HASH_KS = (1, 2, 4, 8, 16, 32, 64, 128)
KMEANS_KS = (4, 16)


@dataclass
class Candidate:
    """One setting the planner measured (or skipped, with the reason in ``status``)."""

    name: str
    grouping: Any  # the estimator's ``grouping=`` value
    combine: str = "average"
    max_group_rows: int | None = None
    k: int | None = None  # members after fit
    metric: float | None = None
    loss: float | None = None  # vs one model, positive = worse
    fit_s: float | None = None
    forget_s: float | None = None  # median of single-row forgets, retrain now
    deferred_ms: float | None = None  # single-row forget with retrain="deferred": time to no influence
    predict_rows_s: float | None = None
    min_rows: int | None = None
    median_rows: int | None = None
    status: str = "pending"

    @property
    def measured(self) -> bool:
        return self.status == "ok"

    def settings(self) -> dict[str, Any]:
        return {"grouping": self.grouping, "combine": self.combine, "max_group_rows": self.max_group_rows}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grouping"] = self.grouping.to_dict() if isinstance(self.grouping, Grouping) else self.grouping
        return d


MEASURED = ("k", "metric", "loss", "fit_s", "forget_s", "deferred_ms", "predict_rows_s", "min_rows", "median_rows",
            "status")


@dataclass
class Plan:
    """What ``plan`` measured and what it recommends; ``print(plan)`` shows the table."""

    task: str
    metric: str
    baseline: float
    rows_train: int
    rows_holdout: int
    candidates: list[Candidate]
    best: Candidate | None
    bound: str  # "max_forget_seconds", "max_accuracy_loss", or "none met"
    reason: str
    max_forget_seconds: float | None
    max_accuracy_loss: float | None
    estimator: dict[str, Any] = field(default_factory=dict)  # learner, learner_params, random_state
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def model(self) -> ForgetClassifier | ForgetRegressor:
        """An unfitted estimator with the recommended settings."""
        if self.best is None:  # pragma: no cover - plan always recommends when one candidate was measured
            raise InputError("this plan measured no candidate, so it has nothing to recommend; widen the budget")
        cls = ForgetRegressor if self.task == REGRESSION else ForgetClassifier
        return cls(**self.best.settings(), **self.estimator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "metric": self.metric, "baseline": self.baseline, "rows_train": self.rows_train,
            "rows_holdout": self.rows_holdout, "candidates": [c.to_dict() for c in self.candidates],
            "best": None if self.best is None else self.best.name, "bound": self.bound, "reason": self.reason,
            "max_forget_seconds": self.max_forget_seconds, "max_accuracy_loss": self.max_accuracy_loss,
            "estimator": dict(self.estimator), "notes": list(self.notes), "seconds": self.seconds,
        }

    def __str__(self) -> str:
        head = ["", "grouping", "K", self.metric, "loss", "fit s", "forget-1 s", "deferred ms", "predict rows/s",
                "rows min/median", "status"]
        rows = []
        for c in self.candidates:
            f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
            rows.append([
                "*" if c is self.best else "", c.name, f(c.k, "d"), f(c.metric, ".4f"), f(c.loss, "+.4f"),
                f(c.fit_s, ".2f"), f(c.forget_s, ".3f"), f(c.deferred_ms, ".2f"), f(c.predict_rows_s, ",.0f"),
                "" if c.min_rows is None else f"{c.min_rows:,}/{c.median_rows:,}", c.status,
            ])
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [
            f"plan: {self.task}, {self.rows_train:,} training / {self.rows_holdout:,} holdout rows; one model "
            f"{self.metric} {self.baseline:.4f}; loss positive = worse ({self.seconds:.1f} s)",
            line(head), *[line(r) for r in rows],
            f"recommended: {self.best.name if self.best else 'nothing'} "
            f"({'no candidate meets every budget' if self.bound == 'none met' else 'bound by ' + self.bound}): "
            f"{self.reason}",
        ]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def plot(self, path: str | Path) -> Path:
        """Accuracy loss against forget speedup (one model's fit time / forget time), the budgets drawn in."""
        plt = optional("matplotlib.pyplot", "plan.plot (pip install 'clusterforget[plan]')")
        done = [c for c in self.candidates if c.measured and c.forget_s]
        one = next((c for c in done if c.name == "hash K=1"), None)
        ref = one.fit_s if one is not None else max(c.fit_s for c in done)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in done:
            x, y = ref / c.forget_s, c.loss
            ax.scatter([x], [y], color="tab:red" if c is self.best else "tab:blue")
            ax.annotate(c.name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if self.max_accuracy_loss is not None:
            ax.axhline(self.max_accuracy_loss, color="gray", ls="--", label="max_accuracy_loss")
        if self.max_forget_seconds is not None:
            ax.axvline(ref / self.max_forget_seconds, color="gray", ls=":", label="max_forget_seconds")
        ax.set_xscale("log")
        ax.set_xlabel("forget speedup: one model's fit s / forget-1-row s")
        ax.set_ylabel(f"{self.metric} loss vs one model (positive = worse)")
        ax.set_title(f"clusterforget plan ({self.task}, {self.rows_train:,} rows)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


# ---------------------------------------------------------------------------------------------- measuring
def infer_task(y: np.ndarray) -> str:
    """Regression for floats with many distinct values, else binary or multiclass."""
    distinct = np.unique(y[~np.isnan(y)] if y.dtype.kind == "f" else y.astype(str))
    if y.dtype.kind == "f" and len(distinct) > 20:
        return REGRESSION
    return BINARY if len(distinct) <= 2 else MULTICLASS


def _score(task: str, model: Any, X: pa.Table, y: np.ndarray) -> float:
    from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

    if task == REGRESSION:
        return float(np.sqrt(mean_squared_error(y, model.predict(X))))
    proba = model.predict_proba(X)
    if task == BINARY:
        return float(roc_auc_score(y == model.classes_[1], proba[:, 1]))
    return float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=model.classes_))


def _loss(task: str, base: float, value: float) -> float:
    if task == BINARY:
        return base - value
    if task == MULTICLASS:
        return value - base
    return (value - base) / base if base else value


def describe(grouping: Any) -> str:
    """A candidate's name in the table: ``hash K=4``, ``kmeans K=16``, ``key race``, ``auto``."""
    if isinstance(grouping, (HashGroups, KMeansGroups)):
        return f"{grouping.kind} K={grouping.k}"
    if isinstance(grouping, str) and grouping != "auto":
        return f"key {grouping}"
    if isinstance(grouping, (list, tuple)):
        return "key " + "+".join(grouping)
    return "auto" if grouping == "auto" or isinstance(grouping, AutoGroups) else repr(grouping)


def default_candidates(schema_numeric: bool, n_train: int, group_by: Sequence[Any], largest_key: dict) -> list[Candidate]:
    """Hash K = 1, 2, 4, ... while members keep ``MIN_MEMBER_ROWS`` rows; each key (route and average; with
    ``max_group_rows`` when one key holds over a quarter of the rows); k-means (route and average)."""
    out = [Candidate(describe(HashGroups(k)), HashGroups(k)) for k in HASH_KS if k == 1 or n_train // k >= MIN_MEMBER_ROWS]
    out.append(Candidate("auto", "auto"))  # measured after the hash Ks: usually one of them, not fitted again
    for key in group_by:
        for combine in ("route", "average"):
            out.append(Candidate(f"{describe(key)} {combine}", key, combine))
        if largest_key.get(describe(key), 0) > n_train // 4:
            bound = max(MIN_MEMBER_ROWS, n_train // 8)
            out.append(Candidate(f"{describe(key)} average, max_group_rows={bound:,}", key, "average", bound))
    if schema_numeric:
        for k in KMEANS_KS:
            if n_train // k >= MIN_MEMBER_ROWS:
                for combine in ("route", "average"):
                    out.append(Candidate(f"{describe(KMeansGroups(k))} {combine}", KMeansGroups(k), combine))
    return out


def _measure(c: Candidate, cls: type, est: dict, task: str, Xtr, ytr, ids, Xte, yte, base: float | None,
             n_forgets: int, rng: np.random.Generator) -> None:
    t0 = time.perf_counter()
    m = cls(**c.settings(), **est).fit(Xtr, ytr, ids=ids)
    c.fit_s = time.perf_counter() - t0
    sizes = [g["rows"] for g in m.groups_]
    c.k, c.min_rows, c.median_rows = len(sizes), min(sizes), int(statistics.median(sizes))
    t0 = time.perf_counter()
    c.metric = _score(task, m, Xte, yte)
    c.predict_rows_s = len(yte) / max(time.perf_counter() - t0, 1e-9)
    c.loss = 0.0 if base is None else _loss(task, base, c.metric)
    victims = rng.choice(len(ids), n_forgets + 1, replace=False)
    t0 = time.perf_counter()
    m.forget_rows(ids.take(pa.array(victims[:1])), retrain="deferred")
    c.deferred_ms = (time.perf_counter() - t0) * 1000
    m.retrain_pending()
    times = []
    for v in victims[1:]:
        t0 = time.perf_counter()
        m.forget_rows(ids.take(pa.array([v])))
        times.append(time.perf_counter() - t0)
    c.forget_s = statistics.median(times)
    c.status = "ok"


# ---------------------------------------------------------------------------------------------- choosing
def _excluded(ordered: list[Candidate], best: Candidate, key: Callable[[Candidate], float]) -> Candidate | None:
    """The candidate just better than ``best`` by ``key`` in ``ordered`` (sorted by ``key``): what a budget excluded."""
    ahead = [c for c in ordered if key(c) < key(best)]
    return ahead[-1] if ahead else None


def recommend(candidates: list[Candidate], max_forget_seconds: float | None,
              max_accuracy_loss: float | None) -> tuple[Candidate | None, str, str]:
    """(best, the constraint that bound it, why): the most accurate candidate that forgets within
    ``max_forget_seconds`` (and, if given too, within ``max_accuracy_loss``), else the fastest within
    ``max_accuracy_loss``. When nothing meets the budgets, the closest candidate, said so."""
    done = [c for c in candidates if c.measured]
    if not done:
        return None, "none met", "no candidate was measured (time budget too small?)"
    accurate = sorted(done, key=lambda c: (c.loss, c.forget_s))
    fast = sorted(done, key=lambda c: (c.forget_s, c.loss))
    in_loss = lambda c: max_accuracy_loss is None or c.loss <= max_accuracy_loss  # noqa: E731
    if max_forget_seconds is not None:
        ok = [c for c in accurate if c.forget_s <= max_forget_seconds and in_loss(c)]
        if ok:
            best = ok[0]
            why = (f"the most accurate candidate that forgets a row within {max_forget_seconds:g} s "
                   f"(median {best.forget_s:.3f} s, loss {best.loss:+.4f})")
            if nearest := _excluded(accurate, best, lambda c: c.loss):
                why += f"; the more accurate {nearest.name} (loss {nearest.loss:+.4f}) takes {nearest.forget_s:.3f} s"
                return best, "max_forget_seconds", why
            return best, "no budget (the most accurate candidate meets them)", why
        fastest = fast[0]
        within = [c for c in fast if in_loss(c)]
        pick = within[0] if within else fastest
        return pick, "none met", (
            f"no candidate forgets a row within {max_forget_seconds:g} s"
            + (f" at loss <= {max_accuracy_loss:g}" if max_accuracy_loss is not None else "")
            + f"; {pick.name} is the fastest{' within the accuracy budget' if within else ''} "
            f"({pick.forget_s:.3f} s): raise max_forget_seconds, or use retrain='deferred' "
            f"({pick.deferred_ms:.2f} ms to no influence)")
    ok = [c for c in fast if in_loss(c)]
    if ok:
        best = ok[0]
        why = (f"the fastest candidate whose loss is within {max_accuracy_loss:g} (loss {best.loss:+.4f}, "
               f"forget {best.forget_s:.3f} s)")
        if nearest := _excluded(fast, best, lambda c: c.forget_s):
            why += f"; the faster {nearest.name} ({nearest.forget_s:.3f} s) loses {nearest.loss:+.4f}"
        return best, "max_accuracy_loss", why
    best = accurate[0]
    return best, "none met", (f"no candidate loses at most {max_accuracy_loss:g}; {best.name} is the most accurate "
                              f"(loss {best.loss:+.4f})")


def _holdout(y: np.ndarray, task: str, share: float, sample_rows: int, seed: int,
             notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and holdout positions: seeded, stratified for classification when every class has two
    rows; training rows sampled down to ``sample_rows`` (noted)."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if task != REGRESSION and np.unique(y.astype(str), return_counts=True)[1].min() >= 2:
        stratify = y
    tr, te = train_test_split(np.arange(len(y)), test_size=share, random_state=seed, stratify=stratify)
    if len(tr) > sample_rows:
        tr = np.random.default_rng(seed).choice(tr, sample_rows, replace=False)
        notes.append(f"measured on a seeded sample of {sample_rows:,} training rows (sample_rows); forget "
                     "seconds grow about linearly with the rows of a member")
    return np.sort(tr), np.sort(te)


# ---------------------------------------------------------------------------------------------- entry points
def plan(
    X: Any,
    y: Any,
    ids: Any = None,
    *,
    max_forget_seconds: float | None = None,
    max_accuracy_loss: float | None = None,
    candidates: str | Sequence[Any] = "default",
    group_by: str | Sequence[Any] | None = None,
    task: str | None = None,
    learner: str = DEFAULT_LEARNER,
    learner_params: dict | None = None,
    holdout: float = 0.2,
    n_forgets: int = 3,
    time_budget: float = 300.0,
    sample_rows: int = 300_000,
    random_state: int = 0,
    progress: bool = True,
) -> Plan:
    """Measure candidate groupings on ``X, y`` and recommend one within the budgets.

    Parameters
    ----------
    X, y, ids : the training data, as for ``fit``.
    max_forget_seconds : forget one row (retrain now) within this many seconds (median of ``n_forgets``).
    max_accuracy_loss : lose at most this much against one model on the holdout: AUC (binary), log-loss
        (multiclass), relative RMSE (regression). With neither budget, ``DEFAULT_MAX_LOSS[task]`` applies.
    candidates : ``"default"`` (hash K = 1, 2, 4, ... 128 while members keep 1,000 rows, ``"auto"``, each key
        in ``group_by`` routed and averaged, with ``max_group_rows`` when a key is huge, k-means K = 4, 16 routed
        and averaged), or a list of ``grouping=`` values (each fitted with ``combine="auto"``).
    group_by : key column(s) to try: a name, or a list of names / lists of names.
    task : ``"binary"``, ``"multiclass"`` or ``"regression"``; inferred from ``y`` by default.
    holdout : share of rows held out (stratified for classification, seeded by ``random_state``).
    time_budget : seconds; candidates left when it runs out are skipped (said in their status), as are hash K
        past one whose loss is over twice ``max_accuracy_loss`` (loss grows with K).
    sample_rows : larger training sets are sampled (seeded) to this many rows, and the plan says so.

    Returns
    -------
    Plan : ``print(plan)``, ``plan.best``, ``plan.model()``, ``plan.plot(path)``, ``plan.to_dict()``.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    for name, v in (("max_forget_seconds", max_forget_seconds), ("max_accuracy_loss", max_accuracy_loss)):
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0):
            raise InputError(f"{name} must be a number >= 0 or None, got {v!r}")
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be a share between 0 and 1, got {holdout!r}")
    if not isinstance(n_forgets, int) or n_forgets < 1:
        raise InputError(f"n_forgets must be a positive int, got {n_forgets!r}")
    schema, table = infer_schema(X)
    y = labels_array(y, table.num_rows)
    row_ids = as_ids(ids, table.num_rows)
    task = task or infer_task(y)
    if task not in METRIC:
        raise InputError(f"task must be one of {sorted(METRIC)}, got {task!r}")
    if max_forget_seconds is None and max_accuracy_loss is None:
        max_accuracy_loss = DEFAULT_MAX_LOSS[task]
        notes = [f"no budget given: max_accuracy_loss={max_accuracy_loss:g} (the default for {task})"]
    else:
        notes = []
    if group_by is None:
        keys: list[Any] = []
    else:
        keys = [group_by] if isinstance(group_by, str) else list(group_by)
    for key in keys:
        KeyGroups(key).validate(schema)

    tr, te = _holdout(y, task, holdout, sample_rows, random_state, notes)
    Xtr, Xte = table.take(pa.array(tr)), table.take(pa.array(te))
    ytr, yte, ids_tr = y[tr], y[te], row_ids.take(pa.array(tr))

    largest = {}  # rows of each key's largest group: a huge one gets a max_group_rows candidate
    for key in keys:
        cols = [key] if isinstance(key, str) else list(key)
        counts = Xtr.select(cols).group_by(cols).aggregate([([], "count_all")])["count_all"]
        largest[describe(key)] = max(counts.to_pylist())
    has_numeric = any(k == NUMERIC for k in schema.kinds)
    if isinstance(candidates, str):
        if candidates != "default":
            raise InputError(f'candidates must be "default" or a list of grouping= values, got {candidates!r}')
        cands = default_candidates(has_numeric, len(tr), keys, largest)
    else:
        cands = [Candidate(describe(g), g, "auto") for g in candidates]
        if not any(isinstance(c.grouping, HashGroups) and c.grouping.k == 1 for c in cands):
            cands.insert(0, Candidate(describe(HashGroups(1)), HashGroups(1)))  # the reference: one model
    one = next(c for c in cands if isinstance(c.grouping, HashGroups) and c.grouping.k == 1)
    cands.remove(one)
    cands.insert(0, one)
    auto_k = AutoGroups().choose_k(len(tr), "regression" if task == REGRESSION else "classification",
                                   None if task == REGRESSION else np.unique(ytr, return_counts=True)[1].tolist())
    for c in cands:
        if c.grouping == "auto":
            c.name = f"auto (hash K={auto_k})"

    cls = ForgetRegressor if task == REGRESSION else ForgetClassifier
    est = {"learner": learner, "learner_params": learner_params, "random_state": random_state}
    rng = np.random.default_rng(random_state + 1)
    base = None
    hopeless_from: int | None = None
    bar = tqdm(cands, desc="planning", unit="candidate", disable=not progress)
    for c in bar:
        bar.set_postfix_str(c.name)
        elapsed = time.perf_counter() - t_start
        hash_k = c.grouping.k if isinstance(c.grouping, HashGroups) else None
        if base is not None and elapsed + (one.fit_s or 0) > time_budget:
            c.status = f"skipped: time budget {time_budget:g} s"
            continue
        if hash_k is not None and hopeless_from is not None and hash_k > hopeless_from:
            c.status = f"skipped: hash K={hopeless_from} already lost over 2x max_accuracy_loss"
            continue
        same = next((h for h in cands if c.grouping == "auto" and h.measured and isinstance(h.grouping, HashGroups)
                     and h.grouping.k == auto_k), None)
        if same is not None:  # auto resolves to a hash K measured already: the same model, not fitted twice
            for name in MEASURED:
                setattr(c, name, getattr(same, name))
            continue
        try:
            _measure(c, cls, est, task, Xtr, ytr, ids_tr, Xte, yte, base, n_forgets, rng)
        except ClusterForgetError as exc:  # one setting that cannot work on this data does not stop the plan
            if base is None:
                raise
            c.status = f"failed: {exc}"
            continue
        if base is None:
            base = c.metric
        if (hash_k is not None and max_accuracy_loss is not None and hopeless_from is None
                and c.loss > max(2 * max_accuracy_loss, 0.001)):
            hopeless_from = hash_k
    bar.close()
    best, bound, reason = recommend(cands, max_forget_seconds, max_accuracy_loss)
    return Plan(task, METRIC[task], base, len(tr), len(te), cands, best, bound, reason, max_forget_seconds,
                max_accuracy_loss, est, notes, time.perf_counter() - t_start)


def plan_file(path: str | Path, target: str, group_by: str | Sequence[Any] | None = None,
              max_forget_seconds: float | None = None, max_accuracy_loss: float | None = None, **kwargs: Any) -> Plan:
    """``plan`` on a CSV or Parquet file with the target column ``target`` (what ``clusterforget plan`` runs)."""
    pd = optional("pandas", "reading a data file")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no data file at {str(path)!r}; give the path of a .csv or .parquet file")
    df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    if target not in df.columns:
        raise InputError(f"target column {target!r} is not in {path.name}; columns: {list(df.columns)!r}")
    y = df.pop(target).to_numpy()
    return plan(df, y, group_by=group_by, max_forget_seconds=max_forget_seconds,
                max_accuracy_loss=max_accuracy_loss, **kwargs)


__all__ = ["plan", "plan_file", "Plan", "Candidate", "recommend"]
