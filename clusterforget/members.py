"""Learner adapters: train one member on one group's rows, predict, and serialize to native model files.

A member is a pure function of its group's rows in canonical (id) order and of the settings: it owns
its own category encodings (``vocab``) and its own class list, so no state is shared across members and
forgetting rows in one group can never change another group's member.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._compat import optional
from .data import CATEGORICAL, LABEL, WEIGHT, Schema
from .errors import ExportError, InputError

CLASSIFICATION = "classification"
REGRESSION = "regression"

LGB_DEFAULTS = {"num_iterations": 100, "verbose": -1}
# the raw score (log-odds) of a member that saw one class: infinite in theory; this is where LightGBM's
# boost_from_average starts a group of one class (its average clipped to [1e-15, 1 - 1e-15]), so raw scores
# and contributions stay finite and sum as the ensemble combines them
CERTAIN_MARGIN = float(np.log((1.0 - 1e-15) / 1e-15))
IMPORTANCE_TYPES = ("split", "gain")
_ROUND_ALIASES = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                  "num_rounds", "nrounds", "num_boost_round", "n_estimators", "max_iter")


def fit_vocab(rows: pa.Table, schema: Schema) -> dict[str, list[str]]:
    """Sorted distinct values of each categorical column in these rows: the member's category encoding."""
    vocab = {}
    for name, kind in zip(schema.names, schema.kinds):
        if kind == CATEGORICAL:
            uniq = pc.unique(rows.column(name)).drop_null()
            vocab[name] = pc.take(uniq, pc.sort_indices(uniq)).to_pylist()
    return vocab


def encode(X: pa.Table, schema: Schema, vocab: dict[str, list[str]]) -> np.ndarray:
    """Features as a float64 matrix: numbers as they are, categories as codes of ``vocab`` (unseen → NaN)."""
    out = np.empty((X.num_rows, len(schema.names)), dtype=np.float64)
    for j, (name, kind) in enumerate(zip(schema.names, schema.kinds)):
        col = X.column(name)
        if kind == CATEGORICAL:
            col = pc.index_in(col, value_set=pa.array(vocab[name], pa.string()))
        out[:, j] = col.to_numpy(zero_copy_only=False)  # nulls come out as NaN
    return out


class Member:
    """A trained member. ``classes`` are the labels it saw (classification), in sorted order."""

    learner: str = ""
    # seconds its training took, when known: kept in the store's manifest (never in the model file, so it
    # changes no prediction and no member file) to estimate how long a planned retrain will take
    fit_seconds: float | None = None

    def __init__(self, classes: np.ndarray | None, vocab: dict[str, list[str]], n_rows: int):
        self.classes = classes
        self.vocab = vocab
        self.n_rows = n_rows
        # members with equal vocabularies share one encoded matrix at predict time
        self.vocab_key = json.dumps(vocab, sort_keys=True)

    def predict(self, X: pa.Table, schema: Schema, n_threads: int = 1) -> np.ndarray:
        """(n, len(classes)) probabilities, or (n,) values for regression."""
        return self.predict_encoded(encode(X, schema, self.vocab), schema, n_threads)

    def predict_encoded(self, M: np.ndarray, schema: Schema, n_threads: int = 1) -> np.ndarray:
        """As ``predict``, on features already encoded with this member's ``vocab``."""
        raise NotImplementedError

    def margin_encoded(self, M: np.ndarray, schema: Schema, n_threads: int = 1) -> np.ndarray:
        """Raw scores, before the link function, as (n, k): k = 1 for regression, for two classes (the log-odds
        of the second) and for a member of one class (the log-odds of it); k = len(classes) for more classes."""
        raise NotImplementedError

    def contrib_encoded(self, M: np.ndarray, schema: Schema, n_threads: int = 1) -> np.ndarray:
        """Exact TreeSHAP contributions as (n, k, n_features + 1): per raw output (as ``margin_encoded``) each
        feature's contribution, then the bias; each row's sum is its raw score."""
        raise NotImplementedError

    def feature_importance(self, importance_type: str, n_features: int) -> np.ndarray:
        """Per feature: the number of splits on it (``"split"``) or their total gain (``"gain"``), as LightGBM."""
        raise NotImplementedError

    def shap_trees(self, schema: Schema) -> list[tuple[dict[str, np.ndarray], int]]:
        """The member's trees in the dict form ``shap.TreeExplainer`` reads (``children_left`` / ``_right`` /
        ``_default``, ``features``, ``thresholds`` for ``x <= threshold``, ``values``, ``node_sample_weight``),
        each with the raw output (as ``margin_encoded``) it adds to; the sum of its leaves is the raw score."""
        raise NotImplementedError

    def model_bytes(self) -> bytes:
        raise NotImplementedError

    def scoring_bytes(self) -> bytes:
        """The native file an export holds: what scoring reads, no more (``model_bytes`` less any summary of
        the training rows that predicting does not use). Loads into a member that scores bitwise the same."""
        return self.model_bytes()

    def meta(self) -> dict[str, Any]:
        return {
            "learner": self.learner,
            "classes": None if self.classes is None else self.classes.tolist(),
            "vocab": self.vocab,
            "n_rows": self.n_rows,
        }


class ConstantMember(Member):
    """A member for a group that cannot support a tree model: one class, fewer than two rows, or no weight."""

    learner = "constant"

    def __init__(self, classes, vocab, n_rows, value: np.ndarray):
        super().__init__(classes, vocab, n_rows)
        self.value = np.asarray(value, dtype=np.float64)

    def predict(self, X, schema, n_threads=1):
        return self.predict_encoded(np.empty((X.num_rows, 0)), schema, n_threads)

    def predict_encoded(self, M, schema, n_threads=1):
        if self.classes is None:
            return np.full(len(M), float(self.value.reshape(-1)[0]))
        return np.tile(self.value, (len(M), 1))

    def _margins(self) -> np.ndarray:
        """The raw outputs (as ``margin_encoded``): the value (regression), the certain log-odds of one class, the
        log-odds of the second of two classes, or the log-probabilities of more (a weightless group's member)."""
        p = self.value.reshape(-1)
        if self.classes is None:
            return p[:1]
        if len(self.classes) == 1:
            return np.array([CERTAIN_MARGIN])
        return np.log(p[1:] / p[:1]) if len(p) == 2 else np.log(p)

    def margin_encoded(self, M, schema, n_threads=1):
        return np.tile(self._margins(), (len(M), 1))

    def contrib_encoded(self, M, schema, n_threads=1):
        margins = self._margins()
        out = np.zeros((len(M), len(margins), len(schema.names) + 1))
        out[:, :, -1] = margins  # no feature moves a constant: all bias
        return out

    def feature_importance(self, importance_type, n_features):
        return np.zeros(n_features)

    def shap_trees(self, schema):
        return [(_shap_tree([(-1, -1, -1, -1, 0.0, float(v), 1.0)]), k) for k, v in enumerate(self._margins())]

    def model_bytes(self) -> bytes:
        return json.dumps({"value": self.value.tolist()}).encode()

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "ConstantMember":
        return cls(_classes(meta), meta["vocab"], meta["n_rows"], np.asarray(json.loads(data)["value"]))


def _classes(meta) -> np.ndarray | None:
    return None if meta["classes"] is None else np.asarray(meta["classes"])


def _rounds(params: dict[str, Any], default: int = 100) -> tuple[dict[str, Any], int]:
    params = dict(params)
    rounds = default
    for alias in _ROUND_ALIASES:
        if alias in params:
            rounds = int(params.pop(alias))
    return params, rounds


class _BoosterMember(Member):
    """A member backed by a learner's booster; subclasses say how to predict raw outputs."""

    def __init__(self, classes, vocab, n_rows, booster):
        super().__init__(classes, vocab, n_rows)
        self.booster = booster

    def _raw(self, M: np.ndarray, schema: Schema, n_threads: int) -> np.ndarray:
        raise NotImplementedError

    def predict_encoded(self, M, schema, n_threads=1):
        raw = self._raw(M, schema, n_threads).astype(np.float64)
        if self.classes is not None and raw.ndim == 1:  # binary: the learner gives P(second class)
            return np.column_stack([1.0 - raw, raw])
        return raw


class NativeLightGBM:
    """A LightGBM model held by LightGBM's C library, predicting through the call ``Booster.predict`` makes.

    ``LGBM_BoosterPredictForMat`` on the same float64 row-major matrix, all iterations, the same parameter
    string: the outputs are ``Booster.predict``'s, bit for bit. It skips the ``lightgbm`` Python package,
    whose import loads scikit-learn (seconds before a scoring process can answer), and that package's
    per-call checks (most of a one-row prediction). The library is the one the installed package ships.
    """

    _lib: Any = None
    _lock = threading.Lock()

    @classmethod
    def library(cls) -> Any:
        with cls._lock:
            if cls._lib is None:
                import ctypes
                import importlib.util
                from pathlib import Path

                spec = importlib.util.find_spec("lightgbm")  # finds the package without importing it
                if spec is None or spec.origin is None:
                    raise ImportError("lightgbm is not installed")
                folder = Path(spec.origin).parent
                for name in ("lib/lib_lightgbm.so", "lib/lib_lightgbm.dylib", "bin/lib_lightgbm.dll",
                             "lib/lib_lightgbm.dll", "lib_lightgbm.so"):
                    if (folder / name).is_file():
                        lib = ctypes.cdll.LoadLibrary(str(folder / name))
                        lib.LGBM_GetLastError.restype = ctypes.c_char_p
                        cls._lib = lib
                        break
                else:
                    raise ImportError(f"no LightGBM library under {str(folder)!r}")
            return cls._lib

    def __init__(self, model: str):
        import ctypes

        self._ctypes = ctypes
        self._model = model
        lib = self.library()
        handle, iterations = ctypes.c_void_p(), ctypes.c_int(0)
        self._check(lib.LGBM_BoosterLoadModelFromString(model.encode(), ctypes.byref(iterations),
                                                        ctypes.byref(handle)))
        self._handle = handle
        n_classes, n_features = ctypes.c_int(0), ctypes.c_int(0)
        self._check(lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(n_classes)))
        self._check(lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(n_features)))
        self.n_classes, self.n_features = n_classes.value, n_features.value
        self._params: dict[int, bytes] = {}
        # one-row predictions: LightGBM's FastConfig (its parameters parsed once), one per thread count;
        # it holds one predictor whose buffers a call writes, hence the lock
        self._fast: dict[int, Any] = {}
        self._fast_lock = threading.Lock()
        self._row_out = np.empty(max(self.n_classes, 1), dtype=np.float64)

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise InputError(f"LightGBM: {self.library().LGBM_GetLastError().decode(errors='replace')}")

    def predict(self, M: np.ndarray, num_threads: int = 1) -> np.ndarray:
        ctypes = self._ctypes
        if M.ndim != 2 or M.shape[1] != self.n_features:
            raise InputError(f"a member with {self.n_features} features got a matrix of shape {M.shape}")
        M = np.ascontiguousarray(M, dtype=np.float64)
        n = len(M)
        if n == 1:
            return self._predict_row(M, num_threads)
        out = np.empty(n * self.n_classes, dtype=np.float64)
        got = ctypes.c_int64(0)
        param = self._params.setdefault(num_threads, f"num_threads={int(num_threads)}".encode())
        self._check(self.library().LGBM_BoosterPredictForMat(
            self._handle, M.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(1), ctypes.c_int32(n),  # 1: float64
            ctypes.c_int32(M.shape[1]), ctypes.c_int(1), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),
            param, ctypes.byref(got), out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))  # row-major, normal
        if got.value != len(out):
            raise InputError(f"LightGBM returned {got.value} outputs for {n} rows of {self.n_classes} classes")
        return out if self.n_classes == 1 else out.reshape(n, self.n_classes)

    def _predict_row(self, M: np.ndarray, num_threads: int) -> np.ndarray:
        """One row through ``LGBM_BoosterPredictForMatSingleRowFast``: the predictor ``PredictForMat`` builds
        per call, built once (same predict function, same outputs bit for bit), without its per-call setup."""
        ctypes, lib = self._ctypes, self.library()
        got = ctypes.c_int64(0)
        with self._fast_lock:
            fast = self._fast.get(num_threads)
            if fast is None:
                fast = ctypes.c_void_p()
                self._check(lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),  # normal, all iterations
                    ctypes.c_int(1), ctypes.c_int32(self.n_features),  # float64
                    f"num_threads={int(num_threads)}".encode(), ctypes.byref(fast)))
                self._fast[num_threads] = fast
            out = self._row_out
            self._check(lib.LGBM_BoosterPredictForMatSingleRowFast(
                fast, M.ctypes.data_as(ctypes.c_void_p), ctypes.byref(got),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
            out = out.copy()
        if got.value != self.n_classes:
            raise InputError(f"LightGBM returned {got.value} outputs for 1 row of {self.n_classes} classes")
        return out if self.n_classes == 1 else out.reshape(1, self.n_classes)

    def __reduce__(self) -> tuple:  # a copy gets its own handle (never two owners of one)
        return (NativeLightGBM, (self._model,))

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and self._lib is not None:
            for fast in getattr(self, "_fast", {}).values():
                self._lib.LGBM_FastConfigFree(fast)
            self._lib.LGBM_BoosterFree(handle)


class LightGBMMember(_BoosterMember):
    learner = "lightgbm"

    def __init__(self, classes, vocab, n_rows, booster=None, *, model: str | None = None):
        super().__init__(classes, vocab, n_rows, booster)
        self._model = model  # the model text, when loaded from a file (the booster is then built on demand)
        self._native: NativeLightGBM | None = None
        if booster is None:
            del self.booster
            try:
                self._native = NativeLightGBM(model)
            except (ImportError, OSError):
                self.booster = _lightgbm_booster(model)

    def __getattr__(self, name: str) -> Any:
        # ``booster`` of a member loaded from a file, built on first use (exports, explanations, compiling)
        if name == "booster" and self.__dict__.get("_model") is not None:
            self.booster = _lightgbm_booster(self._model)
            return self.booster
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _raw(self, M, schema, n_threads):
        if self._native is not None:
            return self._native.predict(M, n_threads)
        return self.booster.predict(M, num_threads=n_threads)

    def margin_encoded(self, M, schema, n_threads=1):
        return self.booster.predict(M, raw_score=True, num_threads=n_threads).reshape(len(M), -1)

    def contrib_encoded(self, M, schema, n_threads=1):
        out = self.booster.predict(M, pred_contrib=True, num_threads=n_threads)  # per class: features, bias
        return np.asarray(out, dtype=np.float64).reshape(len(M), -1, len(schema.names) + 1)

    def feature_importance(self, importance_type, n_features):
        return self.booster.feature_importance(importance_type=importance_type).astype(np.float64)

    def shap_trees(self, schema):
        dump = self.booster.dump_model()
        per_iteration = int(dump.get("num_tree_per_iteration", 1))
        out = []
        for t in dump["tree_info"]:
            nodes: list[tuple] = []

            def visit(node: dict) -> int:
                at = len(nodes)
                nodes.append(None)
                if "split_index" not in node:  # a one-leaf tree has no count: its weight cannot matter
                    nodes[at] = (-1, -1, -1, -1, 0.0, float(node["leaf_value"]), float(node.get("leaf_count", 1)))
                    return at
                if node["decision_type"] != "<=":
                    raise ExportError(f"tree {t['tree_index']} splits feature {node['split_feature']} by category; "
                                      "shap's tree format has numeric splits only: use predict(X, pred_contrib=True)")
                threshold = float(node["threshold"])
                left, right = visit(node["left_child"]), visit(node["right_child"])
                missing = node["missing_type"]
                default = left if node["default_left"] else right
                zero_side = left if 0.0 <= threshold else right
                if missing == "None":
                    default = zero_side  # LightGBM scores a missing value as 0.0
                elif missing == "Zero" and default != zero_side:
                    raise ExportError(f"tree {t['tree_index']} treats 0 as missing (zero_as_missing), which shap's "
                                      "tree format cannot say: use predict(X, pred_contrib=True)")
                nodes[at] = (left, right, default, int(node["split_feature"]), threshold,
                             float(node["internal_value"]), float(node["internal_count"]))
                return at

            visit(t["tree_structure"])
            out.append((_shap_tree(nodes), int(t["tree_index"]) % per_iteration))
        return out

    def model_bytes(self) -> bytes:
        if self.__dict__.get("booster") is None:
            return self._model.encode()
        return self.booster.model_to_string().encode()

    def scoring_bytes(self) -> bytes:
        # ``feature_infos`` holds each numeric feature's [min:max] over the member's rows: real training values,
        # read only by training (refit, continued boosting), never by predict. "none" is what LightGBM itself
        # writes for a feature without a range; categorical entries are the member's category codes (kept).
        return neutral_feature_infos(self.model_bytes())

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "LightGBMMember":
        return cls(_classes(meta), meta["vocab"], meta["n_rows"], model=data.decode())


_FEATURE_INFOS = re.compile(rb"^feature_infos=(.*)$", re.MULTILINE)


def neutral_feature_infos(model: bytes) -> bytes:
    """LightGBM model text with each numeric feature's training range (``[min:max]``) replaced by ``none``."""
    def neutral(match: re.Match) -> bytes:
        infos = [b"none" if info.startswith(b"[") else info for info in match.group(1).split(b" ")]
        return b"feature_infos=" + b" ".join(infos)

    return _FEATURE_INFOS.sub(neutral, model, count=1)


def _lightgbm_booster(model: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_str=model)


class XGBoostMember(_BoosterMember):
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
            out.append((_shap_tree(nodes), t % n_out))
        # the intercept (base_score as a margin) as one-leaf trees: a row's raw score less the leaves it reaches
        dm = self._dmatrix(np.zeros((1, len(schema.names))), schema, 1)
        margin = self.booster.predict(dm, output_margin=True).astype(np.float64).reshape(-1)
        reached = self.booster.predict(dm, pred_leaf=True).reshape(-1).astype(int)
        leaves = np.zeros(len(margin))
        for t, (tree, k) in enumerate(out):
            leaves[k] += tree["values"][leaf_position[t][int(reached[t])]]
        for k in range(len(margin)):
            out.append((_shap_tree([(-1, -1, -1, -1, 0.0, float(margin[k] - leaves[k]), 1.0)]), k))
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

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "XGBoostMember":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return cls(_classes(meta), meta["vocab"], meta["n_rows"], booster)


def _shap_tree(nodes: list[tuple]) -> dict[str, np.ndarray]:
    """(left, right, default, feature, threshold, value, weight) per node -> shap's tree dict."""
    cols = list(zip(*nodes))
    return {
        "children_left": np.asarray(cols[0], dtype=np.int32),
        "children_right": np.asarray(cols[1], dtype=np.int32),
        "children_default": np.asarray(cols[2], dtype=np.int32),
        "features": np.asarray(cols[3], dtype=np.int32),
        "thresholds": np.asarray(cols[4], dtype=np.float64),
        "values": np.asarray(cols[5], dtype=np.float64),
        "node_sample_weight": np.asarray(cols[6], dtype=np.float64),
    }


def _xgb_has_categories(node: dict) -> bool:
    return "categories" in node or any(_xgb_has_categories(c) for c in node.get("children", ()))


def _xgb_types(schema: Schema) -> list[str]:
    return ["c" if k == CATEGORICAL else "q" for k in schema.kinds]


class Learner:
    """Trains members of one kind. ``params`` are the user's; determinism settings are enforced on top."""

    name = ""
    # whether a model is the same whatever the number of threads that trained it; when not, every member
    # trains on one thread (parallelism then comes from training several members at once)
    thread_invariant = True

    def __init__(self, params: dict[str, Any] | None, seed: int, class_weight: Any = None):
        self.params = dict(params or {})
        self.seed = seed
        # None, "balanced" or {label: weight}; computed on each member's own rows (``class_weights``)
        self.class_weight = class_weight

    def train(self, rows: pa.Table, schema: Schema, task: str, n_threads: int) -> Member:
        y = rows.column(LABEL).to_numpy(zero_copy_only=False)
        vocab = fit_vocab(rows, schema)
        n = rows.num_rows
        w = sample_weights(rows)
        weightless = w is not None and not bool(np.any(w > 0))
        if task == CLASSIFICATION:
            classes, yi = np.unique(y, return_inverse=True)
            if len(classes) == 1 or n < 2:
                return ConstantMember(classes, vocab, n, np.ones(len(classes)))
            if weightless:  # see below: the uniform distribution over its classes
                return ConstantMember(classes, vocab, n, np.full(len(classes), 1.0 / len(classes)))
            if self.class_weight is not None:
                cw = class_weights(self.class_weight, classes, yi)
                w = _unit_is_none(cw[yi] if w is None else w * cw[yi])
            return self._fit(encode(rows, schema, vocab), yi.astype(np.float64), classes, vocab, schema, n_threads, w)
        y = y.astype(np.float64)
        # rows that all weigh 0 teach a learner nothing (XGBoost refuses them, LightGBM fits noise): the group
        # gets a constant member, and its ensemble weight (the sum of its sample weights) is 0, so it never scores
        if weightless:
            return ConstantMember(None, vocab, n, np.array([0.0]))
        if n < 2 or np.all(y == y[0]):
            return ConstantMember(None, vocab, n, np.array([y.mean()]))
        return self._fit(encode(rows, schema, vocab), y, None, vocab, schema, n_threads, w)

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None) -> Member:
        raise NotImplementedError


def sample_weights(rows: pa.Table) -> np.ndarray | None:
    """The rows' sample weights for the learner, or None when every weight is 1: a member of unweighted rows
    is trained exactly as without weights (so a model fitted without them keeps its bits)."""
    return _unit_is_none(rows.column(WEIGHT).to_numpy())


def class_weights(class_weight: Any, classes: np.ndarray, yi: np.ndarray) -> np.ndarray:
    """Weight of each of ``classes`` as scikit-learn's ``compute_class_weight`` defines it, on one member's rows:
    ``"balanced"`` is n_rows / (n_classes * rows of the class), counted in the member's group (so a change to
    one group never changes another member's weights); a dict maps labels to weights (others weigh 1)."""
    if isinstance(class_weight, str):  # "balanced" (checked by the estimator)
        counts = np.bincount(yi, minlength=len(classes)).astype(np.float64)
        return len(yi) / (len(classes) * counts)
    return np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()], dtype=np.float64)


def _unit_is_none(w: np.ndarray) -> np.ndarray | None:
    return None if bool(np.all(w == 1.0)) else np.ascontiguousarray(w, dtype=np.float64)


def lightgbm_params(task: str, n_classes: int, n_rows: int, params: dict[str, Any] | None, seed: int,
                    n_threads: int) -> tuple[dict[str, Any], int]:
    """The LightGBM parameters and rounds a member on ``n_rows`` rows trains with (the bench's monolith too).

    The user's ``params`` over ``LGB_DEFAULTS``, the objective of the task, and the settings that make a
    member a pure function of its rows in id order (DEVELOPERS.md), which override anything the user set.
    """
    params, rounds = _rounds({**LGB_DEFAULTS, **(params or {})})
    if task != CLASSIFICATION:
        params.setdefault("objective", "regression")
    elif n_classes == 2:
        params["objective"] = "binary"
    else:
        params["objective"] = "multiclass"
        params["num_class"] = n_classes
    params.update(
        deterministic=True,
        force_row_wise=True,
        seed=seed,
        bin_construct_sample_cnt=max(200_000, n_rows),
        num_threads=n_threads,
    )
    params.pop("force_col_wise", None)
    return params, rounds


class LightGBMLearner(Learner):
    name = "lightgbm"

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None):
        import lightgbm as lgb

        task = REGRESSION if classes is None else CLASSIFICATION
        params, rounds = lightgbm_params(task, 0 if classes is None else len(classes), len(y), self.params,
                                         self.seed, n_threads)
        cats = [j for j, k in enumerate(schema.kinds) if k == CATEGORICAL]
        ds = lgb.Dataset(X, label=y, weight=weight, categorical_feature=cats, params=params, free_raw_data=True)
        booster = lgb.train(params, ds, num_boost_round=rounds)
        return LightGBMMember(classes, vocab, len(y), booster)


class XGBoostLearner(Learner):
    name = "xgboost"
    # measured: `hist` histograms summed over 2 threads differ in the last bits from 1 thread on some
    # groups (a 50-row multiclass group), which changes split gains and so the trees
    thread_invariant = False

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None):
        import xgboost as xgb

        params, rounds = _rounds(self.params)
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
        booster = xgb.train(params, dm, num_boost_round=rounds)
        return XGBoostMember(classes, vocab, len(y), booster)


LEARNERS = {"lightgbm": LightGBMLearner, "xgboost": XGBoostLearner}
MEMBERS = {"lightgbm": LightGBMMember, "xgboost": XGBoostMember, "constant": ConstantMember}


def make_learner(name: str, params: dict[str, Any] | None, seed: int, class_weight: Any = None) -> Learner:
    if name not in LEARNERS:
        raise InputError(f"learner={name!r} is not known; use one of {sorted(LEARNERS)!r}")
    if name == "xgboost":
        optional("xgboost", "learner='xgboost'")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"learner_params must be a dict of learner parameters, got {params!r}")
    return LEARNERS[name](params, seed, class_weight)


def _lightgbm_names() -> dict[str, str] | None:
    """Every LightGBM parameter name and alias -> its canonical name, from LightGBM's own table."""
    from lightgbm.basic import _ConfigAliases  # LightGBM's C API table (LGBM_DumpParamAliases)

    try:
        table = _ConfigAliases._get_all_param_aliases()
    except Exception:  # noqa: BLE001 - a LightGBM without the table: training reports what it ignores
        return None
    names = {alias: name for name, aliases in table.items() for alias in (name, *aliases)}
    names.update({alias: "num_iterations" for alias in _ROUND_ALIASES})
    return names


def _xgboost_names(params: dict[str, Any], task: str) -> tuple[set[str], list[str]]:
    """The keys of ``params`` XGBoost reports as not used, and its canonical parameter names.

    XGBoost has no table of its parameters; it validates them when it configures a booster. So one round is
    trained on four rows (milliseconds) with the objectives members of this task use, and the keys XGBoost
    says no objective used are the unknown ones.
    """
    import xgboost as xgb

    params = _rounds(params)[0]
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


def check_learner_params(name: str, params: dict[str, Any] | None, task: str) -> None:
    """Refuse ``learner_params`` keys the learner does not know (a typo would otherwise be ignored silently).

    Names are the learner's own: LightGBM's parameters and their aliases, XGBoost's as XGBoost validates them.
    """
    if not params:
        return
    if name == "lightgbm":
        table = _lightgbm_names()
        if table is None:
            return
        unknown, valid = [k for k in params if k not in table], sorted(set(table.values()))
    elif name == "xgboost":
        said, valid = _xgboost_names(params, task)
        unknown = [k for k in params if k in said]
    else:
        return
    if unknown:
        close = {k: difflib.get_close_matches(str(k), valid, n=1) for k in unknown}
        from .errors import ParameterError  # here: its scikit-learn base is not needed to score

        hints = "; ".join(f"{k!r}" + (f" (did you mean {m[0]!r}?)" if m else "") for k, m in close.items())
        raise ParameterError(
            f"learner_params has key(s) {name} does not know: {hints}. Its parameters (aliases accepted) are: "
            + ", ".join(valid)
        )


def member_from_bytes(meta: dict[str, Any], data: bytes) -> Member:
    kind = meta["learner"]
    if kind not in MEMBERS:
        raise InputError(f"unknown member kind {kind!r}")
    return MEMBERS[kind].from_bytes(meta, data)
