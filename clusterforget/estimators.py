"""scikit-learn estimators over the grouped ensemble: ``ForgetClassifier`` and ``ForgetRegressor``.

The estimators validate input, convert it to the canonical layout and call the ensemble; they hold no
fitted state of their own besides ``ensemble_`` (and scikit-learn's ``n_features_in_`` /
``feature_names_in_``, derived from it in ``attach_ensemble``). Where members train is the executor registered
for the ``backend`` parameter (``executors.BACKENDS``; ``clusterforget.backends`` registers ``"dask"``).

Other layers reach a model's parts through public functions (``ensemble_of``, ``store_of``, ``bind_store``,
``attach_ensemble``, ``new_ensemble``), never its private names.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, StrOptions

from .data import (ID, RemoteInput, as_ids, check_unique, conform, id_type_matches, infer_schema, labels_array,
                   weights_array)
from . import explain, preprocess
from .ensemble import GroupedEnsemble, Outcome
from .errors import (DuplicateIdError, InputError, NotFittedError, ParameterError, PipelineStateError, RowsLostError,
                     SchemaError, ScoringOnlyError, TombstoneError, quoted)
from .executors import BACKENDS, Executor, RowHolder, make_executor, resolve_threads
from .grouping import Grouping, grouping_from_dict, resolve_grouping
from .members import (CLASSIFICATION, CLASSIFICATION_SCORINGS, DEFAULT_LEARNER, REGRESSION, REGRESSION_SCORINGS,
                      EarlyStopping, check_learner_params, learner_names, make_learner)
from .report import Report
from .rules import MODES, CompiledRule, parse
from .scoring import ScoringSpec, score

_RETRAIN = ("now", "deferred")

# Methods whose work lives in a layer above the estimators (``save`` in the store, ``export`` in export/):
# that layer plugs its function in here when it is imported (the package imports it), so this module never
# imports an upper layer. ``_layer("save")(self, path)`` calls it.
log = logging.getLogger("clusterforget.changes")  # one line per change; the package adds only a NullHandler
_LAYER_HOOKS: dict[str, Any] = {}


def register_hook(name: str, function: Any) -> None:
    _LAYER_HOOKS[name] = function


# the layers above the estimators that plug into them (hooks here; ``backends`` into ``executors.BACKENDS``),
# imported by name: this module never imports an upper layer, and scoring an export never imports this module
LAYERS = ("backends", "store.codec", "verify", "export")
_LAYERS_LOCK = threading.RLock()
_layers_loaded = False


def load_layers() -> None:
    """Import every layer that plugs into the estimators, once: the one loader, called by the package on the first
    use of a name that needs them, and here when a hook or a backend is asked for before the package loaded them
    (``clusterforget.estimators`` or ``clusterforget.store`` imported directly)."""
    global _layers_loaded
    with _LAYERS_LOCK:
        if _layers_loaded:
            return
        import importlib

        for module in LAYERS:
            provider = importlib.import_module(f"{__package__}.{module}")
            getattr(provider, "register", lambda: None)()  # export registers on request (it loads without us)
        _layers_loaded = True


def _layer(name: str) -> Any:
    if name not in _LAYER_HOOKS:
        load_layers()
    if name not in _LAYER_HOOKS:  # pragma: no cover - every hook's layer is in LAYERS
        raise RuntimeError(f"no clusterforget layer provides {name!r}")
    return _LAYER_HOOKS[name]


def backend_executor(backend: str, n_jobs: int | None, verbose: bool) -> Executor:
    """The executor registered for ``backend`` (``executors.BACKENDS``), the backends' layer loaded first."""
    if backend not in BACKENDS:
        load_layers()
    return make_executor(backend, n_jobs, verbose)


# estimator classes by persisted name (``module.QualName``): the store rebuilds a model by this name, so a
# subclass (a backend's estimator) comes back from save/load as itself, not as its base class
ESTIMATORS: dict[str, type] = {}


def persisted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def ensemble_of(model: Any) -> GroupedEnsemble:
    """The fitted ensemble of ``model`` (what every other layer reads), or ``NotFittedError`` -- as scikit-learn's
    ``check_is_fitted`` does for its estimators."""
    ens = getattr(model, "ensemble_", None)
    if ens is None and getattr(model, "_scoring_only", None) is not None:
        raise ScoringOnlyError(
            f"This {type(model).__name__} was unpickled: a pickle holds what scoring needs (the bundle export's "
            "members and routing), never the training rows, so it can predict but not forget, relabel, add rows, "
            "save or report on its rows. Load the model from its store with cf.load(path) (model.save(path) writes "
            "one) to change it, or fit it again"
        )
    if ens is None:
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
            "(or cf.load a store) before using this estimator."
        )
    return ens


def store_of(model: Any) -> Any:
    """The store ``model`` is bound to (every change commits there), or None."""
    return getattr(model, "_store", None)


def bind_store(model: Any, store: Any) -> None:
    """Bind ``model`` to ``store`` (``save`` and ``load`` do): every later change commits there."""
    model._store = store


def attach_ensemble(model: Any, ens: GroupedEnsemble) -> Any:
    """Install a fitted ensemble (from ``fit`` or a store) and derive scikit-learn's fitted attributes."""
    model.__dict__.pop("_scoring_spec", None)  # an unpickled, scoring-only model fitted again is a full model
    model.__dict__.pop("_scoring_only", None)
    model.ensemble_ = ens
    model.n_features_in_ = len(ens.schema.names)
    if ens.schema.from_frame:
        model.feature_names_in_ = np.asarray(ens.schema.names, dtype=object)
    elif hasattr(model, "feature_names_in_"):
        del model.feature_names_in_
    return model


def owner_of(model: Any) -> tuple[str, dict]:
    """What a store records of the model holding a state: its persisted class name and its parameters."""
    return persisted_name(type(model)), model.get_params(deep=False)


def new_ensemble(model: Any, grouping: Grouping, combine: str, seed: int, learner: str, learner_params: Any,
                 max_group_rows: int | None, fitted_with: dict[str, Any] | None = None, **fields: Any
                 ) -> GroupedEnsemble:
    """An empty ensemble state with ``model``'s task, threads and executor, the given settings and ``fields``
    (``schema``, ``id_type``, ``label_type``, ``holder``). ``fitted_with``: the ``class_weight``,
    ``preprocessor`` and ``stopping`` (``members.EarlyStopping``) the members were trained with, as a store
    recorded them; a parameter set after fit changes nothing until the next fit, so they win over the model's."""
    given = fitted_with or {}
    class_weight = given["class_weight"] if "class_weight" in given else getattr(model, "class_weight", None)
    preprocessor = given["preprocessor"] if "preprocessor" in given else getattr(model, "preprocessor", None)
    stopping = given["stopping"] if "stopping" in given else early_stopping_of(model, combine)
    return GroupedEnsemble(
        task=model._task,
        grouping=grouping,
        learner=make_learner(learner, learner_params, seed, check_class_weight(class_weight), preprocessor, stopping),
        combine=combine,
        max_group_rows=max_group_rows,
        n_jobs=model.n_jobs,
        verbose=bool(model.verbose),
        executor=model._make_executor(),
        owner=owner_of(model),
        **fields,
    )


def early_stopping_of(model: Any, combine: str) -> EarlyStopping:
    """The members' early stopping from the estimator's parameters; ``combine="auto"`` left to the data (a key
    grouping) makes every member hold out its slice, on which route and average are scored."""
    scoring = getattr(model, "scoring", "loss")
    allowed = CLASSIFICATION_SCORINGS if model._task == CLASSIFICATION else REGRESSION_SCORINGS
    if scoring not in allowed:
        import difflib

        close = difflib.get_close_matches(scoring, [a for a in allowed if a], n=1) if isinstance(scoring, str) else []
        raise ParameterError(f"scoring={quoted(scoring)} is not a score {type(model).__name__} can stop early on; "
                             f"use one of {', '.join(map(repr, allowed))}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))
    return EarlyStopping(early_stopping=getattr(model, "early_stopping", False),
                         validation_fraction=float(getattr(model, "validation_fraction", 0.1)),
                         n_iter_no_change=int(getattr(model, "n_iter_no_change", 10)), scoring=scoring,
                         hold_out=combine == "auto")


def warn_unstopped(ens: GroupedEnsemble, names: set | None = None) -> None:
    """``early_stopping=True`` asks every member to stop early on a held-out slice: warn, naming them, about the
    groups (of ``names``, or all) too small to hold one out, which trained on all their rows without stopping."""
    stopping = ens.learner.stopping
    if stopping.early_stopping is not True:
        return
    small = [f"{g.name!r} ({g.n_rows} rows)" for g in ens.groups.values() if g.member is not None
             and (names is None or g.name in names) and g.member.rounds > 0 and not g.member.held_out]
    if small:
        import warnings

        warnings.warn(
            f"early_stopping=True, but {len(small)} group(s) are too small to hold out a slice (validation_fraction="
            f"{stopping.validation_fraction}, by id hash) leaving rows, every class and some weight on both sides, and "
            f"trained on all their rows without stopping early: {', '.join(small[:20])}"
            f"{' ...' if len(small) > 20 else ''}. To stop early there, raise validation_fraction or group those rows "
            "with others (a coarser grouping); early_stopping='auto' stops only in groups of more than 10,000 rows, "
            "and does not warn", UserWarning, stacklevel=3)


def check_class_weight(class_weight: Any) -> Any:
    """``class_weight`` as the learner takes it: None, "balanced", or {label: finite weight >= 0}."""
    if class_weight is None or class_weight == "balanced":
        return class_weight
    if not isinstance(class_weight, dict):
        raise ParameterError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {class_weight!r}")
    for label, w in class_weight.items():
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)) or not (
                math.isfinite(w) and 0 <= w <= 1e12):
            raise ParameterError(f"class_weight[{label!r}] = {w!r} is not a finite number from 0 to 1e12; "
                                 "give every class a number (1 leaves it as it is)")
    return dict(class_weight)


def _missing_positions(y: np.ndarray) -> np.ndarray:
    """Positions of missing targets: NaN in float arrays; None, NaN or pandas.NA in object arrays."""
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype.kind != "O":
        return np.zeros(0, dtype=np.int64)

    def missing(v: Any) -> bool:
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            return True
        return type(v).__name__ in ("NAType", "NaTType")

    return np.flatnonzero([missing(v) for v in y.tolist()])


def resolve_combine(combine: str, grouping: Grouping, task: str) -> str:
    """``combine="auto"``: what the grouping kind decides, or ``"auto"`` when the data decides.

    Hash shards have no key at predict time: average. Learned clusters: route (better on 4 of 5 datasets;
    averaging members fitted on other clusters cost up to +450% RMSE in regression). Key groups: neither is
    right for every key (adult: route by relationship is 0.04 AUC better than average, average by native-country
    0.01 better than route), so the state chooses from held-out slices (``GroupedEnsemble.choose_combine``).
    """
    if combine != "auto":
        return combine
    if not grouping.routable:
        return "average"
    if grouping.learned:
        return "route"
    return "auto"


def check_request_id(request_id: Any) -> str:
    """A request id as recorded in reports and the ledger: printable text of 1-200 characters, or ""."""
    if request_id is None:
        return ""
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200 or not request_id.isprintable():
        raise InputError(
            f"request_id={request_id!r} is not usable; pass the request's ticket number or name as printable text "
            "of 1 to 200 characters (it is recorded in the ledger, so never put personal data in it)"
        )
    return request_id


def _check_label(ens: GroupedEnsemble, label: Any, mode: str) -> Any:
    """A rule's label as a plain Python value of the model's label type, or an InputError quoting it."""
    if ens.task != CLASSIFICATION:
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, Real) or not math.isfinite(float(label)):
            raise InputError(f"label={label!r} is not a finite number; a regressor's label is the target value to set")
        return float(label)
    typ = ens.label_type
    if pa.types.is_boolean(typ):
        ok = isinstance(label, (bool, np.bool_))
    elif pa.types.is_integer(typ):
        ok = isinstance(label, Integral) and not isinstance(label, (bool, np.bool_))
    elif pa.types.is_floating(typ):
        ok = isinstance(label, Real) and not isinstance(label, (bool, np.bool_)) and math.isfinite(float(label))
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        ok = isinstance(label, str)
    else:  # pragma: no cover - labels are bool, int, float or str
        ok = True
    value = None
    if ok:
        try:
            value = pa.scalar(label.item() if isinstance(label, np.generic) else label, type=typ).as_py()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            ok = False
    classes = ens.classes.tolist() if ens.classes is not None else []
    if not ok:
        raise InputError(
            f"label={label!r} ({type(label).__name__}) does not match this model's labels, which are {typ} "
            f"(classes {classes[:10]!r}); pass a label of the same type"
        )
    if mode == "override" and not any(value == c for c in classes):
        raise InputError(
            f"label={label!r} is not one of the model's classes {classes[:20]!r}; an override can only output a "
            "class the model knows (relabel with mode='retrain' to teach it a new class)"
        )
    return value


def _count_matches(ens: GroupedEnsemble, rule: CompiledRule) -> int:
    """How many stored training rows match the rule (computed where the rows are)."""
    return sum(int(np.count_nonzero(m)) for m in ens.masks(rule).values())


_PARAMETERS_DOC = """
    Parameters
    ----------
    grouping : "auto", str, list of str, or Grouping, default "auto"
        How training rows are partitioned into groups, one member per group. ``"auto"`` picks a hash
        sharding sized from the data (``AutoGroups``); a column name or list of names groups by key
        (``KeyGroups``); or pass ``HashGroups(k)``, ``KMeansGroups(k)``, ``KeyGroups(...)``.
    learner : str, default ``members.DEFAULT_LEARNER`` ("lightgbm")
        The name of the learner that trains each member: one of ``members.learner_names()`` (built in:
        ``"lightgbm"``, and ``"xgboost"`` with the ``xgboost`` extra), or a plugin's registered with
        ``members.register_module``.
    learner_params : dict, default None
        Parameters for every member, in the learner's own names, over clusterforget's defaults (LightGBM's:
        ``members.LGB_DEFAULTS``). The settings that make a member a pure function of its rows in id order
        (LightGBM's ``deterministic``, ``force_row_wise``, the seed, the bin sample) override anything set here
        (``members.lightgbm_params``).
    combine : {"auto", "route", "average"}, default "auto"
        ``route`` scores a row with its own group's member; ``average`` takes the weighted mean of all members;
        ``auto`` averages over hash shards, routes over learned clusters, and over keys chooses from the data:
        every member holds out its group's slice (``validation_fraction``, by id hash) and the combination that
        scores better on the slices, which no member trained on, is used (re-chosen after every change).
    max_group_rows : int, default None
        Groups above this many rows are split into shards (smaller members retrain faster).
    random_state : int, default 0
        Seed of the members and of any clustering; a fresh fit with the same seed is bitwise the same model.
    n_jobs : int, default None
        Threads for training members side by side (None: all cores).
    verbose : bool, default False
        Progress bars on long work.
    backend : str, default "local"
        Where members train: ``"local"`` (threads) or ``"dask"`` (the current ``dask.distributed`` client;
        needs the ``dask`` extra). Never changes the model.
    importance_type : {"split", "gain"}, default "split"
        What ``feature_importances_`` counts, as LightGBM's estimators: the number of splits on a feature, or
        their total gain.
    preprocessor : scikit-learn transformer, default None
        One of ``preprocess.SUPPORTED`` (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, OneHotEncoder,
        OrdinalEncoder, TargetEncoder, SimpleImputer) or a ColumnTransformer of them, **cloned and fitted per
        group** on the group's rows (``fit_transform``, as a Pipeline does), so a change refits only the touched
        groups' transformers with their members and the model stays a fresh fit's. A TargetEncoder's folds are
        fixed to ``random_state`` unless ``cv`` is a splitter. Persisted as checked JSON (never pickled); needs
        pandas. Explanations (contributions, importances) are then refused: they would be in its output features.
    early_stopping : "auto" or bool, default "auto"
        Early stopping **per member**, as scikit-learn's ``HistGradientBoosting*``: each member holds out the
        rows of its group in the held-out slice (chosen by the id hash, so forgetting a row touches only its
        group), trains on the others, and keeps the rounds up to its best score on the slice (``groups_`` and
        ``report.rounds`` show them). ``"auto"``: on in groups of more than 10,000 rows.
    validation_fraction : float in (0, 1), default 0.1
        The share of each group's rows in the held-out slice.
    n_iter_no_change : int, default 10
        Rounds without a better score on the slice that stop a member.
    scoring : str or None, default "loss"
        What the slice is scored by: ``"loss"`` (the objective's own), None (accuracy; R² for regression), or
        ``"roc_auc"``, ``"accuracy"``, ``"neg_log_loss"``, ``"r2"``, ``"neg_mean_squared_error"``,
        ``"neg_root_mean_squared_error"``, ``"neg_mean_absolute_error"``.

    Attributes
    ----------
    ensemble_ : GroupedEnsemble
        The fitted groups, members, weights and fitted state (every change goes through it).
    n_features_in_ : int
        Number of feature columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names seen in ``fit``; defined only when ``X`` had column names.
    groups_ : list of dict
        One entry per member: key, name, rows, effective weight, whether it is pending.
    n_rows_, version_ : int
        Rows held now, and the number of changes since ``fit``.
    feature_importances_ : ndarray of shape (n_features_in_,)
        The members' importances (``importance_type``) combined with each member's weight over the training
        rows, in the order of ``feature_names_in_`` (see ``clusterforget.explain``).
"""


_CLASS_WEIGHT_DOC = """    class_weight : None, "balanced" or dict {label: weight}, default None
        Weights of the classes, multiplied into the sample weights, as scikit-learn defines them, **computed per
        member on its group's rows**: ``"balanced"`` gives a class n_rows / (n_classes * rows of the class) of the
        group, so forgetting a row changes only its own member's class weights (weights from all rows would make
        every forget retrain every member). A dict's labels that a group lacks are ignored, as are labels that
        left the model; classes not in the dict weigh 1.
"""


class _LearnerNames(StrOptions):
    """``learner=``'s constraint: the registered learners' names, read when checked (``members.register``)."""

    def __init__(self) -> None:
        super().__init__(set())

    @property
    def options(self) -> set[str]:
        return set(learner_names())

    @options.setter
    def options(self, value: set[str]) -> None:
        pass  # the registry is the one list of names


class _ForgetBase(BaseEstimator):
    _task = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._task:
            ESTIMATORS[persisted_name(cls)] = cls

    _parameter_constraints: dict = {
        "grouping": [None, str, list, tuple, Grouping],
        "learner": [_LearnerNames()],
        "learner_params": [None, dict],
        "combine": [StrOptions({"auto", "route", "average"})],
        "max_group_rows": [None, Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "n_jobs": [None, Integral],
        "verbose": ["boolean"],
        "backend": [str],
        "importance_type": [StrOptions({"split", "gain"})],
        "preprocessor": [None, HasMethods(["fit", "transform"])],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "scoring": [None, str],  # the task's names, in order, are checked in fit (``early_stopping_of``)
    }

    def __init__(
        self,
        *,
        grouping: Any = "auto",
        learner: str = DEFAULT_LEARNER,
        learner_params: dict | None = None,
        combine: str = "auto",
        max_group_rows: int | None = None,
        random_state: int = 0,
        n_jobs: int | None = None,
        verbose: bool = False,
        backend: str = "local",
        importance_type: str = "split",
        preprocessor: Any = None,
        early_stopping: Any = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        scoring: str | None = "loss",
    ):
        self.grouping = grouping
        self.learner = learner
        self.learner_params = learner_params
        self.combine = combine
        self.max_group_rows = max_group_rows
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.backend = backend
        self.importance_type = importance_type
        self.preprocessor = preprocessor
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.scoring = scoring

    def _validate_params(self) -> None:
        """scikit-learn's parameter check, raising inside the clusterforget error family."""
        try:
            super()._validate_params()
        except InvalidParameterError as exc:
            raise ParameterError(str(exc)) from None

    # ------------------------------------------------------------------ fit / predict
    def _make_executor(self) -> Executor:
        """Where members train: the executor registered for ``backend`` (``executors.BACKENDS``)."""
        return backend_executor(self.backend, self.n_jobs, bool(self.verbose))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, ids: Any = None, sample_weight: Any = None) -> "_ForgetBase":
        """Partition the rows into groups and train one member per group.

        Parameters
        ----------
        X : pandas or polars DataFrame, pyarrow Table, or 2-d array; or a dask DataFrame or Parquet
            path(s) / glob / fsspec URL, with ``y`` and ``ids`` naming its label and id columns
        y : array-like of shape (n_samples,), or a column name (dask / Parquet input)
        ids : array-like of unique int or str row ids, default ``0 .. n-1``, or a column name.
            Later ``forget_rows`` calls name rows by these ids.
        sample_weight : array-like of shape (n_samples,) or a number, default None (every row 1)
            Finite weights >= 0, stored with the rows (persisted, part of the exactness contract) and given to
            every member's learner. A group's weight in the ensemble is the sum of its rows' weights.
            ``reweight`` changes them later; weight 0 keeps a row without influence (it is not a deletion).
        """
        X, y, ids = _layer("read_input")(X, y, ids)  # a dask DataFrame / Parquet paths (backends.dask)
        # the ensemble's own copy of the spec, as a store rebuilds it (a spec holds settings only)
        grouping = grouping_from_dict(resolve_grouping(self.grouping).to_dict())
        cluster_input = isinstance(X, RemoteInput)
        if cluster_input:  # rows that stay on a cluster: here only what the partition needs (their skeleton)
            schema = X.schema
        else:
            schema, table = infer_schema(X)
        grouping.validate(schema)
        n = X.n_rows if cluster_input else table.num_rows
        y = self._check_y(labels_array(y, n))
        row_ids = as_ids(ids, n)
        check_unique(row_ids)
        weights = weights_array(sample_weight, n)
        ens = new_ensemble(self, grouping, resolve_combine(self.combine, grouping, self._task),
                           int(self.random_state), self.learner, self.learner_params, self.max_group_rows,
                           schema=schema, id_type=row_ids.type, label_type=self._label_type(y))
        check_learner_params(self.learner, self.learner_params, self._task)  # a typo would be ignored silently
        sources: tuple = ()
        if cluster_input and isinstance(ens.executor, RowHolder):
            table, sources = X.columns(grouping.reads(schema)), X.sources(row_ids)
        elif cluster_input:  # an executor that trains here: every column comes here
            table = X.columns(schema.names)
        attach_ensemble(self, ens.fit(ens.make_rows(table, y, row_ids, weights), sources).state)
        self._store = None
        warn_unstopped(ensemble_of(self))
        return self

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _label_type(self, y: np.ndarray) -> pa.DataType:
        raise NotImplementedError

    def _ensemble(self) -> GroupedEnsemble:
        return ensemble_of(self)

    def _scoring(self) -> ScoringSpec:
        """What predict reads: the ensemble's scoring spec, or an unpickled model's (see ``__getstate__``)."""
        spec = self.__dict__.get("_scoring_spec")
        if spec is not None:
            return spec
        ens = self._ensemble()
        ens.check_ready()
        return ens.scoring_spec()

    def _raw(self, X: Any) -> np.ndarray:
        spec, table = self._spec_for(X)
        return score(spec, table)

    def _spec_for(self, X: Any) -> tuple[Any, pa.Table]:
        spec = self.__dict__.get("_scoring_spec")
        schema = spec.schema if spec is not None else self._ensemble().schema
        table = conform(X, schema, type(self).__name__)
        return self._scoring(), table

    def _predict_special(self, X: Any, raw_score: bool, pred_contrib: bool) -> np.ndarray:
        """``predict(X, raw_score=True)`` / ``predict(X, pred_contrib=True)``, in LightGBM's shapes."""
        if raw_score and pred_contrib:
            raise InputError("predict got raw_score=True and pred_contrib=True; ask for one of them")
        spec, table = self._spec_for(X)
        values = explain.contributions(spec, table) if pred_contrib else explain.raw_scores(spec, table)
        return explain.lightgbm_layout(values)

    # ------------------------------------------------------------------ explanations (clusterforget.explain)
    @property
    def feature_importances_(self) -> np.ndarray:
        """Importances (``importance_type``: "split" or "gain") combined over the members as they score."""
        return explain.importances(self._scoring(), explain.check_importance_type(self.importance_type))

    def explain(self, X: Any, top: int = 4) -> Any:
        """Reason codes: per row, the ``top`` features that moved its raw score most, as a DataFrame.

        One line per row and reason: ``row`` (position in ``X``), ``rank``, ``feature``, ``value`` (the row's
        value), ``contribution`` (TreeSHAP, on the raw-score scale of ``predict(X, raw_score=True)``), and the
        row's ``raw_score`` and ``base`` (what every row starts from); a classifier adds ``class``, the class
        whose score is explained (for two classes the second, ``classes_[1]``; for more, the predicted one).
        Reasons are ordered by ``|contribution|``; a positive one pushed the score up. Rows set by an override
        rule have no reasons. Needs pandas.

        Examples
        --------
        >>> import numpy as np, pandas as pd, clusterforget as cf
        >>> X = pd.DataFrame({"a": np.arange(200.0), "b": np.tile([0.0, 1.0], 100)})
        >>> model = cf.ForgetRegressor(n_jobs=1).fit(X, X["a"] * 2)
        >>> model.explain(X.iloc[:1], top=1)[["row", "rank", "feature", "value"]].to_dict("records")
        [{'row': 0, 'rank': 1, 'feature': 'a', 'value': 0.0}]
        """
        spec, table = self._spec_for(X)
        return explain.reasons_frame(explain.reasons(spec, table, top))

    def to_shap(self, group: Any = None) -> dict[str, Any]:
        """The model as the tree-model dict ``shap.TreeExplainer`` reads: ``shap.TreeExplainer(model.to_shap())``.

        Its SHAP values are those of ``predict(X, pred_contrib=True)`` (LightGBM members: within 1e-9; XGBoost
        members: within XGBoost's float32 rounding). Averaging models: the whole model. Routed models score
        each row with its own group's members: ``group`` (a key, as ``forget_group`` takes) gives those members,
        ``None`` all of them (what scores a row of an unseen group). shap's format has numeric splits only: a
        member with a categorical split raises ``ExportError``; ``shap_explanation(X)`` covers every model.
        """
        spec = self._scoring()
        key = None if group is None else spec.grouping.normalize_key(group)
        return explain.shap_model(spec, key)

    def shap_explanation(self, X: Any) -> Any:
        """A ``shap.Explanation`` of ``X`` (values of ``predict(X, pred_contrib=True)``) for shap's plots, e.g.
        ``shap.plots.beeswarm(model.shap_explanation(X))``. Needs the ``explain`` extra (shap)."""
        spec, table = self._spec_for(X)
        return explain.shap_explanation(spec, table)

    # ------------------------------------------------------------------ operations that change the model
    def _mutate(self, change: Callable[[GroupedEnsemble], Outcome], request_id: str | None = None,
                dry_run: bool = False) -> Report:
        """Run a change (state -> ``Outcome``: a new state); commit the new state to the bound store, and only
        once that succeeded make it the model's. The old state is never changed, so a failure anywhere leaves
        the model as it was (and as its store is).

        ``request_id`` (a deletion request's ticket number, say) goes into the report and the ledger line.
        ``dry_run``: ``change`` only plans (trains and installs nothing); the report says what it would do,
        with the estimated training time in its note, and neither the model nor its store changes.
        """
        request_id = check_request_id(request_id)
        ens = self._ensemble()
        if dry_run:
            report = change(ens).report  # the state it gives is the old one: planning changes nothing
            report.version = ens.version
            report.request_id = request_id
            report.seconds = 0.0
            estimate = ens.estimate_seconds(report.groups_retrained)
            report.note = "dry run: nothing was changed" + (
                f"; training would take about {estimate:.2f}s" if estimate is not None and report.groups_retrained
                else "") + (f" ({report.note})" if report.note else "")
            return report
        store = store_of(self)
        try:
            outcome = change(ens)
        except RowsLostError:  # a worker holding rows of this model died: its store has them
            if store is None:
                raise
            ens, recovered = ens.recover_rows(store.stored_rows)
            self.ensemble_ = ens  # the same state, its rows back on the cluster (nothing to commit)
            outcome = change(ens)
            outcome.report.note = "; ".join(filter(None, [outcome.report.note, f"rows of {len(recovered)} group(s) "
                                                          "lost with a worker were put back on the cluster from the "
                                                          "store"]))
        new, report = outcome.state, outcome.report
        report.request_id = request_id
        if new is ens:  # the change changes nothing: no version, no commit, no ledger line
            report.version = ens.version
            return report
        if store is not None:
            # a deferred forget's zero-copy slices: no buffer with removed rows outlives a commit
            new = new.compact().evolve(owner=owner_of(self))
            version = store.commit(new, outcome)
            if version != new.version:
                new = new.evolve(version=version)
        report.version = new.version
        self.ensemble_ = new  # the one write: the state the store now holds
        warn_unstopped(new, set(report.groups_retrained))
        # counts and names of groups only: never a row id or a feature value
        log.info("%s request=%s rows_removed=%d rows_added=%d rows_relabeled=%d groups_retrained=%d "
                 "groups_dropped=%d groups_pending=%d seconds=%.3f version=%s", report.operation, request_id or "-",
                 report.rows_removed, report.rows_added, report.rows_relabeled, len(report.groups_retrained),
                 len(report.groups_dropped), len(report.groups_pending), report.seconds, report.version)
        return report

    def forget_rows(self, ids: Any, retrain: str = "now", *, request_id: str | None = None,
                    dry_run: bool = False, audit: bool = False) -> Report:
        """Remove rows by id and retrain only the members whose groups held them.

        With ``retrain="deferred"`` the affected members leave the ensemble at once (the forgotten rows
        then have no influence on predictions) and ``retrain_pending()`` trains them later. With
        ``dry_run=True`` nothing changes: the report says what would be removed, retrained and dropped.
        ``audit=True`` also runs the before/after-output attack on the forgotten rows while the previous
        version still exists (``clusterforget.verify.diff``); its figures go in ``report.audit`` and the ledger.
        """
        self._check_retrain(retrain)
        ens = self._ensemble()
        remove = as_ids(ids, what="ids to forget")
        id_type_matches(remove, ens.id_type)
        remove = pc.unique(remove)
        if len(remove) == 0:
            raise InputError("no ids given to forget_rows; pass one or more row ids")
        if audit and not dry_run:
            return self._mutate(lambda e: _layer("audit")(e, remove, lambda: e.apply("forget_rows", remove=remove,
                                                                                      retrain=retrain)), request_id)
        return self._mutate(lambda e: e.apply("forget_rows", remove=remove, retrain=retrain, dry_run=dry_run),
                            request_id, dry_run)

    def forget_group(self, key: Any, retrain: str = "now", *, request_id: str | None = None,
                     dry_run: bool = False) -> Report:
        """Remove every row of a group (all its size-bound shards) and its member.

        ``key``: a value of the grouping column, a tuple for several columns, or the cluster / shard number.
        Key and hash partitions do not depend on the data, so nothing else is retrained; forgetting a
        learned cluster refits the clustering as a fresh fit would, and the report shows what that cost.
        ``dry_run=True``: report what would happen, change nothing.
        """
        self._check_retrain(retrain)
        ens = self._ensemble()
        norm = ens.grouping.normalize_key(key)
        ens.groups_of(norm)
        return self._mutate(
            lambda e: e.apply("forget_group", drop_keys=[norm], retrain=retrain, dry_run=dry_run), request_id, dry_run
        )

    def set_group_weight(self, key: Any, weight: float, *, request_id: str | None = None) -> Report:
        """Scale a group's weight in the ensemble (1 restores it). Reversible, and NOT a deletion."""
        ens = self._ensemble()
        norm = ens.grouping.normalize_key(key)
        return self._mutate(lambda e: e.set_weight(norm, weight), request_id)

    def retrain_pending(self, *, request_id: str | None = None, dry_run: bool = False) -> Report:
        """Train the members that deferred forgetting took out of the ensemble (``dry_run``: only list them)."""
        return self._mutate(lambda e: e.retrain_pending(dry_run), request_id, dry_run)

    def add_rows(self, X: Any, y: Any, ids: Any = None, *, sample_weight: Any = None, allow_forgotten: bool = False,
                 request_id: str | None = None) -> Report:
        """Add training rows; they join their groups (a new key makes a new group) and only touched members retrain.

        ``ids`` default to the integers after the largest id held (integer ids only). Ids of rows forgotten
        earlier are refused unless ``allow_forgotten=True`` (checked when the model is bound to a store).
        ``sample_weight``: the new rows' weights, as in ``fit`` (default 1).
        """
        ens = self._ensemble()
        X, y, ids = _layer("read_input")(X, y, ids)
        cluster_input = isinstance(X, RemoteInput)
        if cluster_input:
            if X.schema.names != ens.schema.names or X.schema.kinds != ens.schema.kinds:
                raise SchemaError(
                    f"the new rows have columns {list(X.schema.names)!r} of kinds {list(X.schema.kinds)!r}; fit saw "
                    f"{list(ens.schema.names)!r} of kinds {list(ens.schema.kinds)!r}. Pass the same columns as in fit"
                )
            # rows on the cluster stay there when the model's rows do; otherwise every column comes here
            table = X.columns(ens.holder.input_columns(ens.grouping, ens.schema))
        else:
            table = conform(X, ens.schema, type(self).__name__)
        n = X.n_rows if cluster_input else table.num_rows
        y = self._check_y(labels_array(y, n))
        if n == 0:
            raise InputError("add_rows got no rows; pass at least one row")
        weights = weights_array(sample_weight, n)
        if ids is None:
            if not pa.types.is_integer(ens.id_type):
                raise InputError("this model's row ids are strings: pass ids= for the new rows")
            held = max((pc.max(g.rows.column(ID)).as_py() for g in ens.groups.values()), default=-1)
            start = max(held, -1 if ens.max_id is None else ens.max_id) + 1  # never a forgotten row's id
            new_ids = self._fresh_ids(start, n)
        else:
            new_ids = as_ids(ids, n, what="ids of the new rows")
            id_type_matches(new_ids, ens.id_type)
        check_unique(new_ids, what="ids of the new rows")
        clash = [
            v for g in ens.groups.values() for v in pc.filter(new_ids, pc.is_in(new_ids, value_set=g.rows.column(ID))).to_pylist()
        ]
        if clash:
            raise DuplicateIdError(
                f"ids {clash[:10]!r} are already rows of this model; nothing was added. Use new ids, or "
                "forget_rows the old rows first to replace them"
            )
        store = getattr(self, "_store", None)
        if store is not None and not allow_forgotten:
            gone = store.tombstoned(new_ids)
            if gone:
                raise TombstoneError(
                    f"ids {gone[:10]!r} belong to rows that were forgotten; nothing was added. Training on them "
                    "again must be deliberate: pass allow_forgotten=True"
                )
        if self._task == CLASSIFICATION:
            self._check_label_type(y)
        rows = ens.make_rows(table, y, new_ids, weights)
        sources = ens.holder.sources(X, new_ids)
        return self._mutate(lambda e: e.apply("add_rows", add=rows, add_sources=sources), request_id)

    def _check_label_type(self, y: np.ndarray) -> None:
        pass

    def _fresh_ids(self, start: int, n: int) -> pa.Array:
        """``n`` integer ids from ``start`` on, skipping ids the bound store's tombstones record as forgotten."""
        store = getattr(self, "_store", None)
        out: list[int] = []
        while len(out) < n:
            batch = list(range(start, start + 2 * (n - len(out))))
            gone = set(store.tombstoned(batch)) if store is not None else set()
            out += [v for v in batch if v not in gone][: n - len(out)]
            start = batch[-1] + 1
        return pa.array(out, pa.int64())

    @staticmethod
    def _check_retrain(retrain: str) -> None:
        if retrain not in _RETRAIN:
            raise InputError(f"retrain={retrain!r} is not an option; use 'now' or 'deferred'")

    # ------------------------------------------------------------------ rules (relabel / override)
    def relabel(self, rule: str | None = None, label: Any = None, mode: str = "retrain", *, ids: Any = None,
                request_id: str | None = None, dry_run: bool = False) -> Report:
        """Apply a business rule to the training labels (``mode="retrain"``) or to the outputs (``"override"``),
        or give chosen training rows new labels (``ids=``).

        ``retrain``: every stored row matching the rule gets ``label``; only the members whose groups hold a
        row whose label changed are retrained, and the model equals a fresh fit on the relabeled rows. A rule
        that matches no row (or only rows that already have ``label``) changes nothing and says so in
        ``report.note``.

        ``override``: nothing is retrained; at predict time inputs matching the rule get ``label`` (probability
        1 for that class; the value for regression). Overrides apply in order, the first matching one wins;
        list them with ``model.rules`` and remove one with ``model.remove_rule(rule_id)``.

        ``ids=``: the training rows with these ids get ``label`` (one label for all, or one per id, such as
        ``cf.suspects(model).suggested``), as a retrain: the model equals a fresh fit on the relabeled rows. An
        id that is not a row of the model raises ``UnknownIdError`` and nothing changes. The ledger records the
        number of rows, never the ids.

        ``dry_run=True``: report what would happen (rows matched, groups to retrain), change nothing.
        """
        ens = self._ensemble()
        if ids is not None:
            if rule is not None:
                raise InputError(f"relabel got both a rule ({rule!r}) and ids; pass one of them")
            if mode != "retrain":
                raise InputError(f"mode={mode!r} with ids: rows chosen by id are relabeled for retraining only "
                                 "(an override changes outputs for inputs matching a rule; pass a rule for it)")
            return self._relabel_ids(ens, ids, label, request_id, dry_run)
        if rule is None:
            raise InputError("relabel needs a rule (such as \"fare == 0\") or ids=; got neither")
        if mode not in MODES:
            raise InputError(f"mode={mode!r} is not an option; use 'retrain' (relabel training rows) or 'override'")
        compiled = parse(rule, ens.schema)
        value = _check_label(ens, label, mode)

        if mode == "override":
            matched = _count_matches(ens, compiled)

            def add_override(e: GroupedEnsemble) -> Outcome:
                t0 = time.perf_counter()
                rule_id = e.next_rule_id()
                return Outcome(e.add_override(rule_id, rule, compiled, value), Report(
                    operation="relabel_override",
                    is_deletion=False,
                    rule=rule,
                    rows_matched=matched,
                    seconds=time.perf_counter() - t0,
                    note=f"override {rule_id}: inputs matching the rule now predict {value!r}; nothing was "
                    f"retrained and the training rows keep their labels ({matched} training row(s) match the "
                    f"rule). model.remove_rule({rule_id!r}) takes it back",
                ))

            if dry_run:
                return self._mutate(lambda e: Outcome(e, Report(operation="relabel_override", is_deletion=False,
                                                                rule=rule, rows_matched=matched)), request_id, dry_run)
            return self._mutate(add_override, request_id)

        def change(e: GroupedEnsemble) -> Outcome:
            outcome = e.apply("relabel", relabel=(compiled, value), dry_run=dry_run)
            report = outcome.report
            report.rule = rule
            matched, already = report.rows_matched, report.rows_matched - report.rows_relabeled
            if not report.rows_relabeled:  # no version, no ledger line for a change that changes nothing
                report.note = ("the rule matches no training row; nothing was changed" if matched == 0 else
                               f"all {matched} matching training row(s) already have label {value!r}; nothing was "
                               "changed")
                return Outcome(e, report)
            if already:
                report.note = f"{matched} row(s) matched, {already} of them already had label {value!r}"
            return outcome

        return self._mutate(change, request_id, dry_run)

    def _relabel_ids(self, ens: GroupedEnsemble, ids: Any, label: Any, request_id: str | None,
                     dry_run: bool) -> Report:
        chosen = as_ids(ids, what="ids to relabel")
        id_type_matches(chosen, ens.id_type)
        check_unique(chosen, what="ids to relabel")
        if len(chosen) == 0:
            raise InputError("no ids given to relabel; pass one or more row ids")
        if isinstance(label, (str, bytes)) or np.ndim(label) == 0:
            labels = [label] * len(chosen)
        else:
            labels = list(label.tolist() if hasattr(label, "tolist") else label)
            if len(labels) != len(chosen):
                raise InputError(f"relabel got {len(chosen)} ids and {len(labels)} labels; pass one label, or one "
                                 "per id in the same order")
        checked: dict[tuple, Any] = {}  # keyed by type too: True, 1 and 1.0 are one dict key otherwise
        for v in labels:
            if (type(v), v) not in checked:
                checked[(type(v), v)] = _check_label(ens, v, "retrain")
        values = [checked[(type(v), v)] for v in labels]
        query, order, _ = ens.locate(chosen)
        given = pa.array(values, type=ens.label_type).take(pa.array(order))
        found = len(query)

        def change(e: GroupedEnsemble) -> Outcome:
            outcome = e.apply("relabel", relabel_ids=(query, given), dry_run=dry_run)
            report = outcome.report
            report.rows_matched = found
            if not report.rows_relabeled:  # no version, no ledger line for a change that changes nothing
                report.note = f"all {found} row(s) already have the given label(s); nothing was changed"
                return Outcome(e, report)
            already = found - report.rows_relabeled
            report.note = f"{found} row(s) chosen by id" + (f", {already} of them already had their label"
                                                             if already else "")
            return outcome

        return self._mutate(change, request_id, dry_run)

    def reweight(self, ids: Any, weights: Any, *, request_id: str | None = None, dry_run: bool = False) -> Report:
        """Give rows new sample weights (one number for all, or one per id); only the members holding them retrain.

        The rows stay in the model: this is NOT a deletion, weight 0 included (a row of weight 0 has no
        influence on its member, but it is still stored; ``forget_rows`` deletes). The result equals a fresh
        ``fit`` on the same rows with their current weights. ``dry_run=True``: report what would retrain.
        """
        ens = self._ensemble()
        chosen = as_ids(ids, what="ids to reweight")
        id_type_matches(chosen, ens.id_type)
        check_unique(chosen, what="ids to reweight")
        if len(chosen) == 0:
            raise InputError("no ids given to reweight; pass one or more row ids")
        w = weights_array(weights, len(chosen), what="weights")
        query, order, _ = ens.locate(chosen)
        w, found = w[order], len(query)
        zero = int(np.count_nonzero(w == 0))

        def change(e: GroupedEnsemble) -> Outcome:
            outcome = e.apply("reweight", reweight=(query, w), dry_run=dry_run)
            report = outcome.report
            report.is_deletion = False
            report.rows_matched = found
            report.note = (f"{report.rows_reweighted} of {found} row(s) got a new weight; this is NOT a deletion: the "
                           "rows stay in the model and its store" + (
                               f" ({zero} with weight 0: no influence, still held; use forget_rows to delete)"
                               if zero else ""))
            if not report.rows_reweighted:  # no version, no ledger line for a change that changes nothing
                report.note = f"all {found} row(s) already have the given weight(s); nothing was changed"
                return Outcome(e, report)
            return outcome

        return self._mutate(change, request_id, dry_run)

    @property
    def rules(self) -> list[dict[str, Any]]:
        """The output overrides in force, in the order they apply (the first matching one wins)."""
        ens = self._ensemble()
        return [
            {
                "rule_id": o.rule_id,
                "rule": o.text,
                "label": o.label,
                # False when the label's class left the model (all its rows forgotten): the override is skipped
                "active": ens.task != CLASSIFICATION or ens.override_class(o) is not None,
            }
            for o in ens.overrides
        ]

    def remove_rule(self, rule_id: str, *, request_id: str | None = None) -> Report:
        """Take an output override out of the model (the other overrides keep their order)."""

        def drop(e: GroupedEnsemble) -> Outcome:
            state, removed = e.remove_override(rule_id)
            return Outcome(state, Report(
                operation="remove_rule",
                is_deletion=False,
                rule=removed.text,
                note=f"override {rule_id} ({removed.text!r} -> {removed.label!r}) removed",
            ))

        return self._mutate(drop, request_id)

    # ------------------------------------------------------------------ inspection
    @property
    def groups_(self) -> list[dict[str, Any]]:
        """One entry per member: its key, name, rows, effective weight, learner, boosting rounds (early stopping's
        choice when it stopped early), and whether it is pending."""
        ens = self._ensemble()
        total = sum(ens.weight(g) for g in ens.groups.values() if g.member is not None) or 1.0
        return [
            {
                "key": g.key[0] if len(g.key) == 1 else g.key,
                "name": g.name,
                "shard": g.shard,
                "rows": g.n_rows,
                "weight": (ens.weight(g) / total) if g.member is not None else 0.0,
                "learner": None if g.member is None else g.member.learner,
                "rounds": None if g.member is None else g.member.rounds,
                "pending": g.member is None,
            }
            for g in ens.groups.values()
        ]

    @property
    def n_rows_(self) -> int:
        return self._ensemble().n_rows

    @property
    def version_(self) -> int:
        if "_scoring_spec" in self.__dict__:
            return int(self._scoring_only[0]["model_version"])
        return self._ensemble().version

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any, *, key: Any = None) -> Report:
        """Write the model to a store directory and bind the model to it (every later change commits there).

        ``key``: a key kept outside the store (bytes, hex, or a key file's path; default
        ``$CLUSTERFORGET_KEY`` / ``$CLUSTERFORGET_KEY_FILE``) authenticates the store; ``cf.load`` then needs it.
        """
        state = self._ensemble().compact()  # see ensemble.without_rows: removed rows' buffers are let go
        report = _layer("save")(self, path, key=key, state=state)
        self.ensemble_ = state if report.version in (None, state.version) else state.evolve(version=report.version)
        return report

    def export(self, path: Any, format: str = "bundle", notify: str | None = None, key: Any = None,
               token: str | None = None) -> dict[str, Any]:
        """Write the model for a scoring service: ``"bundle"`` (directory for ``cf.Scorer``) or ``"onnx"``.

        Atomic (a watching service never sees a half export); ``notify`` is a service URL to reload now (with
        the service's bearer ``token``); ``key`` authenticates the export. Returns what was written (see
        ``clusterforget.export.export``).
        """
        return _layer("export")(self, path, format=format, notify=notify, key=key, token=token)

    # ------------------------------------------------------------------ pickling: no training row leaves by it
    def __getstate__(self) -> dict[str, Any]:
        """A fitted model pickles as what scoring reads, never its rows.

        The state is the parameters plus the bundle export's manifest and member files (in memory; the same
        bytes ``export(format="bundle")`` writes: members, routing, schema, classes, no row, no row id, no
        training range but a ``preprocessor=``'s fitted state, which scoring reads), so ``pickle``,
        ``joblib.dump``, a tool's cache or MLflow's cloudpickle fallback cannot carry rows out of the store. It unpickles as a scoring-only model: ``predict`` / ``predict_proba`` /
        ``explain`` bitwise as before, ``forget_rows`` / ``relabel`` / ``add_rows`` / ``save`` raise
        ``ScoringOnlyError`` (change a model through its store: ``save`` it, ``cf.load`` it). An unfitted model
        pickles as usual (scikit-learn's ``clone``, ``GridSearchCV(n_jobs>1)`` send unfitted copies to workers);
        ``copy.deepcopy`` stays a full copy (it never leaves the process), bound to no store.
        """
        state = dict(super().__getstate__())
        state.pop("_scoring_spec", None)  # rebuilt from the document on unpickling
        ens = state.pop("ensemble_", None)
        state.pop("_store", None)
        if state.get("preprocessor") is not None:  # its settings: a spec given fitted holds its rows' values
            state["preprocessor"] = preprocess.unfitted(state["preprocessor"])
        if ens is not None:
            files: dict[str, bytes] = {}
            state["_scoring_only"] = (_layer("scoring_document")(self, files), files, self.classes_ if
                                      self._task == CLASSIFICATION else None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if state.get("_scoring_only") is not None:
            doc, files, classes = state["_scoring_only"]
            spec = _layer("scoring_spec")(doc, files)
            # the classes array as the model held it (its dtype), and its prediction threads
            self._scoring_spec = ScoringSpec(**{**spec.__dict__, "classes": classes,
                                                "n_threads": resolve_threads(self.n_jobs)})

    def __deepcopy__(self, memo: dict) -> "_ForgetBase":
        """A full copy (state and rows: it never leaves the process) bound to no store: a change to the copy
        commits nothing, and the model stays its store's one writer (``save`` binds the copy to a store of its
        own)."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "_store"}, memo))
        if "_store" in self.__dict__:
            new._store = None
        return new

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.sparse = True  # scipy sparse reads as its dense table (data.raw_table)
        tags.non_deterministic = False
        return tags


class ForgetClassifier(ClassifierMixin, _ForgetBase):
    """A grouped tree ensemble for classification that can forget rows and groups exactly.
    {params}
    classes_ : ndarray
        The class labels, from the rows held now.

    Examples
    --------
    >>> import numpy as np, clusterforget as cf
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); y = (X[:, 0] > 0).astype(int)
    >>> model = cf.ForgetClassifier(grouping=cf.HashGroups(4), n_jobs=1).fit(X, y)
    >>> report = model.forget_rows([0, 1, 2])
    >>> report.rows_removed, len(report.groups_retrained) <= 3
    (3, True)
    """

    __doc__ = __doc__.format(params=_PARAMETERS_DOC.replace("\n\n    Attributes\n", "\n" + _CLASS_WEIGHT_DOC +
                                                            "\n    Attributes\n", 1))
    _task = CLASSIFICATION
    _parameter_constraints: dict = {**_ForgetBase._parameter_constraints,
                                    "class_weight": [None, StrOptions({"balanced"}), dict]}

    def __init__(
        self,
        *,
        grouping: Any = "auto",
        learner: str = DEFAULT_LEARNER,
        learner_params: dict | None = None,
        combine: str = "auto",
        max_group_rows: int | None = None,
        random_state: int = 0,
        n_jobs: int | None = None,
        verbose: bool = False,
        backend: str = "local",
        importance_type: str = "split",
        preprocessor: Any = None,
        early_stopping: Any = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        scoring: str | None = "loss",
        class_weight: Any = None,
    ):
        super().__init__(grouping=grouping, learner=learner, learner_params=learner_params, combine=combine,
                         max_group_rows=max_group_rows, random_state=random_state, n_jobs=n_jobs, verbose=verbose,
                         backend=backend, importance_type=importance_type, preprocessor=preprocessor,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, scoring=scoring)
        self.class_weight = class_weight

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets, type_of_target

        missing = _missing_positions(y)
        if len(missing):
            raise InputError(
                f"y contains {len(missing)} missing label(s) (at positions {missing[:5].tolist()!r}); drop those rows "
                "or give them a label"
            )
        if y.dtype.kind == "O":
            kinds = {type(v) for v in y.tolist()}
            if len(kinds) > 1 and not all(issubclass(k, (int, np.integer)) for k in kinds):
                raise InputError(
                    f"y mixes label types {sorted(k.__name__ for k in kinds)}; use one type for all labels"
                )
        try:
            check_classification_targets(y)
        except ValueError as exc:
            kind = type_of_target(y) if y.dtype.kind != "O" else "unknown"
            sample = np.unique(y)[:5].tolist() if y.dtype.kind in "fiub" else y[:5].tolist()
            raise InputError(
                f"{exc} y looks {kind} (values such as {sample!r}); ForgetClassifier needs class labels: use "
                "ForgetRegressor for numeric targets, or bin them into classes"
            ) from exc
        return y

    def _label_type(self, y: np.ndarray) -> pa.DataType:
        return pa.array(y.tolist() if y.dtype.kind == "O" else y).type

    def _check_label_type(self, y: np.ndarray) -> None:
        """New labels must be of the kind the model holds (numbers, strings or booleans), or nothing is added."""

        def family(t: pa.DataType) -> str:
            if pa.types.is_boolean(t):
                return "boolean"
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                return "number"
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                return "string"
            return str(t)

        ens = self._ensemble()
        got = self._label_type(y)
        if family(got) != family(ens.label_type):
            raise InputError(
                f"y holds {family(got)} labels ({got}, e.g. {y[:3].tolist()!r}) but this model's labels are "
                f"{family(ens.label_type)}s ({ens.label_type}; classes {ens.classes[:10].tolist()!r}); nothing was "
                "added. Pass labels of the same type as in fit"
            )

    @property
    def classes_(self) -> np.ndarray:
        if "_scoring_spec" in self.__dict__:
            return self._scoring_spec.classes
        return self._ensemble().classes

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        return self._raw(X)

    def predict(self, X: Any, raw_score: bool = False, pred_contrib: bool = False) -> np.ndarray:
        """Class labels; as LightGBM, ``raw_score=True`` gives raw scores (``decision_function``) and
        ``pred_contrib=True`` their TreeSHAP contributions: ``n_features + 1`` columns (features, then the
        bias) for two classes, one such block per class for more. Rows of contributions sum to the raw
        scores; the raw score is the weighted average of the members' log-odds (``clusterforget.explain``)."""
        if raw_score or pred_contrib:
            return self._predict_special(X, raw_score, pred_contrib)
        proba = self._raw(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores: (n,) log-odds of ``classes_[1]`` for two classes, (n, n_classes) for more.

        The weighted average of the log-odds of the members that score each row, with the weights and routing
        ``predict_proba`` averages probabilities with; contributions (``predict(X, pred_contrib=True)``) sum to it.
        """
        return self._predict_special(X, True, False)


class ForgetRegressor(RegressorMixin, _ForgetBase):
    """A grouped tree ensemble for regression that can forget rows and groups exactly.
    {params}"""

    __doc__ = __doc__.format(params=_PARAMETERS_DOC)
    _task = REGRESSION

    def _check_y(self, y: np.ndarray) -> np.ndarray:
        missing = _missing_positions(y)
        if len(missing):
            raise InputError(
                f"y contains {len(missing)} missing value(s) (NaN/None at positions {missing[:5].tolist()!r}); "
                "drop those rows or fill them"
            )
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"ForgetRegressor needs numeric targets, got values such as {y[:5].tolist()!r} ({exc}); "
                "use ForgetClassifier for class labels"
            ) from exc
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise InputError(
                f"y contains {len(bad)} infinite value(s) ({y[bad[:5]].tolist()!r} at positions {bad[:5].tolist()!r}); "
                "drop those rows or replace the values"
            )
        return y

    def _label_type(self, y: np.ndarray) -> pa.DataType:
        return pa.float64()

    def predict(self, X: Any, raw_score: bool = False, pred_contrib: bool = False) -> np.ndarray:
        """Predicted values; as LightGBM, ``raw_score=True`` gives raw scores (before the objective's link;
        the values themselves for the default objective) and ``pred_contrib=True`` their TreeSHAP
        contributions, ``n_features + 1`` columns (features, then the bias) summing to the raw score."""
        if raw_score or pred_contrib:
            return self._predict_special(X, raw_score, pred_contrib)
        return self._raw(X)[:, 0]


# ------------------------------------------------------------------------------ pipelines the library does not own
# what every fitted transformer records of its input, and nothing of its rows' values
_SHAPE_ONLY = {"n_features_in_", "feature_names_in_"}


def fitted_state(step: Any) -> list[str]:
    """The attributes ``step`` learned from the rows it was fitted on (scikit-learn's trailing-underscore names
    but the input's shape), its own and those of every estimator it holds as a parameter (a nested Pipeline's or
    a FeatureUnion's steps, as ``inner__attribute``); ``memory`` when it caches its steps' outputs on disk (a
    Pipeline's ``memory=``: every training row transformed, in files forgetting cannot reach). Empty for a
    stateless step (a FunctionTransformer, a Normalizer, "passthrough"). State a function holds (a fitted object
    its closure or bound method captures, a global it reads) is code and is not read: undecidable in general."""
    if step is None or isinstance(step, str):
        return []
    found = sorted(k for k in vars(step) if k.endswith("_") and not k.startswith("_") and k not in _SHAPE_ONLY)
    if getattr(step, "memory", None) is not None and hasattr(step, "steps"):
        found.append("memory")
    params = step.get_params(deep=False) if hasattr(step, "get_params") else {}
    for name, value in params.items():
        inner = [value] if hasattr(value, "fit") else [
            p[1] for p in value if isinstance(p, tuple) and len(p) >= 2] if isinstance(value, list) else []
        for i, est in enumerate(inner):
            label = name if hasattr(value, "fit") else next(
                (p[0] for p in value if isinstance(p, tuple) and p[1] is est), f"{name}[{i}]")
            found += [f"{label}__{k}" for k in fitted_state(est)]
    return found


def pipeline_parts(obj: Any) -> tuple[Any, list[tuple[str, str, list[str]]]]:
    """The clusterforget model ``obj`` is, or ends (a fitted scikit-learn Pipeline), and each earlier step that
    holds state fitted on the rows: (step name, its class, the fitted attributes)."""
    if isinstance(obj, _ForgetBase):
        return obj, []
    steps = getattr(obj, "steps", None)
    if not isinstance(steps, list) or not steps or not isinstance(steps[-1][1], _ForgetBase):
        raise InputError(f"{type(obj).__name__} is neither a ForgetClassifier / ForgetRegressor nor a scikit-learn "
                         "Pipeline ending in one; pass the model, or the Pipeline that holds it")
    held = []
    if getattr(obj, "memory", None) is not None:
        held.append(("memory", type(obj).__name__, ["memory"]))
    for name, step in steps[:-1]:
        state = fitted_state(step)
        if state:
            held.append((name, type(step).__name__, state))
    return steps[-1][1], held


def forget_rows(model: Any, ids: Any, retrain: str = "now", **kwargs: Any) -> Report:
    """``model.forget_rows(ids, ...)`` for a model, or through a fitted scikit-learn Pipeline that ends in one.

    Forgetting through a Pipeline is exact only when its earlier steps hold nothing fitted on the rows (a
    FunctionTransformer, "passthrough", a Normalizer): then a fresh Pipeline fit on the remaining rows feeds the
    model the same transformed rows. A step with fitted state (a StandardScaler's means, a TargetEncoder's
    encodings) would keep the forgotten rows in it, so the forget is refused naming the step, before anything
    changes; put such steps inside the boundary with ``preprocessor=``, which fits them per group. A fitted object
    captured in a function (``FunctionTransformer(func=scaler.transform)``, a closure, a global) is code, not an
    attribute: it is not seen, and its rows are not forgotten; never give a FunctionTransformer such a function.

    Examples
    --------
    >>> import numpy as np, clusterforget as cf
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import FunctionTransformer, StandardScaler
    >>> X, y = np.arange(400.0).reshape(200, 2), np.arange(200) % 2
    >>> pipe = make_pipeline(FunctionTransformer(np.log1p), cf.ForgetClassifier(n_jobs=1)).fit(X, y)
    >>> cf.forget_rows(pipe, [0, 1]).rows_removed
    2
    >>> pipe = make_pipeline(StandardScaler(), cf.ForgetClassifier(n_jobs=1)).fit(X, y)
    >>> cf.forget_rows(pipe, [0, 1])
    Traceback (most recent call last):
    ...
    clusterforget.errors.PipelineStateError: step 'standardscaler' (StandardScaler) holds state fitted on the rows (mean_, n_samples_seen_, scale_, var_): forgetting through the model would leave the forgotten rows in it. Move it into the model as preprocessor=StandardScaler() (fitted per group, inside the guarantee), or refit the whole Pipeline on the remaining rows
    """
    inner, held = pipeline_parts(model)
    if held and held[0][0] == "memory":
        raise PipelineStateError(
            f"the {held[0][1]} has memory={model.memory!r}: it caches every step's output on the training rows on "
            "disk, where forgetting cannot reach them. Refit the Pipeline with memory=None on the remaining rows "
            "(and delete the cache)"
        )
    if held:
        name, cls, state = held[0]
        move = (f"Move it into the model as preprocessor={cls}() (fitted per group, inside the guarantee), or "
                if cls in preprocess.SUPPORTED else "")
        raise PipelineStateError(
            f"step {name!r} ({cls}) holds state fitted on the rows ({', '.join(state[:6])}): forgetting through the "
            f"model would leave the forgotten rows in it. {move}{'r' if move else 'R'}efit the whole Pipeline on "
            "the remaining rows"
        )
    return inner.forget_rows(ids, retrain, **kwargs)


__all__ = ["forget_rows", "pipeline_parts", "fitted_state", "ForgetClassifier", "ForgetRegressor", "ensemble_of", "store_of", "bind_store", "attach_ensemble",
           "new_ensemble"]
