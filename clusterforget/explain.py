"""Explanations of the combined model: raw scores, exact contributions, importances, reason codes, shap.

Everything here reads a ``ScoringSpec`` and combines members with ``scoring.combine``, the routing and
averaging ``predict`` uses, so the in-process model and an exported bundle (``cf.Scorer``) explain a row
with the members, weights and overrides that score it.

The raw score and its contributions
-----------------------------------
A member's raw score is its learner's, before the link function (LightGBM ``raw_score``, XGBoost
``output_margin``): the value for regression, the log-odds of the second class for two classes, one
log-odds per class for more. **The ensemble's raw score is the weighted average of the raw scores of the
members that score the row**, with the weights and routing its probabilities are averaged with. Where the
ensemble averages probabilities (classification), this is not the logit of the averaged probability (the
average of logits differs from the logit of the average): it is the linear quantity TreeSHAP is exact for.
With one member it is that member's raw score; for a regressor with an identity link it is ``predict``.

Contributions are TreeSHAP values (LightGBM ``pred_contrib``, XGBoost ``pred_contribs``) of each member,
averaged with the same weights, so each row's contributions sum to its raw score (to rounding, ~1e-15
relative). Layout as LightGBM's: ``n_features + 1`` columns (features, then the bias) per raw output; for
more than two classes one such block per class, in the order of ``classes_``.

Conventions where a member's raw score is not a tree's:

* a member that saw one class (``ConstantMember``) scores the log-odds ``members.CERTAIN_MARGIN`` (34.5, the
  probability 1 - 1e-15 LightGBM's boost_from_average starts such a group from) for its class, all of it bias;
* with more than two classes, a member adds to the classes it saw: its log-odds of the second of two classes,
  or its one log-odds per class; the others get 0 from it, as probabilities do;
* an output override sets the matched row's raw score to that of a member certain of its class (regression:
  the override's value), all bias: no feature decided it;
* XGBoost sums its float32 contributions to its margin only within ~1e-6; the bias column takes the
  difference, so feature contributions are XGBoost's and rows still sum exactly.

Feature importances are each member's (LightGBM ``feature_importance``, XGBoost ``get_score`` "weight" /
"total_gain") combined with the weight each member has over the training rows: averaging, its normalised
weight (the sum of its rows' sample weights x user weight); routing, its key's share of the training rows' sample
weights (a user weight changes no route) times its weight among the key's shards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .errors import ExportError, InputError
from .members import CERTAIN_MARGIN, CLASSIFICATION, IMPORTANCE_TYPES, KINDS
from .scoring import ScoredMember, ScoringSpec, combine, override_rows, score


def n_raw(spec: ScoringSpec) -> int:
    """Raw outputs per row: 1 for regression and two classes, one per class for more."""
    return 1 if spec.task != CLASSIFICATION or len(spec.classes) == 2 else len(spec.classes)


def _columns(spec: ScoringSpec, sm: ScoredMember) -> tuple[list[int], float]:
    """Raw-output columns a member's raw outputs add into, and the sign they are added with."""
    if spec.task != CLASSIFICATION:
        return [0], 1.0
    idx = [int(i) for i in sm.class_index]
    if len(spec.classes) == 2:
        if len(idx) == 1:  # a member of one class: its certainty for it is log-odds +-CERTAIN_MARGIN of class 1
            return [0], 1.0 if idx[0] == 1 else -1.0
        return [0], 1.0
    if len(idx) == 2:  # log-odds of its second class against its first: the softmax scores (0, m)
        return [idx[1]], 1.0
    return idx, 1.0


def _override_raw(spec: ScoringSpec, label: Any, pos: int | None) -> np.ndarray:
    out = np.zeros(n_raw(spec))
    if spec.task != CLASSIFICATION:
        out[0] = float(label)
    elif len(spec.classes) == 2:
        out[0] = CERTAIN_MARGIN if pos == 1 else -CERTAIN_MARGIN
    else:
        out[pos] = CERTAIN_MARGIN
    return out


def raw_scores(spec: ScoringSpec, X: pa.Table) -> np.ndarray:
    """(n, n_raw) raw scores of canonical input ``X`` (see the module docstring)."""

    def output(sm: ScoredMember, M: np.ndarray):
        cols, sign = _columns(spec, sm)
        return sign * sm.member.margin_encoded(M, spec.schema, spec.n_threads), cols

    out = combine(spec, X, output, (n_raw(spec),))
    for hit, ov, pos in override_rows(spec, X):
        out[hit] = _override_raw(spec, ov.label, pos)
    return out


def contributions(spec: ScoringSpec, X: pa.Table) -> np.ndarray:
    """(n, n_raw, n_features + 1) TreeSHAP contributions (features, then bias) summing to ``raw_scores``."""
    width = len(spec.schema.names) + 1

    def output(sm: ScoredMember, M: np.ndarray):
        cols, sign = _columns(spec, sm)
        return sign * sm.member.contrib_encoded(M, spec.schema, spec.n_threads), cols

    out = combine(spec, X, output, (n_raw(spec), width))
    for hit, ov, pos in override_rows(spec, X):
        out[hit] = 0.0
        out[hit, :, -1] = _override_raw(spec, ov.label, pos)
    return out


def lightgbm_layout(values: np.ndarray) -> np.ndarray:
    """(n, k, w) contributions or (n, k) raw scores in LightGBM's shapes: (n, k * w) / (n, k), (n, w) / (n,)."""
    if values.ndim == 3:
        return values.reshape(len(values), -1)
    return values[:, 0] if values.shape[1] == 1 else values


def check_importance_type(importance_type: Any) -> str:
    if importance_type not in IMPORTANCE_TYPES:
        from .errors import ParameterError  # here: its scikit-learn base is not needed to score

        raise ParameterError(f"importance_type={importance_type!r} is not known; use one of {list(IMPORTANCE_TYPES)!r} "
                         "(as LightGBM: the number of splits on a feature, or their total gain)")
    return importance_type


def member_weights(spec: ScoringSpec) -> np.ndarray:
    """How much of the model each member is, for importances (see the module docstring); sums to 1."""
    w = np.array([m.weight for m in spec.members], dtype=np.float64)
    if spec.combine != "route":
        return w / w.sum()
    out = np.zeros(len(spec.members))
    by_key = spec.routes()
    served = {k: sum(spec.members[i].served for i in pos) for k, pos in by_key.items()}
    total = sum(served.values())
    for k, pos in by_key.items():
        out[pos] = (served[k] / total) * spec.normalized_weights(pos)
    return out


def importances(spec: ScoringSpec, importance_type: str = "split") -> np.ndarray:
    """(n_features,) importances combined over the members with ``member_weights``."""
    check_importance_type(importance_type)
    n = len(spec.schema.names)
    out = np.zeros(n)
    for sm, w in zip(spec.members, member_weights(spec).tolist()):
        if w:
            out += w * sm.member.feature_importance(importance_type, n)
    return out


# ---------------------------------------------------------------------------------------------- reasons
def _explained_output(spec: ScoringSpec, X: pa.Table, raw: np.ndarray) -> np.ndarray:
    """Per row, the raw output its reasons explain: the only one, or that of the class ``predict`` gives."""
    if raw.shape[1] == 1:
        return np.zeros(len(raw), dtype=np.int64)
    return np.argmax(score(spec, X), axis=1)


def check_top(top: Any, n_features: int) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= int(top) <= max(n_features, 1):
        raise InputError(f"top={top!r} is not usable; pass an integer from 1 to the number of features ({n_features})")
    return int(top)


def reasons(spec: ScoringSpec, X: pa.Table, top: int = 4) -> list[dict[str, Any]]:
    """Per row of ``X``: the ``top`` features whose contributions moved its raw score most (by size).

    Each entry: ``raw_score`` and ``base`` (the bias) of the output explained, ``class`` (classification: the
    class whose score is explained; for two classes the second, whose log-odds the raw score is), and
    ``reasons``: ``[{"feature", "value", "contribution"}, ...]`` (features that contributed exactly 0 left out), largest ``|contribution|`` first, ties in
    column order. A row set by an override has no reasons (no feature decided it) and its ``rule``.
    """
    names = list(spec.schema.names)
    top = check_top(top, len(names))
    contrib = contributions(spec, X)
    raw = contrib.sum(axis=2)
    which = _explained_output(spec, X, raw)
    overridden = {}
    for hit, ov, _ in override_rows(spec, X):
        for r in np.flatnonzero(hit).tolist():
            overridden[r] = ov.rule_id
    columns = [X.column(n) for n in names]
    out = []
    for r in range(X.num_rows):
        k = int(which[r])
        c = contrib[r, k]
        entry: dict[str, Any] = {"raw_score": float(c.sum()), "base": float(c[-1])}
        if spec.task == CLASSIFICATION:
            label = spec.classes[1] if raw.shape[1] == 1 else spec.classes[k]
            entry["class"] = label.item() if isinstance(label, np.generic) else label
        if r in overridden:
            entry["rule"] = overridden[r]
            entry["reasons"] = []
        else:
            order = np.argsort(-np.abs(c[:-1]), kind="stable")[:top]
            entry["reasons"] = [{"feature": names[j], "value": _value(columns[j][r]),
                                 "contribution": float(c[j])} for j in order.tolist() if c[j] != 0.0]
        out.append(entry)
    return out


def _value(scalar: pa.Scalar) -> Any:
    v = scalar.as_py()
    return None if isinstance(v, float) and v != v else v  # NaN is missing, as null is (and JSON has no NaN)


def reasons_frame(rows: list[dict[str, Any]]) -> Any:
    """``reasons`` as a DataFrame: one line per row and reason (``row``, ``rank``, ``feature``, ``value``,
    ``contribution``, ``raw_score``, ``base`` and, for a classifier, ``class``)."""
    from ._compat import optional

    pd = optional("pandas", "explain")
    lines = []
    for i, entry in enumerate(rows):
        extra = {k: v for k, v in entry.items() if k not in ("reasons", "rule")}
        for rank, reason in enumerate(entry["reasons"], start=1):
            lines.append({"row": i, "rank": rank, **reason, **extra})
    cols = ["row", "rank", "feature", "value", "contribution", "raw_score", "base"]
    if rows and "class" in rows[0]:
        cols.append("class")
    return pd.DataFrame(lines, columns=cols)


# ---------------------------------------------------------------------------------------------- shap
def shap_model(spec: ScoringSpec, key: Any = None) -> dict[str, Any]:
    """The members that score a row, as the tree-model dict ``shap.TreeExplainer`` reads.

    Averaging: every member, its tree values scaled by its normalised weight. Routing: the members of the
    group ``key`` (a base key tuple), or with ``key=None`` every member (what scores a row of an unseen key).
    Exact for numeric splits; shap's format has no categorical splits, so a member with one raises
    ``ExportError`` (``contributions`` covers every model).
    """
    if spec.overrides:
        raise ExportError("a model with output overrides (relabel mode='override') is not a tree model for shap: "
                          "overridden rows are set by a rule; use model.predict(X, pred_contrib=True)")
    positions = list(range(len(spec.members)))
    if spec.combine != "route" and key is not None:
        raise InputError(f"group={key!r}: this model averages every member for every row; call to_shap() without "
                         "a group")
    if key is not None:
        by_key = spec.routes()
        if key not in by_key:
            raise InputError(f"group {key!r} has no member that scores; groups: {sorted(map(str, by_key))[:20]!r}")
        positions = by_key[key]
    k = n_raw(spec)
    trees: list[dict[str, np.ndarray]] = []
    for i, w in zip(positions, spec.normalized_weights(positions).tolist()):
        if w == 0.0:
            continue
        sm = spec.members[i]
        cols, sign = _columns(spec, sm)
        for tree, out in sm.member.shap_trees(spec.schema):
            values = np.zeros((len(tree["values"]), k))
            values[:, cols[out]] = sign * w * tree["values"]
            trees.append({**tree, "values": values})
    # a float32 learner (XGBoost) compares float32 inputs (its thresholds are moved for that); LightGBM doubles
    f32 = any(getattr(KINDS.get(spec.members[i].member.learner), "float32", False) for i in positions)
    return {"trees": trees, "base_offset": np.zeros(k) if k > 1 else 0.0,
            "input_dtype": np.float32 if f32 else np.float64, "internal_dtype": np.float64,
            "tree_output": "raw_value"}


def shap_explanation(spec: ScoringSpec, X: pa.Table, feature_names: list[str] | None = None) -> Any:
    """A ``shap.Explanation`` of the raw scores of ``X`` from ``contributions`` (shap's plots take it)."""
    from ._compat import optional

    shap = optional("shap", "shap explanations")
    contrib = contributions(spec, X)
    names = list(feature_names if feature_names is not None else spec.schema.names)
    data = np.column_stack([_plain(X.column(n)) for n in spec.schema.names]) if X.num_rows else None
    if contrib.shape[1] == 1:
        return shap.Explanation(contrib[:, 0, :-1], base_values=contrib[:, 0, -1], data=data, feature_names=names)
    return shap.Explanation(np.transpose(contrib[:, :, :-1], (0, 2, 1)), base_values=contrib[:, :, -1], data=data,
                            feature_names=names, output_names=[str(c) for c in spec.classes.tolist()])


def _plain(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False).astype(np.float64)


# ---------------------------------------------------------------------------------------------- compare
class Comparison:
    """How a change moved a model's outputs on a set of rows (``compare``); ``print`` it for a summary.

    Attributes
    ----------
    rows : DataFrame
        One line per input row, the most moved first: ``row`` (position in ``X``), ``before``, ``after`` and
        ``change`` of the score (the probability of ``classes_[1]`` for two classes, the largest move of any
        class's probability for more, the value for a regressor), ``label_before`` / ``label_after``.
    importances : DataFrame
        ``feature``, ``before``, ``after``, ``change`` of ``feature_importances_`` (and of their shares), the
        most moved first.
    summary : dict
        ``rows``, ``rows_changed``, ``labels_changed``, ``max_abs_change``, ``mean_abs_change``,
        ``versions`` (before, after).
    """

    def __init__(self, rows: Any, importances: Any, summary: dict[str, Any]):
        self.rows = rows
        self.importances = importances
        self.summary = summary

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {"summary": self.summary, "rows": self.rows.head(top).to_dict("records"),
                "importances": self.importances.to_dict("records")}

    def __repr__(self) -> str:
        s = self.summary
        head = (f"compare: version {s['versions'][0]} -> {s['versions'][1]}, {s['rows']} rows: {s['rows_changed']} "
                f"changed score, {s['labels_changed']} changed label; |change| max {s['max_abs_change']:.6g}, "
                f"mean {s['mean_abs_change']:.6g}")
        return "\n".join([head, "rows moved most:", self.rows.head(10).to_string(index=False),
                          "importances moved most:", self.importances.head(10).to_string(index=False)])


def _scores(model: Any, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score per row, the probabilities or values it came from, labels) as ``Comparison.rows`` defines them."""
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        labels = model.classes_[np.argmax(proba, axis=1)]
        return proba[:, 1] if proba.shape[1] == 2 else proba[:, 0], proba, labels
    values = model.predict(X)
    return values, values.reshape(-1, 1), values


def compare(before: Any, after: Any, X: Any) -> Comparison:
    """What a change (a forget, a relabel, ...) moved: scores of the rows ``X`` and importances, before -> after.

    ``before`` is the model as it was (keep a copy with ``copy.deepcopy(model)`` or ``cf.load`` of the store's
    earlier export), ``after`` as it is now. The owner's view before publishing a change; ``cf.verify``'s
    ``diff`` check measures what an attacker comparing the two could learn about forgotten rows.
    """
    from ._compat import optional

    pd = optional("pandas", "compare")
    s0, p0, l0 = _scores(before, X)
    s1, p1, l1 = _scores(after, X)
    if p0.shape != p1.shape or (hasattr(before, "classes_") and not np.array_equal(before.classes_, after.classes_)):
        classes = [getattr(m, "classes_", None) for m in (before, after)]
        # a class that left or arrived: compare the classes both know, by label
        common = sorted(set(classes[0].tolist()) & set(classes[1].tolist()), key=str) if classes[0] is not None else []
        i0 = [classes[0].tolist().index(c) for c in common]
        i1 = [classes[1].tolist().index(c) for c in common]
        p0, p1 = p0[:, i0], p1[:, i1]
    if p0.shape[1] > 2:
        moved = p1 - p0
        change = moved[np.arange(len(moved)), np.argmax(np.abs(moved), axis=1)]
        s0, s1 = p0.max(axis=1), p1.max(axis=1)
    else:
        change = s1 - s0
    rows = pd.DataFrame({"row": np.arange(len(change)), "before": s0, "after": s1, "change": change,
                         "label_before": l0, "label_after": l1})
    rows = rows.iloc[np.argsort(-np.abs(change), kind="stable")].reset_index(drop=True)
    names = list(getattr(after, "feature_names_in_", [f"x{j}" for j in range(after.n_features_in_)]))
    f0, f1 = before.feature_importances_, after.feature_importances_
    share0, share1 = f0 / (f0.sum() or 1.0), f1 / (f1.sum() or 1.0)
    imp = pd.DataFrame({"feature": names, "before": f0, "after": f1, "change": f1 - f0,
                        "share_before": share0, "share_after": share1, "share_change": share1 - share0})
    imp = imp.iloc[np.argsort(-np.abs(share1 - share0), kind="stable")].reset_index(drop=True)
    summary = {
        "rows": int(len(change)),
        "rows_changed": int(np.count_nonzero(change)),
        "labels_changed": int(np.count_nonzero(np.asarray(l0) != np.asarray(l1))),
        "max_abs_change": float(np.abs(change).max()) if len(change) else 0.0,
        "mean_abs_change": float(np.abs(change).mean()) if len(change) else 0.0,
        "versions": [getattr(before, "version_", None), getattr(after, "version_", None)],
    }
    return Comparison(rows, imp, summary)


__all__ = ["Comparison", "compare", "raw_scores", "contributions", "importances", "member_weights", "reasons", "reasons_frame",
           "shap_model", "shap_explanation", "lightgbm_layout", "n_raw", "check_importance_type", "check_top"]
