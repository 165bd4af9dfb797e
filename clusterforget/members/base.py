"""What a learner and a member are, and the registry of learner kinds (one module per learner registers one).

A member is a pure function of its group's rows in canonical (id) order and of the settings: it owns
its own category encodings (``vocab``) and its own class list, so no state is shared across members and
forgetting rows in one group can never change another group's member.

A learner's module (``members/lightgbm.py``, ``members/xgboost.py``) holds its ``Learner`` and ``Member``
subclasses and registers a ``LearnerKind``: everything the other layers need of it (member file extension,
parameter check, the bytes verification compares, ONNX and treelite converters, the libraries a store records).
The other layers look a learner up by name (``learner_kind``) and never name one.
"""

from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import preprocess
from .._compat import optional
from ..data import CATEGORICAL, HASH, ID, LABEL, WEIGHT, Schema, holdout_mask, id_hash
from ..errors import ExportError, InputError

CLASSIFICATION = "classification"
REGRESSION = "regression"

# the raw score (log-odds) of a member that saw one class: infinite in theory; this is where LightGBM's
# boost_from_average starts a group of one class (its average clipped to [1e-15, 1 - 1e-15]), so raw scores
# and contributions stay finite and sum as the ensemble combines them
CERTAIN_MARGIN = float(np.log((1.0 - 1e-15) / 1e-15))
IMPORTANCE_TYPES = ("split", "gain")
ROUND_ALIASES = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                  "num_rounds", "nrounds", "num_boost_round", "n_estimators", "max_iter")


# early stopping, with scikit-learn's HistGradientBoosting names and defaults: "auto" stops early in a group of
# more than this many rows (HistGradientBoosting counts the training set; here each member its own group)
AUTO_EARLY_STOPPING_ROWS = 10_000
# the names ``scoring`` accepts per task, in order: "loss" is the objective's own metric, None the estimator's
# default score (accuracy, or R², which ranks rounds as the MSE); each learner maps them to its own metric names
# (``Learner.stopping_metrics``)
CLASSIFICATION_SCORINGS = ("loss", None, "accuracy", "roc_auc", "neg_log_loss")
REGRESSION_SCORINGS = ("loss", None, "r2", "neg_mean_squared_error", "neg_root_mean_squared_error",
                       "neg_mean_absolute_error")
SCORINGS = tuple(dict.fromkeys(CLASSIFICATION_SCORINGS + REGRESSION_SCORINGS))


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping per member, as scikit-learn's HistGradientBoosting names it, and the held-out slice.

    A member that stops early holds out the rows of its group whose id hash falls in the held-out slice
    (``data.holdout_mask``, ``validation_fraction`` of the rows), trains on the others and keeps the rounds up to
    the best score on the slice (``n_iter_no_change`` rounds without improvement stop it). The slice is a function
    of each row's id only, so the member stays a pure function of its group's rows. ``hold_out``: hold the slice
    out even without stopping early (``combine="auto"`` on a key grouping scores route and average on it).
    """

    early_stopping: Any = "auto"  # "auto", True or False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 10
    scoring: str | None = "loss"
    hold_out: bool = False

    def stops(self, n_rows: int) -> bool:
        if self.early_stopping == "auto":
            return n_rows > AUTO_EARLY_STOPPING_ROWS
        return bool(self.early_stopping)

    def slice_of(self, rows: pa.Table) -> np.ndarray:
        """The held-out mask of ``rows`` (their id hash; computed from the id when the hash column is absent)."""
        hashes = rows.column(HASH).to_numpy() if HASH in rows.column_names else id_hash(rows.column(ID))
        return holdout_mask(hashes, self.validation_fraction)

    def split(self, rows: pa.Table, yi: np.ndarray, n_classes: int, w: np.ndarray | None) -> np.ndarray | None:
        """The held-out mask this member trains with, or None (it trains on all its rows): the slice must leave
        two rows to train on, every class of the group among them, and some weight on both sides."""
        if not (self.hold_out or self.stops(rows.num_rows)):
            return None
        mask = self.slice_of(rows)
        train = ~mask
        if not mask.any() or int(train.sum()) < 2:
            return None
        if n_classes and len(np.unique(yi[train])) < n_classes:
            return None
        if w is not None and not (bool(np.any(w[train] > 0)) and bool(np.any(w[mask] > 0))):
            return None
        return mask

    def metric(self, learner: "Learner", task: str, n_classes: int) -> str | None:
        """The metric ``learner`` stops on for a member of this task (None: the objective's own)."""
        if self.scoring == "loss":
            return None
        column = 2 if task != CLASSIFICATION else (0 if n_classes == 2 else 1)
        names = learner.stopping_metrics.get(self.scoring)
        if names is None or names[column] is None:
            raise InputError(f"learner {learner.name!r} cannot stop early on scoring={self.scoring!r} for a "
                             f"{task} member; use scoring='loss' or one of "
                             f"{[k for k, v in learner.stopping_metrics.items() if v[column] is not None]!r}")
        return names[column]

    def to_dict(self) -> dict[str, Any]:
        return {"early_stopping": self.early_stopping, "validation_fraction": self.validation_fraction,
                "n_iter_no_change": self.n_iter_no_change, "scoring": self.scoring, "hold_out": self.hold_out}

    @classmethod
    def from_dict(cls, d: Any) -> "EarlyStopping":
        """The settings ``to_dict`` wrote (a store's), each checked: ``InputError`` quoting a bad one."""
        fields = ("early_stopping", "validation_fraction", "n_iter_no_change", "scoring", "hold_out")
        if not isinstance(d, dict) or set(d) != set(fields):
            raise InputError(f"early-stopping settings must be an object of {list(fields)}, got {str(d)[:120]!r}; "
                             "save the model again")
        fraction, rounds = d["validation_fraction"], d["n_iter_no_change"]
        checks = {"early_stopping": d["early_stopping"] in ("auto", True, False) and type(d["early_stopping"]) in (
                      str, bool),
                  "validation_fraction": type(fraction) in (int, float) and 0 < fraction < 1,
                  "n_iter_no_change": type(rounds) is int and rounds >= 1,
                  "scoring": (d["scoring"] is None or isinstance(d["scoring"], str)) and d["scoring"] in SCORINGS,
                  "hold_out": type(d["hold_out"]) is bool}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"early-stopping setting {bad[0]}={str(d[bad[0]])[:60]!r} is not valid; save the model "
                             "again")
        return cls(d["early_stopping"], float(fraction), rounds, d["scoring"], d["hold_out"])


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

    # whether it trained without its group's held-out slice (``EarlyStopping.split``): then no member saw those rows
    held_out: bool = False

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

    @property
    def rounds(self) -> int:
        """Boosting rounds in the model (early stopping's choice when it stopped early; 0 for a constant)."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        out = {
            "learner": self.learner,
            "classes": None if self.classes is None else self.classes.tolist(),
            "vocab": self.vocab,
            "n_rows": self.n_rows,
        }
        if self.held_out:
            out["held_out"] = True
        return out

    def restore(self, meta: dict[str, Any]) -> "Member":
        """The member with what its meta adds to the model file (``held_out``, when true)."""
        self.held_out = meta.get("held_out") is True
        return self


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
        return [(shap_tree([(-1, -1, -1, -1, 0.0, float(v), 1.0)]), k) for k, v in enumerate(self._margins())]

    def model_bytes(self) -> bytes:
        return json.dumps({"value": self.value.tolist()}).encode()

    @property
    def rounds(self) -> int:
        return 0

    @classmethod
    def from_bytes(cls, meta, data: bytes) -> "ConstantMember":
        return cls(classes_of(meta), meta["vocab"], meta["n_rows"], np.asarray(json.loads(data)["value"]))


def classes_of(meta) -> np.ndarray | None:
    return None if meta["classes"] is None else np.asarray(meta["classes"])


def split_rounds(params: dict[str, Any], default: int = 100) -> tuple[dict[str, Any], int]:
    """(params without the number of boosting rounds under any of its aliases, that number)."""
    params = dict(params)
    rounds = default
    for alias in ROUND_ALIASES:
        if alias in params:
            rounds = int(params.pop(alias))
    return params, rounds


class BoosterMember(Member):
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


def shap_tree(nodes: list[tuple]) -> dict[str, np.ndarray]:
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


class Learner:
    """Trains members of one kind. ``params`` are the user's; determinism settings are enforced on top."""

    name = ""
    # ``scoring`` (``SCORINGS``) -> the metric this learner stops early on for (binary, multiclass, regression)
    # members ("loss", the objective's own metric, needs no entry); a learner that never stops early leaves it empty
    stopping_metrics: dict[Any, tuple[str | None, str | None, str | None]] = {}
    # whether a model is the same whatever the number of threads that trained it; when not, every member
    # trains on one thread (parallelism then comes from training several members at once)
    thread_invariant = True

    def __init__(self, params: dict[str, Any] | None, seed: int, class_weight: Any = None, preprocessor: Any = None,
                 stopping: EarlyStopping | None = None):
        self.params = dict(params or {})
        self.seed = seed
        # None, "balanced" or {label: weight}; computed on each member's own rows (``class_weights``)
        self.class_weight = class_weight
        # an unfitted transformer (``preprocess``): each member fits its own clone on its group's rows
        self.preprocessor = preprocess.check(preprocessor)
        self.stopping = stopping if stopping is not None else EarlyStopping(early_stopping=False)

    def _features(self, rows: pa.Table, schema: Schema, vocab: dict, y: np.ndarray, task: str
                  ) -> tuple[np.ndarray, Schema, "preprocess.Fitted | None"]:
        """The matrix a member trains on, its schema, and the group's fitted preprocessor (if the model has one)."""
        if self.preprocessor is None:
            return encode(rows, schema, vocab), schema, None
        fitted, M = preprocess.fit(self.preprocessor, rows, schema, y, task != CLASSIFICATION, self.seed)
        return M, fitted.schema(), fitted

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
            M, inner, fitted = self._features(rows, schema, vocab, y, task)
            return _behind(fitted, self._fit_split(rows, M, yi.astype(np.float64), classes, {} if fitted else vocab,
                                                   inner, n_threads, w, len(classes)))
        y = y.astype(np.float64)
        # rows that all weigh 0 teach a learner nothing (XGBoost refuses them, LightGBM fits noise): the group
        # gets a constant member, and its ensemble weight (the sum of its sample weights) is 0, so it never scores
        if weightless:
            return ConstantMember(None, vocab, n, np.array([0.0]))
        if n < 2 or np.all(y == y[0]):
            return ConstantMember(None, vocab, n, np.array([y.mean()]))
        M, inner, fitted = self._features(rows, schema, vocab, y, task)
        return _behind(fitted, self._fit_split(rows, M, y, None, {} if fitted else vocab, inner, n_threads, w, 0))

    def _fit_split(self, rows, X, y, classes, vocab, schema, n_threads, w, n_classes) -> Member:
        """Train on the group's rows, or on those outside its held-out slice (stopping early on the slice)."""
        mask = self.stopping.split(rows, y.astype(np.int64) if n_classes else y, n_classes, w)
        if mask is None:
            return self._fit(X, y, classes, vocab, schema, n_threads, w)
        keep = ~mask
        valid = (X[mask], y[mask], None if w is None else w[mask]) if self.stopping.stops(len(y)) else None
        member = self._fit(X[keep], y[keep], classes, vocab, schema, n_threads, None if w is None else w[keep],
                           valid=valid, n_rows=len(y))
        member.held_out = True
        return member

    def _stop_on(self, params: dict[str, Any], name: str, classes) -> None:
        """Set ``params[name]`` to the metric ``scoring`` stops on (left to the objective's own for "loss")."""
        task = REGRESSION if classes is None else CLASSIFICATION
        metric = self.stopping.metric(self, task, 0 if classes is None else len(classes))
        if metric is not None:
            params[name] = metric

    def _fit(self, X, y, classes, vocab, schema, n_threads, weight=None, valid=None, n_rows=None) -> Member:
        """A member trained on ``X, y`` (and ``weight``); ``valid``: the held-out (X, y, weight) to stop early on,
        keeping the rounds up to its best score. ``n_rows``: the group's rows (those it was given, by default)."""
        raise NotImplementedError


def _behind(fitted: "preprocess.Fitted | None", member: Member) -> Member:
    return member if fitted is None else PreprocessedMember(member, fitted)


class PreprocessedMember(Member):
    """A member behind its group's own fitted preprocessor: rows are transformed by it, then scored by ``inner``.

    Its native file is ``inner``'s; the preprocessor's document (``preprocess.to_document``) is part of its meta,
    so stores, bundles and backends carry both without a new file kind. Explanations are in the transformer's
    output features, not the model's columns: contributions and importances are refused.
    """

    def __init__(self, inner: Member, fitted: "preprocess.Fitted"):
        super().__init__(inner.classes, {}, inner.n_rows)
        self.inner = inner
        self.preprocessor = fitted
        self.learner = inner.learner
        self.vocab_key = "preprocessor:" + fitted.digest  # members with equal fitted transformers share a matrix

    @property
    def held_out(self) -> bool:  # the inner member's (its meta is this member's)
        return self.inner.held_out

    @property
    def rounds(self) -> int:
        return self.inner.rounds

    def transform(self, X: pa.Table, schema: Schema) -> np.ndarray:
        return self.preprocessor.transform(X, schema)

    def predict(self, X, schema, n_threads=1):
        return self.predict_encoded(self.transform(X, schema), schema, n_threads)

    def predict_encoded(self, M, schema, n_threads=1):
        return self.inner.predict_encoded(M, self.preprocessor.schema(), n_threads)

    def margin_encoded(self, M, schema, n_threads=1):
        return self.inner.margin_encoded(M, self.preprocessor.schema(), n_threads)

    def _refuse(self, what: str) -> Any:
        raise ExportError(f"{what} of a model with a preprocessor would be in the preprocessor's output features "
                          f"({self.preprocessor.n_outputs}), not the model's columns; they are not available")

    def contrib_encoded(self, M, schema, n_threads=1):
        return self._refuse("contributions")

    def feature_importance(self, importance_type, n_features):
        return self._refuse("feature importances")

    def shap_trees(self, schema):
        return self._refuse("shap trees")

    def model_bytes(self) -> bytes:
        return self.inner.model_bytes()

    def scoring_bytes(self) -> bytes:
        return self.inner.scoring_bytes()

    def meta(self) -> dict[str, Any]:
        return {**self.inner.meta(), "preprocessor": self.preprocessor.document}


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


@dataclass(frozen=True)
class LearnerKind:
    """One learner as the rest of the package sees it; its module makes one and ``register`` s it.

    Only ``name`` and ``member`` are required: a kind without a converter is still fitted, forgotten, stored,
    loaded, verified and exported as a bundle; the ONNX and compiled exports refuse its members by name.
    """

    name: str  # ``learner=`` and every member's ``meta["learner"]``
    member: type[Member]  # ``member.from_bytes(meta, data)`` reads a member file
    # (params, seed, class_weight) -> Learner; None: members of this kind are made by other learners only
    learner: Callable[..., Learner] | None = None
    ext: str = ".bin"  # of member files in a store
    requires: str | None = None  # an optional library ``learner=name`` needs (``_compat.optional``)
    # the clusterforget extra that installs ``requires``: a built-in learner's (pyproject.toml lists it,
    # tests/test_architecture.py checks); None for a plugin, whose install hint names the library's distribution
    extra: str | None = None
    # library -> pip distributions: their versions are recorded in a store (a retrain is byte-identical only
    # under the same versions); the first is the one to install
    libraries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (params, task) -> (keys the learner does not know, its parameter names), or None: cannot tell
    check_params: Callable[[dict[str, Any], str], tuple[list[str], list[str]] | None] | None = None
    # member file bytes -> the bytes verification compares (what changes no prediction taken out)
    canonical_bytes: Callable[[bytes], bytes] | None = None
    float32: bool = False  # compares float32 features and sums float32 leaves (exports, shap's tree dict)
    # (trees, member, targets, feature names, what) -> objective: adds the member's trees to an ONNX
    # TreeEnsemble builder (``export.onnx``); None: no ONNX form
    onnx: Callable[..., str] | None = None
    treelite: Callable[[Member], Any] | None = None  # member -> treelite model (format='compiled')
    # the importable module that registers this kind (``register_module``; default: the module defining
    # ``member``): a process that did not import it (the isolating child, ``export/_member_check.py``) imports it
    # by this path to parse the kind's members
    module: str | None = None

    @property
    def module_path(self) -> str:
        return self.module or self.member.__module__

    @property
    def install(self) -> str:
        """The pip line that installs ``requires``: the kind's extra, or its library's first distribution."""
        if self.extra is not None:
            return f"pip install 'clusterforget[{self.extra}]'"
        return f"pip install {(*self.libraries.get(self.requires or '', ()), self.requires)[0]}"


def treelite_frontend() -> Any:
    """``treelite.frontend``, for a kind's ``treelite`` converter (the compiled export checked it is installed)."""
    import treelite

    return treelite.frontend


# the learner ``learner=`` (estimators, ``plan``) and ``--learner`` default to: the one the core installs
DEFAULT_LEARNER = "lightgbm"
KINDS: dict[str, LearnerKind] = {}
LEARNERS: dict[str, Callable[..., Learner]] = {}  # learner= name -> factory (what make_learner calls)
MEMBERS: dict[str, type[Member]] = {}  # meta["learner"] -> member class


def register(kind: LearnerKind) -> LearnerKind:
    """Make a learner known by its name to every layer (a name registered twice is replaced)."""
    if not isinstance(kind.name, str) or not kind.name.isidentifier() or kind.name == "compiled":
        raise InputError(f"a learner kind's name must be an identifier other than 'compiled', got {kind.name!r}")
    if not (kind.ext.startswith(".") and kind.ext[1:].isalnum() and kind.ext[1:].islower()):
        raise InputError(f"learner kind {kind.name!r}: ext must be like '.txt', got {kind.ext!r}")
    if kind.requires is not None and kind.requires not in kind.libraries:
        raise InputError(f"learner kind {kind.name!r}: requires={kind.requires!r} must be one of its libraries "
                         f"{sorted(kind.libraries)!r} (a store records its version; the install hint names it)")
    KINDS[kind.name] = kind
    MEMBERS[kind.name] = kind.member
    if kind.learner is not None:
        LEARNERS[kind.name] = kind.learner
    else:
        LEARNERS.pop(kind.name, None)
    return kind


def register_module(module: str) -> list[str]:
    """Import ``module`` (a dotted path importable in a fresh interpreter: installed, or on ``PYTHONPATH``), which
    registers learner kinds when imported, and record it as where they come from, so the isolating child
    imports it by that path to parse their members; returns the names of its kinds. A learner from outside
    ``clusterforget.members`` (a plugin) registers this way to be served with ``isolate=True``."""
    if not isinstance(module, str) or not module or not all(p.isidentifier() for p in module.split(".")):
        raise InputError(f"a learner module must be a dotted module path such as 'my_package.learner', got "
                         f"{module!r}")
    before = dict(KINDS)
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"the learner module {module!r} cannot be imported ({exc}); install its package or put "
                         "its folder on PYTHONPATH") from exc
    mine = [k for name, k in KINDS.items() if before.get(name) is not k or k.module_path == module]
    if not mine:
        raise InputError(f"importing {module!r} registered no learner kind; its import must call "
                         "clusterforget.members.register(LearnerKind(...))")
    for kind in mine:
        register(replace(kind, module=module))
    return [k.name for k in mine]


def unregister(name: str) -> None:
    """Forget a registered kind (a test's toy learner)."""
    KINDS.pop(name, None)
    MEMBERS.pop(name, None)
    LEARNERS.pop(name, None)


def learner_kind(name: Any) -> LearnerKind:
    """The registered kind of this name (a member's ``learner``); raises ``InputError`` if there is none."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise InputError(f"unknown member kind {name!r}; known: {sorted(KINDS)!r}")
    return kind


def learner_names() -> list[str]:
    """The names ``learner=`` accepts, in registration order."""
    return list(LEARNERS)


def library_names() -> dict[str, tuple[str, ...]]:
    """Every registered learner's libraries -> their pip distributions."""
    return {lib: dists for kind in KINDS.values() for lib, dists in kind.libraries.items()}


def distributions(learners: Any) -> dict[str, str]:
    """The libraries of these learners (names of registered kinds) -> the pip distribution providing each here:
    the first of the kind's distributions that is installed, else the first (an environment to reproduce)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in learners:
        for lib, dists in learner_kind(name).libraries.items():
            installed = [d for d in dists if _installed(metadata, d)]
            out.setdefault(lib, (installed or list(dists) or [lib])[0])
    return out


def _installed(metadata: Any, dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


register(LearnerKind(name="constant", member=ConstantMember, ext=".json"))


def make_learner(name: str, params: dict[str, Any] | None, seed: int, class_weight: Any = None,
                 preprocessor: Any = None, stopping: EarlyStopping | None = None) -> Learner:
    if name not in LEARNERS:
        raise InputError(f"learner={name!r} is not known; use one of {sorted(LEARNERS)!r}")
    kind = KINDS.get(name)
    if kind is not None and kind.requires is not None:
        optional(kind.requires, f"learner={name!r}", install=kind.install)
    if params is not None and not isinstance(params, dict):
        raise InputError(f"learner_params must be a dict of learner parameters, got {params!r}")
    return LEARNERS[name](params, seed, class_weight, preprocessor, stopping)


def check_learner_params(name: str, params: dict[str, Any] | None, task: str) -> None:
    """Refuse ``learner_params`` keys the learner does not know (a typo would otherwise be ignored silently).

    Names are the learner's own (its kind's ``check_params``): LightGBM's parameters and their aliases,
    XGBoost's as XGBoost validates them.
    """
    kind = KINDS.get(name)
    if not params or kind is None or kind.check_params is None:
        return
    found = kind.check_params(params, task)
    if found is None:
        return
    unknown, valid = found
    if unknown:
        close = {k: difflib.get_close_matches(str(k), valid, n=1) for k in unknown}
        from ..errors import ParameterError  # here: its scikit-learn base is not needed to score

        hints = "; ".join(f"{k!r}" + (f" (did you mean {m[0]!r}?)" if m else "") for k, m in close.items())
        raise ParameterError(
            f"learner_params has key(s) {name} does not know: {hints}. Its parameters (aliases accepted) are: "
            + ", ".join(valid)
        )


def member_from_bytes(meta: dict[str, Any], data: bytes, schema: Schema | None = None) -> Member:
    """A member from its meta and native file; one with a preprocessor gets it back from its checked document
    (against ``schema``, the model's, when given)."""
    kind = meta["learner"]
    if not isinstance(kind, str) or kind not in MEMBERS:
        raise InputError(f"unknown member kind {kind!r}")
    requires = KINDS[kind].requires if kind in KINDS else None
    if requires is not None:
        optional(requires, f"a {kind} member", install=KINDS[kind].install)
    if "preprocessor" in meta:
        fitted = preprocess.fitted_from_document(meta["preprocessor"], schema)
        inner = {k: v for k, v in meta.items() if k != "preprocessor"}
        return PreprocessedMember(MEMBERS[kind].from_bytes(inner, data).restore(inner), fitted)
    return MEMBERS[kind].from_bytes(meta, data).restore(meta)


def canonical_bytes(member: Member) -> bytes:
    """A member's fitted state as verification compares it: its kind's ``canonical_bytes`` of ``model_bytes``,
    after the sha256 of its preprocessor's document when it has one (a transformer fitted on other rows can leave
    the model file and every output unchanged: an imputer's statistics on rows without missing values)."""
    data = member.model_bytes()
    kind = KINDS.get(member.learner)
    out = data if kind is None or kind.canonical_bytes is None else kind.canonical_bytes(data)
    pre = getattr(member, "preprocessor", None)
    return out if pre is None else b"preprocessor:" + pre.digest.encode("ascii") + b"\n" + out
