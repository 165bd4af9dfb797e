"""The XGBoost learner: training, its members (native JSON model files), and what the rest needs of it.

Registered as one ``LearnerKind``: member files are XGBoost's JSON (``.json``); ``learner_params`` keys are
checked by XGBoost itself; XGBoost compares float32 features and sums float32 leaves (``float32``: exports and
shap's tree dict read it); its ONNX trees and treelite model. ``xgboost`` is an optional library (the
``xgboost`` extra), imported only inside functions.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import numpy as np

from ..data import CATEGORICAL, Schema
from ..errors import ExportError
from .base import (
    CLASSIFICATION,
    BoosterMember,
    Learner,
    LearnerKind,
    classes_of,
    register,
    shap_tree,
    split_rounds,
    treelite_frontend,
)


class XGBoostMember(BoosterMember):
    learner = "xgboost"

    def _dmatrix(self, M, schema, n_threads):
        import xgboost as xgb

        return xgb.DMatrix(M, feature_types=_xgb_types(schema), enable_categorical=True, nthread=n_threads)

    def _raw(self, M, schema, n_threads):
        return self.booster.predict(self._dmatrix(M, schema, n_threads))

    def margin_encoded(self, M, schema, n_threads=1):
        out = self.booster.predict(self._dmatrix(M, schema, n_threads), output_margin=True)
        return out.astype(np.float64).reshape(len(M), -1)

    def contrib_encoded(self, M, schema, n_threads=1):
        dm = self._dmatrix(M, schema, n_threads)
        out = self.booster.predict(dm, pred_contribs=True).astype(np.float64)
        out = out.reshape(len(M), -1, len(schema.names) + 1)
        # XGBoost sums its float32 contributions to the margin only within ~1e-6: the bias takes the rest, so
        # features keep XGBoost's values and each row sums to its raw score (``margin_encoded``)
        margin = self.booster.predict(dm, output_margin=True).astype(np.float64).reshape(len(M), -1)
        out[:, :, -1] = margin - out[:, :, :-1].sum(axis=2)
        return out

    def shap_trees(self, schema):
        config = json.loads(self.booster.save_config())["learner"]
        n_out = max(1, int(config["learner_model_param"].get("num_class", "0")))
        if config["gradient_booster"]["name"] != "gbtree":
            raise ExportError("shap's tree format needs a gbtree booster; use predict(X, pred_contrib=True)")
        out = []
        leaf_position: list[dict[int, int]] = []
        for t, text in enumerate(self.booster.get_dump(dump_format="json", with_stats=True)):
            tree = json.loads(text)
            if _xgb_has_categories(tree):
                raise ExportError(f"tree {t} splits by category; shap's tree format has numeric splits only: use "
                                  "predict(X, pred_contrib=True)")
            flat: dict[int, dict] = {}

            def walk(node: dict) -> None:
                flat[node["nodeid"]] = node
                for child in node.get("children", ()):
                    walk(child)

            walk(tree)
            order = {nid: i for i, nid in enumerate(sorted(flat))}
            leaf_position.append(order)
            nodes = []
            for nid in sorted(flat):
                node = flat[nid]
                if "leaf" in node:
                    nodes.append((-1, -1, -1, -1, 0.0, float(node["leaf"]), float(node["cover"])))
                else:
                    # XGBoost sends x < c left on float32 inputs: x <= the float32 just below c
                    below = float(np.nextafter(np.float32(node["split_condition"]), np.float32(-np.inf)))
                    nodes.append((order[node["yes"]], order[node["no"]], order[node["missing"]], int(node["split"][1:]),
                                  below, 0.0, float(node["cover"])))
            out.append((shap_tree(nodes), t % n_out))
        # the intercept (base_score as a margin) as one-leaf trees: a row's raw score less the leaves it reaches
        dm = self._dmatrix(np.zeros((1, len(schema.names))), schema, 1)
        margin = self.booster.predict(dm, output_margin=True).astype(np.float64).reshape(-1)
        reached = self.booster.predict(dm, pred_leaf=True).reshape(-1).astype(int)
        leaves = np.zeros(len(margin))
        for t, (tree, k) in enumerate(out):
            leaves[k] += tree["values"][leaf_position[t][int(reached[t])]]
        for k in range(len(margin)):
            out.append((shap_tree([(-1, -1, -1, -1, 0.0, float(margin[k] - leaves[k]), 1.0)]), k))
        return out

    def feature_importance(self, importance_type, n_features):
        # XGBoost's "weight" counts splits, "total_gain" sums gains: LightGBM's "split" and "gain"
        scores = self.booster.get_score(importance_type="weight" if importance_type == "split" else "total_gain")
        out = np.zeros(n_features)
        for name, value in scores.items():
            out[int(name[1:])] = value  # features are named f0, f1, ... (trained without names)
        return out

    def model_bytes(self) -> bytes:
        return bytes(self.booster.save_raw("json"))

    @property
    def rounds(self) -> int:
        return int(self.booster.num_boosted_rounds())

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "XGBoostMember":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return cls(classes_of(meta), meta["vocab"], meta["n_rows"], booster)


def _xgb_has_categories(node: dict) -> bool:
    return "categories" in node or any(_xgb_has_categories(c) for c in node.get("children", ()))


def _xgb_types(schema: Schema) -> list[str]:
    return ["c" if k == CATEGORICAL else "q" for k in schema.kinds]


class XGBoostLearner(Learner):
    name = "xgboost"
    stopping_metrics = {
        None: ("error", "merror", "rmse"),
        "accuracy": ("error", "merror", None),
        "roc_auc": ("auc", "auc", None),
        "neg_log_loss": ("logloss", "mlogloss", None),
        "r2": (None, None, "rmse"),
        "neg_mean_squared_error": (None, None, "rmse"),
        "neg_root_mean_squared_error": (None, None, "rmse"),
        "neg_mean_absolute_error": (None, None, "mae"),
    }
    # measured: `hist` histograms summed over 2 threads differ in the last bits from 1 thread on some
    # groups (a 50-row multiclass group), which changes split gains and so the trees
    thread_invariant = False

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None, valid=None, n_rows=None):
        import xgboost as xgb

        params, rounds = split_rounds(self.params)
        params.setdefault("tree_method", "hist")
        if classes is None:
            params.setdefault("objective", "reg:squarederror")
        elif len(classes) == 2:
            params["objective"] = "binary:logistic"
        else:
            params["objective"] = "multi:softprob"
            params["num_class"] = len(classes)
        params.update(seed=self.seed, nthread=n_threads, verbosity=0)
        dm = xgb.DMatrix(X, label=y, weight=weight, feature_types=_xgb_types(schema), enable_categorical=True,
                         nthread=n_threads)
        if valid is None:
            return XGBoostMember(classes, vocab, n_rows or len(y), xgb.train(params, dm, num_boost_round=rounds))
        self._stop_on(params, "eval_metric", classes)
        dv = xgb.DMatrix(valid[0], label=valid[1], weight=valid[2], feature_types=_xgb_types(schema),
                         enable_categorical=True, nthread=n_threads)
        booster = xgb.train(params, dm, num_boost_round=rounds, evals=[(dv, "valid")],
                            early_stopping_rounds=self.stopping.n_iter_no_change, verbose_eval=False)
        return XGBoostMember(classes, vocab, n_rows or len(y), booster[: booster.best_iteration + 1])  # chosen rounds


def _xgboost_names(params: dict[str, Any], task: str) -> tuple[set[str], list[str]]:
    """The keys of ``params`` XGBoost reports as not used, and its canonical parameter names.

    XGBoost has no table of its parameters; it validates them when it configures a booster. So one round is
    trained on four rows (milliseconds) with the objectives members of this task use, and the keys XGBoost
    says no objective used are the unknown ones.
    """
    import xgboost as xgb

    params = split_rounds(params)[0]
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    if task == CLASSIFICATION:
        probes = [({"objective": "binary:logistic"}, [0.0, 1.0, 0.0, 1.0]),
                  ({"objective": "multi:softprob", "num_class": 3}, [0.0, 1.0, 2.0, 1.0])]
    else:
        probes = [({}, [0.0, 1.0, 2.0, 3.0])]
    unused: set[str] | None = None
    names: set[str] = set()
    for extra, y in probes:
        p = {"tree_method": "hist", "objective": "reg:squarederror", **params, **extra, "nthread": 1,
             "verbosity": 1, "validate_parameters": True}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                booster = xgb.train(p, xgb.DMatrix(X, label=np.asarray(y)), num_boost_round=1)
            except xgb.core.XGBoostError:
                return set(), []  # a value XGBoost refuses: training says which, with XGBoost's message
        said = {k for w in caught if "are not used" in str(w.message)
                for k in re.findall(r'"([^"]+)"', str(w.message))}
        unused = said if unused is None else unused & said
        names |= set(_config_keys(json.loads(booster.save_config())))
    return unused or set(), sorted(names)


def _config_keys(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return []
    return [k for k, v in doc.items() for k in ([k] if not isinstance(v, dict) else _config_keys(v))]


def check_params(params: dict[str, Any], task: str) -> tuple[list[str], list[str]]:
    """(keys XGBoost says no objective of this task used, its parameter names)."""
    said, valid = _xgboost_names(params, task)
    return [k for k in params if k in said], valid


def onnx_trees(trees: Any, member: "XGBoostMember", targets: list[int], names: list[str],
                 what: str) -> str:
    doc = json.loads(bytes(member.booster.save_raw("json")))
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective not in ("binary:logistic", "multi:softprob", "reg:squarederror"):
        raise ExportError(f"{what}: XGBoost objective {objective!r} has no exact ONNX form here; export "
                          "format='bundle' instead")
    model = learner["gradient_booster"]["model"]
    if learner["gradient_booster"].get("name", "gbtree") != "gbtree":
        raise ExportError(f"{what}: XGBoost booster {learner['gradient_booster'].get('name')!r} is not a tree "
                          "ensemble; export format='bundle' instead")
    base = np.atleast_1d(np.asarray(json.loads(learner["learner_model_param"]["base_score"]), dtype=np.float32))
    if objective == "binary:logistic":
        # XGBoost's ProbToMargin in float32: -logf(1/p - 1) (this form, measured; logf as the rounded double log)
        odds = np.float32(np.float32(1.0) / base[0]) - np.float32(1.0)
        base = np.array([-np.float32(np.log(np.float64(odds)))], dtype=np.float32)
    if len(base) != len(targets):
        base = np.repeat(base[:1], len(targets))
    # XGBoost starts each sum at the base margin and adds the trees in order, in float32: the base is the
    # first tree of each target, so onnxruntime's float sum runs in the same order
    for target, b in zip(targets, base.tolist()):
        trees.constant_tree(target, b)
    for tree, cls in zip(model["trees"], model["tree_info"]):
        target = targets[cls]
        left, right = tree["left_children"], tree["right_children"]
        cond, default_left, kind = tree["split_conditions"], tree["default_left"], tree["split_type"]
        cats = {n: tree["categories"][s:s + z] for n, s, z in
                zip(tree["categories_nodes"], tree["categories_segments"], tree["categories_sizes"])}

        def walk(i: int) -> tuple[bool, int]:
            if left[i] == -1:
                return True, trees.leaf(target, float(np.float32(cond[i])))
            f = tree["split_indices"][i]
            if kind[i] == 1:
                col = names[f]
                # XGBoost sends the listed categories right, the others left, missing the default way; a
                # category the member never saw is missing to it
                right_set = trees.global_codes(col, member.vocab[col], cats.get(i, []))
                if not default_left[i]:
                    right_set += trees.unseen(col, member.vocab[col])
                n = trees.node(f, 0.0, trees.MEMBER, not default_left[i], sorted(right_set))
                trees.link(n, walk(right[i]), walk(left[i]))
            else:
                n = trees.node(f, float(np.float32(cond[i])), trees.LT, bool(default_left[i]))
                trees.link(n, walk(left[i]), walk(right[i]))
            return False, n

        trees.add_root(target, walk(0))
    return objective


register(LearnerKind(
    name="xgboost", member=XGBoostMember, learner=XGBoostLearner, ext=".json", requires="xgboost",
    extra="xgboost", libraries={"xgboost": ("xgboost-cpu", "xgboost")}, check_params=check_params, float32=True,
    onnx=onnx_trees, treelite=lambda member: treelite_frontend().from_xgboost(member.booster),
))
