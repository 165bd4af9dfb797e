"""Learner adapters: train one member on one group's rows, predict, and serialize to native model files.

A member is a pure function of its group's rows in canonical (id) order and of the settings: it owns
its own category encodings (``vocab``) and its own class list, so no state is shared across members and
forgetting rows in one group can never change another group's member.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._compat import optional
from .data import CATEGORICAL, LABEL, Schema
from .errors import InputError, ParameterError

CLASSIFICATION = "classification"
REGRESSION = "regression"

LGB_DEFAULTS = {"num_iterations": 100, "verbose": -1}
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

    def model_bytes(self) -> bytes:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {
            "learner": self.learner,
            "classes": None if self.classes is None else self.classes.tolist(),
            "vocab": self.vocab,
            "n_rows": self.n_rows,
        }


class ConstantMember(Member):
    """A member for a group that cannot support a tree model: one class, or fewer than two rows."""

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


class LightGBMMember(_BoosterMember):
    learner = "lightgbm"

    def _raw(self, M, schema, n_threads):
        return self.booster.predict(M, num_threads=n_threads)

    def model_bytes(self) -> bytes:
        return self.booster.model_to_string().encode()

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "LightGBMMember":
        import lightgbm as lgb

        return cls(_classes(meta), meta["vocab"], meta["n_rows"], lgb.Booster(model_str=data.decode()))


class XGBoostMember(_BoosterMember):
    learner = "xgboost"

    def _raw(self, M, schema, n_threads):
        import xgboost as xgb

        dm = xgb.DMatrix(M, feature_types=_xgb_types(schema), enable_categorical=True, nthread=n_threads)
        return self.booster.predict(dm)

    def model_bytes(self) -> bytes:
        return bytes(self.booster.save_raw("json"))

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "XGBoostMember":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return cls(_classes(meta), meta["vocab"], meta["n_rows"], booster)


def _xgb_types(schema: Schema) -> list[str]:
    return ["c" if k == CATEGORICAL else "q" for k in schema.kinds]


class Learner:
    """Trains members of one kind. ``params`` are the user's; determinism settings are enforced on top."""

    name = ""
    # whether a model is the same whatever the number of threads that trained it; when not, every member
    # trains on one thread (parallelism then comes from training several members at once)
    thread_invariant = True

    def __init__(self, params: dict[str, Any] | None, seed: int):
        self.params = dict(params or {})
        self.seed = seed

    def train(self, rows: pa.Table, schema: Schema, task: str, n_threads: int) -> Member:
        y = rows.column(LABEL).to_numpy(zero_copy_only=False)
        vocab = fit_vocab(rows, schema)
        n = rows.num_rows
        if task == CLASSIFICATION:
            classes, yi = np.unique(y, return_inverse=True)
            if len(classes) == 1 or n < 2:
                return ConstantMember(classes, vocab, n, np.ones(len(classes)))
            return self._fit(encode(rows, schema, vocab), yi.astype(np.float64), classes, vocab, schema, n_threads)
        y = y.astype(np.float64)
        if n < 2 or np.all(y == y[0]):
            return ConstantMember(None, vocab, n, np.array([y.mean()]))
        return self._fit(encode(rows, schema, vocab), y, None, vocab, schema, n_threads)

    def _fit(self, X, y, classes, vocab, schema, n_threads) -> Member:
        raise NotImplementedError


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

    def _fit(self, X, y, classes, vocab, schema, n_threads):
        import lightgbm as lgb

        task = REGRESSION if classes is None else CLASSIFICATION
        params, rounds = lightgbm_params(task, 0 if classes is None else len(classes), len(y), self.params,
                                         self.seed, n_threads)
        cats = [j for j, k in enumerate(schema.kinds) if k == CATEGORICAL]
        ds = lgb.Dataset(X, label=y, categorical_feature=cats, params=params, free_raw_data=True)
        booster = lgb.train(params, ds, num_boost_round=rounds)
        return LightGBMMember(classes, vocab, len(y), booster)


class XGBoostLearner(Learner):
    name = "xgboost"
    # measured: `hist` histograms summed over 2 threads differ in the last bits from 1 thread on some
    # groups (a 50-row multiclass group), which changes split gains and so the trees
    thread_invariant = False

    def _fit(self, X, y, classes, vocab, schema, n_threads):
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
        dm = xgb.DMatrix(X, label=y, feature_types=_xgb_types(schema), enable_categorical=True, nthread=n_threads)
        booster = xgb.train(params, dm, num_boost_round=rounds)
        return XGBoostMember(classes, vocab, len(y), booster)


LEARNERS = {"lightgbm": LightGBMLearner, "xgboost": XGBoostLearner}
MEMBERS = {"lightgbm": LightGBMMember, "xgboost": XGBoostMember, "constant": ConstantMember}


def make_learner(name: str, params: dict[str, Any] | None, seed: int) -> Learner:
    if name not in LEARNERS:
        raise InputError(f"learner={name!r} is not known; use one of {sorted(LEARNERS)!r}")
    if name == "xgboost":
        optional("xgboost", "learner='xgboost'")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"learner_params must be a dict of learner parameters, got {params!r}")
    return LEARNERS[name](params, seed)


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


def local_to_global(classes_local: np.ndarray, classes: Sequence) -> np.ndarray:
    return np.searchsorted(np.asarray(classes), classes_local)
