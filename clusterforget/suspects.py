"""Find what to forget: training rows whose label looks wrong, and groups whose member hurts the others.

A grouped ensemble holds, for every training row, members that never saw it. ``suspects(model)`` scores each row
with those members only, combined with the weights the ensemble gives them (renormalised without the row's own
member): an out-of-sample prediction, as cross-validation gives, without training anything. A row whose given label
gets a low out-of-sample probability (a large residual, for regression) is a suspect.

A group's value is measured the same way: leave its member out of each of those out-of-sample predictions and see
how the loss on the rows it did not train on changes (positive: the member helps the others; negative: it hurts
them, as a member trained on a poisoned segment does). Intervals come from a bootstrap over buckets of the scored
rows (256 buckets by id hash, drawn with replacement).

Where the ensemble gives no out-of-sample signal, it says so: one member raises ``NoOutOfSampleError``; a routed
model whose keys have one member each scores a row with the other keys' members, as ``predict`` scores a row of an
unseen key (``Suspects.notes`` says so). Output overrides are predict-time settings, not training data: ignored.

Nothing here trains or changes the model, except ``what_if``, which changes new states on the side (never the model
or its store; only the members holding the top suspects retrain) to estimate what forgetting or relabeling them
would do to holdout quality.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ._compat import optional
from .data import HASH, ID, LABEL, conform, hash_bucket, labels_array
from .ensemble import GroupedEnsemble, ids_numpy, sorted_ids
from .errors import InputError, NoOutOfSampleError, NotFittedError
from .estimators import attach_ensemble, ensemble_of
from .members import CLASSIFICATION
from .scoring import Encoded, member_output

BLOCK = 16_384  # rows scored at a time: memory is members x BLOCK x classes, whatever the model's size
BUCKETS = 256  # the group values' bootstrap draws buckets of rows (by id hash) with replacement
EPS = 1e-12


@dataclass(frozen=True)
class GroupValue:
    """What one member is worth to the rows it did not train on: the mean loss increase when it leaves their
    out-of-sample predictions (log loss of the given label; squared error for regression). Negative: harmful."""

    key: Any
    name: str
    rows: int  # training rows of the group
    value: float
    low: float  # bootstrap interval (95%)
    high: float
    scored_rows: int  # rows the value was measured on

    @property
    def harmful(self) -> bool:
        """The whole interval is below zero: the others' predictions are better without this member."""
        return self.high < 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"] = _plain(self.key)
        d["harmful"] = self.harmful
        return d


@dataclass
class Suspects:
    """Training rows ranked most suspect first, and groups ranked most harmful first (``suspects(model)``).

    Row arrays are in rank order: ``ids``, ``score`` (higher: more suspect), ``label`` (given), ``prediction``
    (out-of-sample: probability of the given label, or the predicted value), ``suggested`` (the out-of-sample
    class, or value), ``group`` (its group's name), ``flagged`` (likely wrong: another class clears its per-class
    confidence threshold, as cleanlab's confident learning counts; |robust z| > 3 for regression).
    """

    task: str
    ids: np.ndarray
    score: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    suggested: np.ndarray
    group: np.ndarray
    flagged: np.ndarray
    groups: list[GroupValue]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def recommended_k(self) -> int:
        """How many of the top rows to act on, from the scores alone: half the flagged count (0: act on none).

        The flagged count estimates how many labels are wrong (cleanlab's confident-joint count; on adult with
        10% of labels flipped it says 1.2 times the flips). Acting on all of them touches too many right labels:
        on adult, relabeling the top rows won back the most of the AUC the flips cost near 0.6 times the flips
        and less past it (all flagged rows: 15%; every row the members' vote disagrees with, twice the flips:
        worse than not acting). Half the estimate keeps to the head of the ranking, where the precision is
        highest (0.84 in the README's adult example), without knowing how many labels are wrong; measured by
        ``python -m bench --only suspects``. ``what_if`` tells whether acting is worth it on your data.
        """
        return self.n_flagged // 2

    def per_class(self) -> np.ndarray:
        """Positions in the ranking (most suspect first) of half the flagged rows **of each given label**: the
        most suspect half of every class's flagged rows, where ``ids[:recommended_k]`` takes the head of one
        ranking. On imbalanced labels that head is nearly all of the rarer class (credit_default, 22% positive:
        96-100% of it), so acting on it changes a large share of that class, most of it labeled right; this set
        keeps the flagged estimate's split between classes. Which wins depends on the data (``python -m bench
        --only suspects``; README "Finding what to forget"): act with ``model.relabel(ids=s.ids[p],
        label=s.suggested[p])`` for ``p = s.per_class()``. A regressor's flagged rows have no class: the top
        ``recommended_k``."""
        if self.task != CLASSIFICATION:
            return np.arange(self.recommended_k)
        keep = []
        for c in np.unique(self.label[self.flagged]):
            rows = np.flatnonzero(self.flagged & (self.label == c))
            keep.append(rows[: len(rows) // 2])
        return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)

    def _columns(self, top: int | None) -> dict[str, np.ndarray]:
        k = len(self.ids) if top is None else max(0, int(top))
        pred = "p_label" if self.task == CLASSIFICATION else "prediction"
        return {"id": self.ids[:k], "score": self.score[:k], "label": self.label[:k], pred: self.prediction[:k],
                "suggested": self.suggested[:k], "group": self.group[:k], "flagged": self.flagged[:k]}

    def to_frame(self, top: int | None = None) -> Any:
        """The ranked rows as a pandas DataFrame (``top``: only the first rows)."""
        pd = optional("pandas", "Suspects.to_frame")
        return pd.DataFrame(self._columns(top))

    def groups_frame(self) -> Any:
        """The ranked groups as a pandas DataFrame."""
        pd = optional("pandas", "Suspects.groups_frame")
        return pd.DataFrame([g.to_dict() for g in self.groups],
                            columns=["key", "name", "rows", "value", "low", "high", "scored_rows", "harmful"])

    def to_dict(self, top: int | None = 20) -> dict[str, Any]:
        """JSON-ready: the first ``top`` rows (None: all), every group, the notes."""
        cols = self._columns(top)
        rows = [dict(zip(cols, (_plain(v) for v in values))) for values in zip(*cols.values())]
        return {"task": self.task, "n_rows": len(self.ids), "n_flagged": self.n_flagged,
                "recommended_k": self.recommended_k, "rows": rows,
                "groups": [g.to_dict() for g in self.groups], "notes": list(self.notes), "seconds": self.seconds}

    def __str__(self) -> str:
        cols = self._columns(10)
        pred = "p_label" if self.task == CLASSIFICATION else "prediction"
        head = ["#", "id", "score", "label", pred, "suggested", "group", "flagged"]
        body = [[str(i + 1), str(cols["id"][i]), f"{cols['score'][i]:.3f}", str(cols["label"][i]),
                 f"{cols[pred][i]:.3g}", _short(cols["suggested"][i]), str(cols["group"][i]),
                 "yes" if cols["flagged"][i] else ""] for i in range(len(cols["id"]))]
        gh = ["group", "rows", "value", "95% interval", ""]
        gb = [[g.name, f"{g.rows:,}", f"{g.value:+.4f}", f"[{g.low:+.4f}, {g.high:+.4f}]",
               "harmful" if g.harmful else ""] for g in self.groups[:10]]
        out = [f"suspects: {len(self.ids):,} rows ranked, {self.n_flagged:,} flagged (act on the top "
               f"{self.recommended_k:,}: recommended_k), {len(self.groups)} group(s) "
               f"({self.seconds:.2f} s)", *_lines(head, body), "", "groups, most harmful first (value: loss increase "
               "on the others' rows without the member; negative = harmful)", *_lines(gh, gb)]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def plot(self, path: str | Path) -> Path:
        """Score distribution (flagged rows apart) and group values with their intervals (matplotlib)."""
        plt = optional("matplotlib.pyplot", "Suspects.plot")
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        lo, hi = float(self.score.min()), float(self.score.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        left.hist(self.score[~self.flagged], bins=bins, color="tab:blue", alpha=0.7, label="not flagged")
        left.hist(self.score[self.flagged], bins=bins, color="tab:red", alpha=0.7, label="flagged")
        left.set_yscale("log")
        left.set_xlabel("suspicion score (out-of-sample)")
        left.set_ylabel("training rows")
        left.legend(fontsize=8)
        shown = [g for g in self.groups if math.isfinite(g.value)][:20]
        ys = np.arange(len(shown))
        values = np.array([g.value for g in shown])
        err = np.array([[g.value - g.low for g in shown], [g.high - g.value for g in shown]]).reshape(2, len(shown))
        right.errorbar(values, ys, xerr=err, fmt="o", color="tab:gray", ecolor="tab:gray")
        harm = np.array([g.harmful for g in shown], dtype=bool)
        right.scatter(values[harm], ys[harm], color="tab:red", zorder=3, label="harmful")
        right.axvline(0, color="black", lw=0.8)
        right.set_yticks(ys, [g.name[:24] for g in shown], fontsize=7)
        right.invert_yaxis()
        right.set_xlabel("group value: loss increase without its member")
        fig.suptitle(f"clusterforget suspects ({self.task}, {len(self.ids):,} rows)")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _plain(v: Any) -> Any:
    """numpy scalars and tuples as JSON-ready Python values."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def _lines(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *body]]


def _fitted(model: Any) -> GroupedEnsemble:
    ens = ensemble_of(model)  # NotFittedError before fit
    if not isinstance(ens, GroupedEnsemble):
        raise NotFittedError(f"suspects needs a fitted clusterforget model (fit it or cf.load a store), got "
                             f"{type(model).__name__}")
    return ens


def suspects(model: Any, *, n_bootstrap: int = 200, random_state: int = 0) -> Suspects:
    """Rank the training rows by how suspect their labels look out of sample, and the groups by their value.

    Parameters
    ----------
    model : a fitted ``ForgetClassifier`` / ``ForgetRegressor`` (or one ``cf.load`` gave) with at least two members
    n_bootstrap : int, default 200
        Bootstrap replicates of the group values' intervals (0: no intervals); each draws 256 buckets of the
        scored rows (rows bucketed by their id's hash) with replacement.
    random_state : int, default 0
        Seed of the bootstrap.

    Returns
    -------
    Suspects : ``.ids`` most suspect first, ``.suggested`` labels in the same order, ``.groups`` most harmful
    first, ``.to_frame()``, ``.plot(path)``; act with ``model.forget_rows(s.ids[:k])`` or
    ``model.relabel(ids=s.ids[:k], label=s.suggested[:k])``.

    Examples
    --------
    >>> import numpy as np, clusterforget as cf
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 3)); y = (X[:, 0] > 0).astype(int); y[:20] = 1 - y[:20]
    >>> model = cf.ForgetClassifier(grouping=cf.HashGroups(4), n_jobs=1).fit(X, y)
    >>> s = cf.suspects(model)
    >>> int(np.isin(s.ids[:20], np.arange(20)).sum()) >= 15
    True
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or not 0 <= n_bootstrap <= 10_000:
        raise InputError(f"n_bootstrap={n_bootstrap!r} is not usable; pass a whole number from 0 to 10000")
    t0 = time.perf_counter()
    ens = _fitted(model)
    ens.check_ready()
    spec = ens.scoring_spec()
    classify = spec.task == CLASSIFICATION
    live = [i for i, m in enumerate(spec.members) if m.weight > 0]
    if len(live) < 2:
        raise NoOutOfSampleError(
            f"this model has {len(live)} scoring member(s): every member trained on every row it would score, so "
            "there is no out-of-sample prediction to rank rows by (in-sample scores would hide the very errors to "
            "find). Fit with a grouping of several members, such as grouping=cf.HashGroups(4), then call suspects")
    position = {(spec.members[i].key, spec.members[i].shard): i for i in live}
    of_key = spec.routes()  # base key -> its live members
    routed = spec.combine == "route"
    weights = np.array([m.weight for m in spec.members], dtype=np.float64)
    classes = spec.classes
    prior = _prior(ens, classes)

    # the bootstrap resamples buckets of rows (by id hash, so random and fixed): per-bucket sums are all it keeps
    bucket_sum = np.zeros((len(spec.members), BUCKETS))
    bucket_n = np.zeros((len(spec.members), BUCKETS))
    parts: dict[str, list] = {"ids": [], "label": [], "y": [], "oos": [], "group": []}
    how = {"shards": 0, "others": 0, "average": 0}
    for gid, g in ens.groups.items():
        if not g.n_rows:
            continue
        own = position.get(gid)  # None: pending or weight 0, so no live member saw these rows
        if routed and len(of_key.get(g.key, [])) > 1:  # predict routes to the key's shards: score with the others
            others, kind = [i for i in of_key[g.key] if i != own], "shards"
        else:
            others, kind = [i for i in live if i != own], "others" if routed else "average"
        full = ens.full_rows(g)
        for start in range(0, g.n_rows, BLOCK):
            X = full.slice(start, BLOCK)
            labels = X.column(LABEL).to_numpy(zero_copy_only=False)
            y = _class_index(classes, labels) if classify else labels.astype(np.float64)
            enc = Encoded(X, spec.schema, spec.vocabularies())  # the block encoded once for every member that scores it
            P = np.stack([member_output(spec, enc, i) for i in others])  # (members, rows, outputs)
            w = weights[others]
            num = np.tensordot(w, P, axes=1)
            oos = num / w.sum()
            base = _loss(oos, y, classify)
            bucket = hash_bucket(X.column(HASH).to_numpy(), BUCKETS)
            in_bucket = np.bincount(bucket, minlength=BUCKETS)
            for j, i in enumerate(others):
                rest = w.sum() - w[j]
                without = (num - w[j] * P[j]) / rest if len(others) > 1 else np.broadcast_to(prior, oos.shape)
                delta = _loss(without, y, classify) - base
                bucket_sum[i] += np.bincount(bucket, weights=delta, minlength=BUCKETS)
                bucket_n[i] += in_bucket
            how[kind] += X.num_rows
            parts["ids"].append(ids_numpy(X.column(ID)))
            parts["label"].append(labels)
            parts["y"].append(y)
            parts["oos"].append(oos)
            parts["group"].append(np.full(X.num_rows, g.name, dtype=object))

    ids = np.concatenate(parts["ids"])
    label = np.concatenate(parts["label"])
    y = np.concatenate(parts["y"])
    oos = np.concatenate(parts["oos"])
    group = np.concatenate(parts["group"])
    if classify:
        p_label = oos[np.arange(len(y)), y]
        row_score = 1.0 - p_label
        flagged = _confident_errors(oos, y)
        suggested = classes[np.argmax(oos, axis=1)]
        prediction = p_label
    else:
        prediction = oos[:, 0]
        residual = label.astype(np.float64) - prediction
        mad = float(np.median(np.abs(residual - np.median(residual)))) * 1.4826
        scale = mad if mad > 0 else (float(np.std(residual)) or 1.0)
        row_score = np.abs(residual) / scale
        flagged = row_score > 3.0
        suggested = prediction
    order = np.argsort(-row_score, kind="stable")

    draws = np.random.default_rng(random_state).integers(0, BUCKETS, size=(int(n_bootstrap), BUCKETS))
    values = []
    for i in live:
        m = spec.members[i]
        n = int(bucket_n[i].sum())
        value = bucket_sum[i].sum() / n if n else math.nan
        low = high = math.nan
        if n and len(draws):
            reps = bucket_sum[i][draws].sum(axis=1) / np.maximum(bucket_n[i][draws].sum(axis=1), 1.0)
            low, high = (float(v) for v in np.percentile(reps, [2.5, 97.5]))
        g = ens.groups[(m.key, m.shard)]
        values.append(GroupValue(key=m.key[0] if len(m.key) == 1 else m.key, name=m.name, rows=g.n_rows,
                                 value=float(value), low=low, high=high, scored_rows=n))
    values.sort(key=lambda v: (not math.isfinite(v.value), v.value))

    notes = _notes(ens, spec, how, len(live))
    return Suspects(task=spec.task, ids=ids[order], score=row_score[order], label=label[order],
                    prediction=prediction[order], suggested=suggested[order], group=group[order],
                    flagged=flagged[order], groups=values, notes=notes, seconds=time.perf_counter() - t0)


def _class_index(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if classes.dtype.kind in "biuf" and labels.dtype.kind in "biuf":
        return np.searchsorted(classes, labels)
    index = {(type(c), c): k for k, c in enumerate(classes.tolist())}
    return np.array([index[(type(v), v)] for v in labels.tolist()], dtype=np.int64)


def _prior(ens: GroupedEnsemble, classes: np.ndarray | None) -> np.ndarray:
    """What is left when no member is: the training rows' class frequencies, or their mean."""
    if classes is not None:
        index = {(type(c), c): k for k, c in enumerate(classes.tolist())}
        counts = np.zeros(len(classes))
        for g in ens.groups.values():
            for v, c in g.label_counts.items():
                counts[index[(type(v), v)]] += c
        return counts / counts.sum()
    values = [g.rows.column(LABEL).to_numpy(zero_copy_only=False) for g in ens.groups.values()]
    return np.array([float(np.mean(np.concatenate(values)))])


def _loss(p: np.ndarray, y: np.ndarray, classify: bool) -> np.ndarray:
    if classify:
        return -np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))
    return (p[:, 0] - y) ** 2


def _confident_errors(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows another class claims confidently: among the classes whose probability reaches that class's threshold
    (its mean probability over the rows labeled with it), the most probable is not the given one (cleanlab's
    confident joint, off its diagonal)."""
    thresholds = np.array([P[y == c, c].mean() if (y == c).any() else np.inf for c in range(P.shape[1])])
    above = P >= thresholds
    claimed = np.argmax(np.where(above, P, -np.inf), axis=1)
    return above.any(axis=1) & (claimed != y)


def _notes(ens: GroupedEnsemble, spec: Any, how: dict[str, int], n_live: int) -> list[str]:
    notes = []
    if how["average"]:
        notes.append(f"each row was scored by the {n_live - 1} member(s) that did not train on it, weighted as the "
                     "ensemble averages them")
    if how["shards"]:
        notes.append(f"{how['shards']:,} row(s) were scored by the other shards of their key, as predict routes them")
    if how["others"]:
        notes.append(
            f"{how['others']:,} row(s) belong to a key with one member, the only one that saw them and the one predict "
            "routes them to: they were scored by the other keys' members instead, as predict scores a row of an "
            "unseen key. That is out of sample, but a row unlike the other keys' rows looks suspect even when its "
            "label is right; hash shards (or max_group_rows) give a stronger signal")
    pending = [g.name for g in ens.groups.values() if g.member is None]
    if pending:
        notes.append(f"{len(pending)} group(s) are pending retraining: their rows were scored by every scoring member, "
                     "none of which saw them; they have no value of their own")
    if spec.overrides:
        notes.append("output overrides were ignored: they change predictions, not the training labels scored here")
    return notes


# ------------------------------------------------------------------------------------------- acting, on the side
HIGHER_IS_BETTER = {"auc": True, "log_loss": False, "rmse": False}


@dataclass
class WhatIf:
    """Holdout quality now and after acting on the top ``k`` suspects, measured on changed copies on the side."""

    metric: str
    k: int
    now: float
    forget: float
    relabel: float
    rows_holdout: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        sign = 1 if HIGHER_IS_BETTER[self.metric] else -1
        f = lambda v: f"{v:.4f} ({sign * (v - self.now):+.4f})"  # noqa: E731
        return (f"holdout {self.metric} on {self.rows_holdout:,} rows: now {self.now:.4f}; forgetting the top "
                f"{self.k:,} suspects {f(self.forget)}; relabeling them {f(self.relabel)} (+ is better; "
                f"changed copies of the model on the side, nothing was changed; {self.seconds:.1f} s)")


def holdout_metric(model: Any, X: Any, y: np.ndarray) -> tuple[str, float]:
    """AUC (binary), log loss (multiclass) or RMSE (regression) of ``model`` on holdout rows."""
    from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

    ens = _fitted(model)
    if ens.task != CLASSIFICATION:
        return "rmse", float(np.sqrt(mean_squared_error(y.astype(np.float64), model.predict(X))))
    proba = model.predict_proba(X)
    classes = model.classes_
    if len(classes) == 2:
        return "auc", float(roc_auc_score(y == classes[1], proba[:, 1]))
    return "log_loss", float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=classes))


def what_if(model: Any, X_holdout: Any, y_holdout: Any, k: int, found: Suspects | None = None) -> WhatIf:
    """Estimate what forgetting, or relabeling to ``suggested``, the top ``k`` suspects does to holdout quality.

    The two side models are the model's own state changed as ``forget_rows`` / ``relabel`` would change it (only
    the members holding those rows retrain; group weights and override rules stay as they are, as they do for the
    "now" score), on new states held by copies: the model, and the store it is bound to, are not touched.
    """
    from sklearn.base import clone

    t0 = time.perf_counter()
    ens = _fitted(model)
    found = suspects(model) if found is None else found
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(found):
        raise InputError(f"k={k!r} is not usable; pass a whole number from 1 to {len(found):,} (rows ranked)")
    X_holdout = conform(X_holdout, ens.schema, type(model).__name__)
    y_holdout = labels_array(y_holdout, X_holdout.num_rows)
    metric, now = holdout_metric(model, X_holdout, y_holdout)
    top = pa.array(found.ids[:int(k)].tolist(), type=ens.id_type)
    forgot = ens.apply("what_if_forget", remove=top).state
    query, order = sorted_ids(top)
    labels = pa.array(found.suggested[:int(k)].tolist(), type=ens.label_type).take(pa.array(order))
    relabeled = ens.apply("what_if_relabel", relabel_ids=(query, labels)).state

    def side(state: GroupedEnsemble) -> float:
        return holdout_metric(attach_ensemble(clone(model), state), X_holdout, y_holdout)[1]

    return WhatIf(metric=metric, k=int(k), now=now, forget=side(forgot), relabel=side(relabeled),
                  rows_holdout=X_holdout.num_rows, seconds=time.perf_counter() - t0)


__all__ = ["suspects", "Suspects", "GroupValue", "what_if", "WhatIf", "holdout_metric"]
