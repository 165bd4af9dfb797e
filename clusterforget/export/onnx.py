"""One self-contained ONNX graph of the scoring spec: every member, routing, weights, class mapping, overrides.

Layout (measured the most exact of the layouts tried; see the issue's notes)
--------------------------------------------------------------------------
* Inputs: one per feature column, ``[N, 1]``: ``double`` for numeric columns (NaN = missing), ``string``
  for categorical ones (``""`` = missing). ``feeds(X)`` builds them from any input ``predict`` takes.
* Categorical columns go through one ``LabelEncoder`` each to *global* codes (the union of every member's
  vocabulary; unknown -> NaN); each member's categorical splits are rewritten from its local codes to global
  codes as ``BRANCH_MEMBER`` nodes, sending the categories a member never saw where the learner sends them.
* One ``ai.onnx.ml`` ``TreeEnsemble`` (opset 5: double thresholds and leaves) per learner, one target per
  member output; LightGBM margins are then bitwise those of the learner. XGBoost inputs are rounded to
  float32 first (XGBoost compares in float32) and its link functions run in float32.
* Links: sigmoid as ``Neg/Exp/Add/Div`` (``Sigmoid`` is less exact), softmax as the learners write it.
* Averaging: one ``TreeEnsemble`` per learner holds every member's trees (a member output per target); the
  outputs are weighted and summed in spec order, exactly as ``scoring.score`` sums them.
* Routing: a row's route index (key ``LabelEncoder`` or nearest centroid; unknown -> the fallback, every
  member) selects the rows of each member (``NonZero`` of its column of an embedded ``[K+1, M]`` weight
  matrix); the member's own ``TreeEnsemble`` runs on those rows only (``Gather``), and its weighted output is
  added into them (``ScatterND`` with ``reduction="add"``) member after member in spec order, so a row costs
  its own member's trees, as in process. Measured on adult by country (53 members, 100 rounds), 10k rows:
  1.0x one model's graph (7.6x when every member scored every row); one row 0.86 ms vs 0.97 ms.
* Overrides are the rules' syntax trees as graph ops (three-valued logic).

Anything the graph cannot reproduce exactly raises ``ExportError`` naming it; nothing is exported that
scores differently.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._compat import optional
from ..data import CATEGORICAL, conform
from ..errors import ExportError
from ..members import CLASSIFICATION, KINDS, ConstantMember
from ..preprocess import refuse_export
from ..rules.grammar import COMPARISONS, parse_tree, unquote
from ..scoring import ScoringSpec
from ._files import provenance, write_atomic

OPSET = 21
ML_OPSET = 5
MIN_ONNXRUNTIME = "1.24"  # 1.19-1.20 lack TreeEnsemble 5; 1.21-1.23 load it and score it wrong (measured)
_LEQ, _LT, _MEMBER = 0, 1, 6


class _Graph:
    """Nodes and constants of the graph being built, with fresh names."""

    def __init__(self):
        self.onnx = optional("onnx", "format='onnx'")
        self.h = self.onnx.helper
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value: Any, hint: str = "c") -> str:
        arr = np.asarray(value)
        if arr.dtype.kind in "UO":
            arr = arr.astype(object)
        name = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op: str, inputs: list[str], hint: str = "", domain: str = "", n_out: int = 1, **attrs) -> Any:
        outs = [self.name(hint or op.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op, inputs, outs, name=self.name("n"), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def tensor(self, values: Any, dtype: Any) -> Any:
        return self.onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype))


# ---------------------------------------------------------------------------------------------- trees
class _Trees:
    """Nodes of one ``TreeEnsemble`` (opset 5), built tree by tree; every member output is a target.

    A learner's ``onnx`` converter (``members.LearnerKind``) adds its member's trees through ``leaf``,
    ``node`` (modes ``LEQ``: x <= split, ``LT``: x < split, ``MEMBER``: x in a set of global category codes),
    ``link``, ``add_root`` and ``constant_tree``; ``global_codes`` / ``unseen`` map its own category codes.
    """

    LEQ, LT, MEMBER = _LEQ, _LT, _MEMBER

    def __init__(self, dtype: Any = np.float64, codes: dict[str, dict[str, int]] | None = None):
        self.dtype = dtype  # of thresholds, leaves and the sums (onnxruntime adds in this type)
        self.codes = codes or {}  # column -> category -> its global code (the graph's LabelEncoder)
        self.roots: list[int] = []
        self.feature: list[int] = []
        self.split: list[float] = []
        self.mode: list[int] = []
        self.missing_true: list[int] = []
        self.true_id: list[int] = []
        self.true_leaf: list[int] = []
        self.false_id: list[int] = []
        self.false_leaf: list[int] = []
        self.members: list[float] = []
        self.leaf_target: list[int] = []
        self.leaf_weight: list[float] = []
        self.n_targets = 0

    def leaf(self, target: int, value: float) -> int:
        self.leaf_target.append(target)
        self.leaf_weight.append(float(value))
        return len(self.leaf_weight) - 1

    def node(self, feature: int, split: float, mode: int, missing_true: bool, members: list[float] = ()) -> int:
        self.feature.append(feature)
        self.split.append(float(split))
        self.mode.append(mode)
        self.missing_true.append(int(missing_true))
        for lst in (self.true_id, self.true_leaf, self.false_id, self.false_leaf):
            lst.append(0)
        if mode == _MEMBER:
            # the sets of BRANCH_MEMBER nodes, in node order, separated by NaN
            self.members.extend([*members, np.nan])
        return len(self.feature) - 1

    def link(self, node: int, true: tuple[bool, int], false: tuple[bool, int]) -> None:
        for (is_leaf, idx), ids, leafs in ((true, self.true_id, self.true_leaf), (false, self.false_id, self.false_leaf)):
            ids[node] = idx
            leafs[node] = int(is_leaf)

    def constant_tree(self, target: int, value: float) -> None:
        """A tree without splits: a node both of whose branches are leaves of the same value (onnxruntime
        refuses a root that is a leaf, and refuses two branches sharing one leaf)."""
        n = self.node(0, 0.0, _LEQ, True)
        self.link(n, (True, self.leaf(target, value)), (True, self.leaf(target, value)))
        self.roots.append(n)

    def add_root(self, target: int, root: tuple[bool, int]) -> None:
        """A tree whose root is ``root`` (``(is_leaf, index)`` as ``link`` takes); a root that is a leaf becomes
        a constant tree."""
        if root[0]:
            self.leaf_target.pop()
            self.constant_tree(target, self.leaf_weight.pop())
        else:
            self.roots.append(root[1])

    def global_codes(self, column: str, vocab: list[str], local: list[int]) -> list[float]:
        """The global codes of a member's local category codes ``local`` (positions in its ``vocab``)."""
        return [float(self.codes[column][vocab[i]]) for i in local if 0 <= i < len(vocab)]

    def unseen(self, column: str, vocab: list[str]) -> list[float]:
        """Global codes of the categories a member never saw (it encodes them as missing)."""
        own = set(vocab)
        return [float(c) for v, c in self.codes[column].items() if v not in own]

    def build(self, g: _Graph, X: str) -> str:
        if not any(m == _MEMBER for m in self.mode):
            members = {}
        else:
            members = {"membership_values": g.tensor(self.members, self.dtype)}
        return g.op(
            "TreeEnsemble", [X], "trees", domain="ai.onnx.ml",
            aggregate_function=1, post_transform=0, n_targets=self.n_targets,
            tree_roots=self.roots, nodes_featureids=self.feature,
            nodes_splits=g.tensor(self.split, self.dtype),
            nodes_modes=g.tensor(self.mode, np.uint8),
            nodes_missing_value_tracks_true=self.missing_true,
            nodes_truenodeids=self.true_id, nodes_trueleafs=self.true_leaf,
            nodes_falsenodeids=self.false_id, nodes_falseleafs=self.false_leaf,
            leaf_targetids=self.leaf_target, leaf_weights=g.tensor(self.leaf_weight, self.dtype),
            **members,
        )


# ---------------------------------------------------------------------------------------------- links
def _exp(g: _Graph, x: str, dtype: Any) -> str:
    """``exp``; in float32 as ``expf`` (correctly rounded): the double exponential rounded to float, since
    onnxruntime's float ``Exp`` is 1 ulp off on ~9 % of values (measured)."""
    if dtype != np.float32:
        return g.op("Exp", [x])
    T = g.onnx.TensorProto
    return g.op("Cast", [g.op("Exp", [g.op("Cast", [x], to=T.DOUBLE)])], to=T.FLOAT)


def _sigmoid(g: _Graph, x: str, dtype: Any) -> str:
    """LightGBM: ``1 / (1 + exp(-x))`` in double; XGBoost: the same in float32 with ``-x`` capped at 88.7."""
    one = g.const(np.array(1.0, dtype))
    neg = g.op("Neg", [x])
    if dtype == np.float32:
        neg = g.op("Min", [neg, g.const(np.array(88.7, np.float32))])
    return g.op("Div", [one, g.op("Add", [_exp(g, neg, dtype), one])])


def _softmax(g: _Graph, x: str, dtype: Any) -> str:
    axis = g.const(np.array([1], np.int64))
    e = _exp(g, g.op("Sub", [x, g.op("ReduceMax", [x, axis], keepdims=1)]), dtype)
    if dtype == np.float32:  # XGBoost sums the float exponentials in double, then divides in float
        total = g.op("ReduceSum", [g.op("Cast", [e], to=g.onnx.TensorProto.DOUBLE), axis], keepdims=1)
        return g.op("Div", [e, g.op("Cast", [total], to=g.onnx.TensorProto.FLOAT)])
    return g.op("Div", [e, g.op("ReduceSum", [e, axis], keepdims=1)])


def _member_probs(g: _Graph, link: str, margin: str, dtype: Any, n_local: int) -> str:
    """(N, n_local) member output from its margin columns, as the learner's predict computes it."""
    double = g.onnx.TensorProto.DOUBLE
    if link == "softmax":
        out = _softmax(g, margin, dtype)
    elif link == "sigmoid":
        out = _sigmoid(g, margin, dtype)
    else:
        out = margin
    if dtype == np.float32:
        out = g.op("Cast", [out], to=double)
    if link == "sigmoid":  # members.BoosterMember: [1 - p, p] in double, whatever the learner's type
        out = g.op("Concat", [g.op("Sub", [g.const(np.array(1.0)), out]), out], axis=1)
    return out


# ---------------------------------------------------------------------------------------------- routing
def _route_index(g: _Graph, spec: ScoringSpec, inputs: dict[str, str], keys: list) -> str:
    """(N,) int64: position of each row's group in ``keys``, or ``len(keys)`` where it is unknown (the
    grouping's own ``onnx_route``)."""
    out = spec.grouping.onnx_route(g, inputs, keys, spec.schema, spec.state)
    return g.op("Reshape", [out, g.const(np.array([-1], np.int64))])


# ---------------------------------------------------------------------------------------------- overrides
def _rule(g: _Graph, spec: ScoringSpec, inputs: dict[str, str], text: str) -> str:
    """(N, 1) bool: rows the rule matches, with the rules' three-valued logic (missing: no match)."""
    ops = {"==": "Equal", "<": "Less", "<=": "LessOrEqual", ">": "Greater", ">=": "GreaterOrEqual"}

    def column(node) -> tuple[str, str, str, str]:
        tok = node.children[0]
        name = unquote(str(tok)) if tok.type == "QUOTED_NAME" else str(tok)
        kind = spec.schema.kind(name)
        x = inputs[name]
        missing = g.op("IsNaN", [x]) if kind != CATEGORICAL else g.op("Equal", [x, g.const(np.array([""], object))])
        return name, kind, x, missing

    def value(tok, kind: str) -> str:
        if kind == CATEGORICAL:
            return g.const(np.array([unquote(str(tok))], object))
        v = 1.0 if tok.type == "TRUE" else 0.0 if tok.type == "FALSE" else float(str(tok)) + 0.0
        return g.const(np.array([v]))

    def known(missing: str, result: str) -> tuple[str, str]:
        ok = g.op("Not", [missing])
        return g.op("And", [ok, result]), g.op("And", [ok, g.op("Not", [result])])

    def walk(node) -> tuple[str, str]:  # (surely true, surely false)
        kind = node.data
        if kind == "start":
            return walk(node.children[0])
        if kind in ("or_", "and_"):
            parts = [walk(c) for c in node.children]
            t, f = parts[0]
            for t2, f2 in parts[1:]:
                if kind == "and_":
                    t, f = g.op("And", [t, t2]), g.op("Or", [f, f2])
                else:
                    t, f = g.op("Or", [t, t2]), g.op("And", [f, f2])
            return t, f
        if kind == "neg":
            t, f = walk(node.children[0])
            return f, t
        name, ckind, x, missing = column(node.children[0])
        if kind == "compare":
            op = COMPARISONS[str(node.children[1])]
            v = value(node.children[2], ckind)
            if ckind == CATEGORICAL and op not in ("==", "!="):
                raise ExportError(f"rule {text!r} orders strings ({op}), which the ONNX export does not translate")
            r = g.op(ops["==" if op == "!=" else op], [x, v])
            t, f = known(missing, r)
            return (f, t) if op == "!=" else (t, f)
        if kind in ("isin", "notin"):
            hit = None
            for tok in node.children[1].children:
                e = g.op("Equal", [x, value(tok, ckind)])
                hit = e if hit is None else g.op("Or", [hit, e])
            t, f = known(missing, hit)
            return (t, f) if kind == "isin" else (f, t)
        if kind in ("isnull", "notnull"):
            notm = g.op("Not", [missing])
            return (missing, notm) if kind == "isnull" else (notm, missing)
        raise ExportError(f"rule {text!r}: node {kind!r} has no ONNX translation; export format='bundle' instead")

    try:
        return walk(parse_tree(text))[0]
    except (KeyError, ValueError) as exc:
        raise ExportError(f"rule {text!r} cannot be translated to ONNX ({exc}); export format='bundle'") from exc


# ---------------------------------------------------------------------------------------------- members
def _plan(spec: ScoringSpec, pos: int) -> tuple[Any, int, Any]:
    """How member ``pos`` is converted: (its learner kind, None for a constant; margin columns; float type)."""
    sm = spec.members[pos]
    m = sm.member
    n_local = 1 if m.classes is None else len(m.classes)
    if getattr(m, "preprocessor", None) is not None:
        refuse_export(m.preprocessor, "onnx")
    if isinstance(m, ConstantMember):
        return None, n_local, np.float64
    kind = KINDS.get(m.learner)
    if kind is None or kind.onnx is None:
        raise ExportError(f"member {sm.name!r} is a {type(m).__name__}, which the ONNX export does not know; export "
                          "'bundle'")
    # a float32 learner compares float32 features with float32 thresholds and sums float32 leaves
    return kind, 1 if n_local <= 2 else n_local, np.float32 if kind.float32 else np.float64


def _add_trees(trees: _Trees, spec: ScoringSpec, pos: int, kind: Any, n_margins: int) -> tuple[int, str]:
    """Add member ``pos``'s trees to ``trees`` as ``n_margins`` new targets; returns (first target, link)."""
    sm = spec.members[pos]
    first = trees.n_targets
    trees.n_targets += n_margins
    objective = kind.onnx(trees, sm.member, list(range(first, first + n_margins)), list(spec.schema.names),
                          f"member {sm.name!r}")
    return first, "sigmoid" if objective.startswith("binary") else "softmax" if objective.startswith("multi") else ""


def _member_output(g: _Graph, spec: ScoringSpec, pos: int, margin: str | None, link: str, dtype: Any,
                   count: Callable[[], str]) -> str:
    """(n, n_outputs) output of member ``pos`` in the global class columns, from its margin columns (None: a
    constant member); ``count()`` gives the (1,) row count."""
    sm = spec.members[pos]
    if margin is None:
        base = sm.member.value.reshape(1, -1).astype(np.float64)
        p = g.op("Expand", [g.const(base), g.op("Concat", [count(), g.const(np.array([base.shape[1]], np.int64))],
                                                axis=0)])
    else:
        n_local = 1 if sm.class_index is None else len(sm.class_index)
        p = _member_probs(g, link, margin, dtype, n_local)
    if sm.class_index is not None and sm.class_index.tolist() != list(range(spec.n_outputs)):
        # into the global class columns: a zero column for the classes the member never saw
        local = {int(c): i for i, c in enumerate(sm.class_index)}
        n_local = len(sm.class_index)
        zeros = g.op("Expand", [g.const(np.zeros((1, 1))), g.op("Concat", [count(), g.const(np.array([1], np.int64))],
                                                                axis=0)])
        padded = g.op("Concat", [p, zeros], axis=1)
        p = g.op("Gather", [padded, g.const(np.array([local.get(c, n_local) for c in range(spec.n_outputs)], np.int64))],
                 axis=1)
    return p


def _averaged(g: _Graph, spec: ScoringSpec, X: str, codes: dict[str, dict[str, int]], n: str) -> str:
    """(N, n_outputs) weighted sum of every member on every row: one ``TreeEnsemble`` per learner, each member
    output a target, summed in spec order with the normalised weights as ``scoring.score`` sums them."""
    T = g.onnx.TensorProto
    ensembles: dict[str, _Trees] = {}  # learner -> its TreeEnsemble
    plans = []  # (member position, learner name or None, first target, n targets, link, float type)
    everyone = spec.normalized_weights()
    for pos in range(len(spec.members)):
        kind, n_margins, dtype = _plan(spec, pos)
        if not everyone[pos]:
            continue  # never scores (weight 0): score() skips it too
        if kind is None:
            plans.append((pos, None, 0, n_margins, "", dtype))
            continue
        first, link = _add_trees(ensembles.setdefault(kind.name, _Trees(dtype, codes)), spec, pos, kind, n_margins)
        plans.append((pos, kind.name, first, n_margins, link, dtype))
    margins = {}
    for lr in [k for k in KINDS if k in ensembles]:  # in registration order, whatever the members' order
        trees = ensembles[lr]
        margins[lr] = trees.build(g, g.op("Cast", [X], to=T.FLOAT) if trees.dtype == np.float32 else X)
    M = len(spec.members)
    rows = g.op("Expand", [g.const(everyone.reshape(1, -1)), g.op("Concat", [n, g.const(np.array([M], np.int64))], axis=0)])
    out = None
    for pos, lr, first, n_margins, link, dtype in plans:
        margin = None if lr is None else g.op(
            "Slice", [margins[lr], g.const(np.array([first], np.int64)), g.const(np.array([first + n_margins], np.int64)),
                      g.const(np.array([1], np.int64))])
        w = g.op("Slice", [rows, g.const(np.array([pos], np.int64)), g.const(np.array([pos + 1], np.int64)),
                           g.const(np.array([1], np.int64))])
        term = g.op("Mul", [w, _member_output(g, spec, pos, margin, link, dtype, lambda: n)])
        out = term if out is None else g.op("Add", [out, term])
    return out


def _routed(g: _Graph, spec: ScoringSpec, inputs: dict[str, str], X: str, codes: dict[str, dict[str, int]]) -> str:
    """(N, n_outputs) output of routed scoring: each member's own ``TreeEnsemble`` runs on the rows routed to it
    only (``NonZero`` of its route mask, ``Gather`` of those rows), and its weighted output is added into theirs
    (``ScatterND``, reduction ``add``) member after member in spec order, as ``scoring.score`` sums them. A row
    whose group is unknown is routed to every member (the fallback average)."""
    T = g.onnx.TensorProto
    by_key = spec.routes()
    keys = list(by_key)
    W = np.zeros((len(keys) + 1, len(spec.members)))
    for k, key in enumerate(keys):
        W[k, by_key[key]] = spec.normalized_weights(by_key[key])
    W[len(keys)] = spec.normalized_weights()
    route = _route_index(g, spec, inputs, keys)
    n_all = g.op("Shape", [X], start=0, end=1)
    out = g.op("ConstantOfShape", [g.op("Concat", [n_all, g.const(np.array([spec.n_outputs], np.int64))], axis=0)],
               value=g.h.make_tensor("zero", T.DOUBLE, [1], [0.0]))
    typed = {np.float64: X}  # the features as each learner compares them
    for pos in range(len(spec.members)):
        kind, n_margins, dtype = _plan(spec, pos)
        if not W[:, pos].any():
            continue  # never scores (weight 0): score() skips it too
        at = g.op("NonZero", [g.op("Gather", [g.const(W[:, pos] > 0), route], axis=0)])  # (1, n) its rows
        rows = g.op("Reshape", [at, g.const(np.array([-1], np.int64))])
        margin, link = None, ""
        if kind is not None:
            trees = _Trees(dtype, codes)
            _, link = _add_trees(trees, spec, pos, kind, n_margins)
            if dtype not in typed:
                typed[dtype] = g.op("Cast", [X], to=T.FLOAT)
            margin = trees.build(g, g.op("Gather", [typed[dtype], rows], axis=0))
        w = g.op("Gather", [g.const(W[:, pos].reshape(-1, 1)), g.op("Gather", [route, rows], axis=0)], axis=0)
        term = g.op("Mul", [w, _member_output(g, spec, pos, margin, link, dtype, lambda r=rows: g.op("Shape", [r]))])
        out = g.op("ScatterND", [out, g.op("Transpose", [at]), term], reduction="add")
    return out


# ---------------------------------------------------------------------------------------------- the graph
def build_graph(spec: ScoringSpec, metadata: dict[str, Any]) -> Any:
    """The ONNX model of ``spec`` (checked with ``onnx.checker``)."""
    g = _Graph()
    onnx, h = g.onnx, g.h
    T = onnx.TensorProto
    if not any(m.weight > 0 for m in spec.members):
        raise ExportError("no member can predict (all pending or weight 0); call retrain_pending() before export")
    names, kinds = spec.schema.names, spec.schema.kinds
    graph_inputs, inputs = [], {}
    for name, kind in zip(names, kinds):
        graph_inputs.append(h.make_tensor_value_info(name, T.STRING if kind == CATEGORICAL else T.DOUBLE, [None, 1]))
        inputs[name] = name
    # global category codes: the union of every member's vocabulary, sorted
    codes: dict[str, dict[str, int]] = {}
    columns = []
    for name, kind in zip(names, kinds):
        if kind == CATEGORICAL:
            values = sorted({v for m in spec.members for v in m.member.vocab.get(name, [])})
            codes[name] = {v: i for i, v in enumerate(values)}
            if values:
                code = g.op("LabelEncoder", [name], domain="ai.onnx.ml", keys_strings=values,
                            values_int64s=list(range(len(values))), default_int64=-1)
                code = g.op("Cast", [code], to=T.DOUBLE)
                code = g.op("Where", [g.op("Less", [code, g.const(np.array(0.0))]), g.const(np.array(np.nan)), code])
            else:
                code = g.op("Where", [g.op("Equal", [name, g.const(np.array([""], object))]),
                                      g.const(np.array(np.nan)), g.const(np.array(np.nan))])
            columns.append(code)
        else:
            columns.append(name)
    X = g.op("Concat", columns, "X", axis=1) if len(columns) > 1 else columns[0]
    shape_n = g.op("Shape", [names[0]], start=0, end=1)

    C = spec.n_outputs
    if spec.combine == "route":
        out = _routed(g, spec, inputs, X, codes)
    else:
        out = _averaged(g, spec, X, codes, shape_n)

    # overrides last, the first matching one winning
    taken = None
    for ov, cls in zip(spec.overrides, spec.override_classes):
        if spec.task == CLASSIFICATION and cls is None:
            continue
        hit = _rule(g, spec, inputs, ov.text)
        if taken is not None:
            hit = g.op("And", [hit, g.op("Not", [taken])])
        taken = hit if taken is None else g.op("Or", [taken, hit])
        if spec.task == CLASSIFICATION:
            row = np.zeros((1, C))
            row[0, cls] = 1.0
        else:
            row = np.array([[float(ov.label)]])
        out = g.op("Where", [hit, g.const(row), out])

    graph_outputs = []
    if spec.task == CLASSIFICATION:
        g.nodes.append(h.make_node("Identity", [out], ["probabilities"]))
        best = g.op("ArgMax", [out], axis=1, keepdims=0, select_last_index=0)
        classes = spec.classes
        if classes.dtype.kind in "iub":
            labels, ltype = g.const(classes.astype(np.int64)), T.INT64
        else:
            labels, ltype = g.const(np.array([str(c) for c in classes], object)), T.STRING
        g.nodes.append(h.make_node("Gather", [labels, best], ["label"], axis=0))
        graph_outputs = [h.make_tensor_value_info("label", ltype, [None]),
                         h.make_tensor_value_info("probabilities", T.DOUBLE, [None, C])]
    else:
        g.nodes.append(h.make_node("Reshape", [out, g.const(np.array([-1], np.int64))], ["value"]))
        graph_outputs = [h.make_tensor_value_info("value", T.DOUBLE, [None])]
    graph = h.make_graph(g.nodes, "clusterforget", graph_inputs, graph_outputs, g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET), h.make_opsetid("ai.onnx.ml", ML_OPSET)],
                         producer_name="clusterforget")
    model.ir_version = 10
    h.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


AUTH_SUFFIX = ".auth.json"
# the authentication document beside a graph: the manifests' own format (``auth``, ``checksum``, ``mac``, written by
# ``store.auth.sign_manifest`` and read by ``store.auth.check_manifest``) holding the graph's sha256
AUTH_FORMAT = "clusterforget-onnx-auth"


def auth_path(path: Any) -> Path:
    """Where an authenticated graph's HMAC is kept: ``<file>.auth.json`` beside it."""
    p = Path(path)
    return p.with_name(p.name + AUTH_SUFFIX)


def auth_document(secret: bytes, data: bytes) -> dict[str, Any]:
    """The ``.auth.json`` of graph bytes ``data``: signed as a store's or a bundle's manifest is."""
    from ..store.auth import SCHEME, key_id, sign_manifest
    from ..store.commit import manifest_checksum

    doc: dict[str, Any] = {"format": AUTH_FORMAT, "graph_sha256": hashlib.sha256(data).hexdigest(),
                           "auth": {"scheme": SCHEME, "key_id": key_id(secret)}}
    doc["checksum"] = manifest_checksum(doc)
    sign_manifest(doc, secret)
    return doc


def read_onnx(path: Any, key: Any = None) -> bytes:
    """The bytes of an exported graph, checked against its ``.auth.json`` under ``key`` (default
    ``$CLUSTERFORGET_KEY(_FILE)``) when one is given; a graph with an ``.auth.json`` needs its key. The document is
    checked by the manifests' reader (``store.auth.check_manifest``); one in the format written before it shared
    that format (``scheme``, ``key_id`` and ``mac`` alone) is refused, saying to export again."""
    from ..errors import AuthenticationError
    from ..store.auth import check_manifest
    from ..store.commit import manifest_checksum
    from ..store.keys import resolve_key
    from .bundle import read_regular

    p = Path(path)
    secret = resolve_key(key)
    data = read_regular(p)
    side = auth_path(p)
    if not side.exists() and secret is None:
        return data
    again = "export the graph again with key=... (model.export(path, format='onnx', key=...))"
    try:
        doc = json.loads(read_regular(side, limit=1 << 16))
    except (OSError, ValueError) as exc:
        raise AuthenticationError(f"the ONNX export {str(p)!r} is not authenticated ({side.name}: {exc}), but a key "
                                  f"was given; {again}") from None
    if isinstance(doc, dict) and "auth" not in doc and {"scheme", "key_id", "mac"} <= set(doc):
        raise AuthenticationError(f"the ONNX export {str(p)!r} has an {side.name} in the format written before it "
                                  "shared the manifests' authentication (scheme, key_id and mac alone), which is no "
                                  f"longer read; {again}")
    if not isinstance(doc, dict) or doc.get("format") != AUTH_FORMAT or doc.get("checksum") != manifest_checksum(doc) \
            or not isinstance(doc.get("auth"), dict):
        raise AuthenticationError(f"{side.name} of the ONNX export {str(p)!r} is not an authentication document of "
                                  f"this graph (format, checksum or auth altered or removed): do not serve it; {again}")
    check_manifest(doc, secret, p, "export")  # no key given, another key, or its HMAC: refused as a manifest is
    if not hmac.compare_digest(str(doc.get("graph_sha256")), hashlib.sha256(data).hexdigest()):
        raise AuthenticationError(f"the ONNX export {str(p)!r} does not match the sha256 its {side.name} "
                                  "authenticates: it was modified without the key; do not serve it")
    return data


def write_onnx(model: Any, path: Any, key: Any = None) -> dict[str, Any]:
    """Export ``model`` as one ONNX file at ``path`` (written atomically); returns its metadata. With ``key``
    its HMAC goes into ``<path>.auth.json``, written first: a watcher signs on the graph, written last
    (``serve.app._signature``), so when it sees the new graph it sees its HMAC."""
    from ..estimators import ensemble_of  # here: scoring a bundle never loads the estimators
    from ..store.keys import resolve_key

    secret = resolve_key(key)
    ens = ensemble_of(model)
    ens.check_ready()
    spec = ens.scoring_spec()
    meta = {**provenance(model, "onnx"), "task": spec.task, "schema": spec.schema.to_dict(),
            "members": [m.name for m in spec.members],
            "classes": None if spec.classes is None else spec.classes.tolist()}
    proto = build_graph(spec, {k: v for k, v in meta.items() if k != "members"})
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"ONNX path {str(target)!r} is a directory; pass a file name such as 'model.onnx'")
    data = proto.SerializeToString()
    if secret is not None:
        write_atomic(auth_path(target), json.dumps(auth_document(secret, data)).encode())
    else:
        auth_path(target).unlink(missing_ok=True)
    write_atomic(target, data)
    return meta


def feeds(X: Any, schema: Any) -> dict[str, np.ndarray]:
    """The graph's inputs for ``X`` (anything ``predict`` takes): numbers as double (NaN: missing),
    categories as strings ('': missing), each ``[N, 1]``."""
    table: pa.Table = conform(X, schema, "the ONNX graph")
    out = {}
    for name, kind in zip(schema.names, schema.kinds):
        col = table.column(name)
        if kind == CATEGORICAL:
            col = pc.fill_null(col.cast(pa.string()), "")
            out[name] = np.asarray(col.to_pylist(), dtype=object).reshape(-1, 1)
        else:
            out[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, 1)
    return out


def session(path: Any, n_threads: int = 1, data: bytes | None = None) -> Any:
    """An onnxruntime session for an exported graph, checked to be a version that scores it right.

    ``n_threads=1`` (the default) keeps every sum in the learners' order: with more threads onnxruntime
    splits small batches by trees and adds the partial sums in another order (measured: LightGBM margins
    then differ in the last bit, XGBoost float32 margins by up to 1 ulp). Scale a service by requests.
    """
    ort = optional("onnxruntime", "scoring an ONNX export")
    have = tuple(int(p) for p in ort.__version__.split(".")[:2])
    if have < tuple(int(p) for p in MIN_ONNXRUNTIME.split(".")):
        raise ExportError(f"onnxruntime {ort.__version__} scores TreeEnsemble opset 5 wrong or not at all; install "
                          f"onnxruntime>={MIN_ONNXRUNTIME}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(n_threads)
    options.inter_op_num_threads = 1
    # verified bytes (read_onnx), not the file a writer could replace after the check
    return ort.InferenceSession(data if data is not None else str(path), options, providers=["CPUExecutionProvider"])


def metadata(sess: Any) -> dict[str, Any]:
    """The provenance an ONNX export carries (model version, store version and ledger head, schema, ...)."""
    return {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


__all__ = ["write_onnx", "read_onnx", "build_graph", "feeds", "session", "metadata", "MIN_ONNXRUNTIME"]
