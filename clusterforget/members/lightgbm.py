"""The LightGBM learner: training, its members (native text model files), and what the rest needs of it.

Everything the package knows about LightGBM is here and registered as one ``LearnerKind``: the member file
(``.txt``, the model text), how ``learner_params`` keys are checked, the bytes verification compares (without the
``num_threads`` line, which changes no tree), the ONNX trees, the treelite model for compiled exports, the
libraries whose versions a store records. The ``lightgbm`` package (which imports scikit-learn) is imported
only inside functions: scoring a loaded model goes through LightGBM's C library (``NativeLightGBM``).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..data import CATEGORICAL
from ..errors import ExportError, InputError
from .base import (
    CLASSIFICATION,
    REGRESSION,
    ROUND_ALIASES,
    BoosterMember,
    Learner,
    LearnerKind,
    classes_of,
    register,
    shap_tree,
    split_rounds,
    treelite_frontend,
)

LGB_DEFAULTS = {"num_iterations": 100, "verbose": -1}
# objectives whose margin is the prediction (no link): the ONNX export scores them exactly
IDENTITY_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}


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
    def of_booster(cls, booster: Any) -> "NativeLightGBM | None":
        """The same predictions as ``booster.predict(M, num_threads=...)`` without that call's Python work (a
        fitted member scores its rows through this on every predict); None when they would not be the same
        call: a booster with a best iteration (``predict`` then stops there) or one from another library."""
        if getattr(booster, "best_iteration", 0) > 0 or not hasattr(booster, "_handle"):
            return None
        try:
            cls.library()
        except (ImportError, OSError):
            return None
        if not cls._one_library():
            return None  # a handle is only valid in the copy of the library that made it
        return cls(None, booster)

    _single: bool | None = None

    @classmethod
    def _one_library(cls) -> bool:
        """Whether this process has loaded one LightGBM library file only (the ``lightgbm`` package's and ours
        are then the same); unknown (not Linux) counts as no."""
        if cls._single is None:
            try:
                maps = Path("/proc/self/maps").read_text()
            except OSError:
                cls._single = False
            else:
                files = {Path(line.split(None, 5)[-1]).resolve() for line in maps.splitlines()
                         if "lib_lightgbm" in line and len(line.split(None, 5)) == 6}
                cls._single = len(files) == 1
        return cls._single

    @classmethod
    def library(cls) -> Any:
        with cls._lock:
            if cls._lib is None:
                import ctypes
                import importlib.util

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

    def __init__(self, model: str | None, booster: Any = None):
        import ctypes

        self._ctypes = ctypes
        self._model = model
        self._booster = booster  # a fitted ``lightgbm.Booster`` whose handle this borrows (it keeps it alive)
        lib = self.library()
        if booster is None:
            handle, iterations = ctypes.c_void_p(), ctypes.c_int(0)
            self._check(lib.LGBM_BoosterLoadModelFromString(model.encode(), ctypes.byref(iterations),
                                                            ctypes.byref(handle)))
        else:
            handle = booster._handle
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
        return (NativeLightGBM, (self._model if self._booster is None else self._booster.model_to_string(),))

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and self._lib is not None:
            for fast in getattr(self, "_fast", {}).values():
                self._lib.LGBM_FastConfigFree(fast)
            if getattr(self, "_booster", None) is None:  # a borrowed handle is its booster's to free
                self._lib.LGBM_BoosterFree(handle)


class LightGBMMember(BoosterMember):
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
        native = self._native
        if native is None and "booster" in self.__dict__:  # fitted here: its booster's handle, borrowed
            native = self.__dict__.get("_borrowed", False)
            if native is False:
                native = self.__dict__["_borrowed"] = NativeLightGBM.of_booster(self.booster)
        if native is not None:
            return native.predict(M, n_threads)
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
            out.append((shap_tree(nodes), int(t["tree_index"]) % per_iteration))
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

    @property
    def rounds(self) -> int:
        if self.__dict__.get("booster") is not None:
            return int(self.booster.current_iteration())
        per = re.search(r"^num_tree_per_iteration=(\d+)$", self._model, re.M)
        return self._model.count("\nTree=") // max(1, int(per.group(1)) if per else 1)

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "LightGBMMember":
        return cls(classes_of(meta), meta["vocab"], meta["n_rows"], model=data.decode())


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


def lightgbm_params(task: str, n_classes: int, n_rows: int, params: dict[str, Any] | None, seed: int,
                    n_threads: int) -> tuple[dict[str, Any], int]:
    """The LightGBM parameters and rounds a member on ``n_rows`` rows trains with (the bench's monolith too).

    The user's ``params`` over ``LGB_DEFAULTS``, the objective of the task, and the settings that make a
    member a pure function of its rows in id order (DEVELOPERS.md), which override anything the user set.
    """
    params, rounds = split_rounds({**LGB_DEFAULTS, **(params or {})})
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
    stopping_metrics = {
        None: ("binary_error", "multi_error", "l2"),
        "accuracy": ("binary_error", "multi_error", None),
        "roc_auc": ("auc", "auc_mu", None),
        "neg_log_loss": ("binary_logloss", "multi_logloss", None),
        "r2": (None, None, "l2"),
        "neg_mean_squared_error": (None, None, "l2"),
        "neg_root_mean_squared_error": (None, None, "rmse"),
        "neg_mean_absolute_error": (None, None, "l1"),
    }

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None, valid=None, n_rows=None):
        import lightgbm as lgb

        task = REGRESSION if classes is None else CLASSIFICATION
        params, rounds = lightgbm_params(task, 0 if classes is None else len(classes), len(y), self.params,
                                         self.seed, n_threads)
        cats = [j for j, k in enumerate(schema.kinds) if k == CATEGORICAL]
        ds = lgb.Dataset(X, label=y, weight=weight, categorical_feature=cats, params=params, free_raw_data=True)
        if valid is None:
            return LightGBMMember(classes, vocab, n_rows or len(y), lgb.train(params, ds, num_boost_round=rounds))
        self._stop_on(params, "metric", classes)
        dv = lgb.Dataset(valid[0], label=valid[1], weight=valid[2], categorical_feature=cats, reference=ds)
        booster = lgb.train(params, ds, num_boost_round=rounds, valid_sets=[dv], callbacks=[
            lgb.early_stopping(self.stopping.n_iter_no_change, first_metric_only=True, verbose=False)])
        # the model text of the chosen rounds only: what is kept, stored and exported is what scores
        text = booster.model_to_string(num_iteration=booster.best_iteration)
        return LightGBMMember(classes, vocab, n_rows or len(y), model=text)


def _lightgbm_names() -> dict[str, str] | None:
    """Every LightGBM parameter name and alias -> its canonical name, from LightGBM's own table."""
    from lightgbm.basic import _ConfigAliases  # LightGBM's C API table (LGBM_DumpParamAliases)

    try:
        table = _ConfigAliases._get_all_param_aliases()
    except Exception:  # noqa: BLE001 - a LightGBM without the table: training reports what it ignores
        return None
    names = {alias: name for name, aliases in table.items() for alias in (name, *aliases)}
    names.update({alias: "num_iterations" for alias in ROUND_ALIASES})
    return names


def check_params(params: dict[str, Any], task: str) -> tuple[list[str], list[str]] | None:
    """(keys LightGBM does not know, its parameter names), from LightGBM's table of names and aliases."""
    table = _lightgbm_names()
    if table is None:
        return None
    return [k for k in params if k not in table], sorted(set(table.values()))


def canonical_bytes(data: bytes) -> bytes:
    """The model text without the thread count LightGBM writes in it (it changes no tree)."""
    return b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"[num_threads:"))


def _lightgbm_text(member: "LightGBMMember") -> tuple[dict[str, str], list[dict[str, str]]]:
    """Header and trees of a LightGBM model file. The text, not ``dump_model``: its JSON prints thresholds
    with 15-16 digits, which do not round-trip (measured), the text prints 17."""
    text = member.booster.model_to_string()
    blocks = text.split("\n\n")
    header = dict(line.split("=", 1) for line in blocks[0].splitlines() if "=" in line)
    header["average_output"] = str("average_output" in blocks[0].splitlines())
    trees = []
    for block in blocks[1:]:
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("Tree="):
            trees.append(dict(line.split("=", 1) for line in lines[1:] if "=" in line))
    return header, trees


def onnx_trees(trees: Any, member: "LightGBMMember", targets: list[int], names: list[str],
                  what: str) -> str:
    header, model_trees = _lightgbm_text(member)
    objective = header.get("objective", "").split(" ")[0]
    if header["average_output"] == "True" or not (objective in IDENTITY_OBJECTIVES | {"binary", "multiclass"}):
        raise ExportError(f"{what}: LightGBM objective {header.get('objective')!r} (or random-forest averaging) has "
                          "no exact ONNX form here; export format='bundle' instead")
    if objective == "binary" and "sigmoid:1" not in header["objective"].split(" "):
        raise ExportError(f"{what}: LightGBM objective {header['objective']!r} uses a sigmoid scale other than 1; "
                          "export format='bundle' instead")
    per_iter = int(header["num_tree_per_iteration"])

    for i, tree in enumerate(model_trees):
        target = targets[i % per_iter]
        leaf_value = [float(v) for v in tree["leaf_value"].split()]
        if int(tree["num_leaves"]) == 1:
            trees.constant_tree(target, leaf_value[0])
            continue
        if int(tree.get("is_linear", "0")):
            raise ExportError(f"{what}: linear trees (linear_tree=True) have no ONNX form; export format='bundle'")
        feature = [int(v) for v in tree["split_feature"].split()]
        threshold = [float(v) for v in tree["threshold"].split()]
        dtype = [int(v) for v in tree["decision_type"].split()]
        left = [int(v) for v in tree["left_child"].split()]
        right = [int(v) for v in tree["right_child"].split()]
        bounds = [int(v) for v in tree.get("cat_boundaries", "").split()]
        words = [int(v) for v in tree.get("cat_threshold", "").split()]

        def walk(child: int) -> tuple[bool, int]:
            if child < 0:
                return True, trees.leaf(target, leaf_value[~child])
            f, col = feature[child], names[feature[child]]
            missing = (dtype[child] >> 2) & 3  # 0 none, 1 zero, 2 NaN
            if missing == 1:
                raise ExportError(f"{what}: a split treats zero as missing (zero_as_missing), which one ONNX node "
                                  "cannot express; train without it or export format='bundle'")
            if dtype[child] & 1:  # categorical: the bitset's categories go left
                idx = int(threshold[child])
                bits = words[bounds[idx]:bounds[idx + 1]]
                local = [w * 32 + b for w, word in enumerate(bits) for b in range(32) if word >> b & 1]
                left_set = trees.global_codes(col, member.vocab[col], local)
                # NaN goes right whatever the missing type (LightGBM 4), and so does a category the member
                # never saw (it encodes it as NaN): as a global code, it is not in the set either
                n = trees.node(f, 0.0, trees.MEMBER, False, sorted(left_set))
            else:
                t = threshold[child]
                # missing none: LightGBM reads NaN as 0.0; NaN: NaN takes the default branch
                nan_left = bool(dtype[child] & 2) if missing == 2 else (0.0 <= t)
                n = trees.node(f, t, trees.LEQ, nan_left)
            trees.link(n, walk(left[child]), walk(right[child]))
            return False, n

        trees.add_root(target, walk(0))
    return objective


register(LearnerKind(
    name="lightgbm", member=LightGBMMember, learner=LightGBMLearner, ext=".txt",
    libraries={"lightgbm": ("lightgbm",)}, check_params=check_params, canonical_bytes=canonical_bytes,
    onnx=onnx_trees, treelite=lambda member: treelite_frontend().from_lightgbm(member.booster),
))
