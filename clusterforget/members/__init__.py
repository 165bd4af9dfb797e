"""Learner adapters: train one member on one group's rows, predict, and serialize to native model files.

``base`` says what a learner and a member are and keeps the registry of learner kinds; every other module of
this package is one learner (``lightgbm``, ``xgboost``) and registers its ``LearnerKind`` when imported, which
importing this package does for each of them. Adding a learner is adding its module here (and its tests).
"""

from importlib import import_module as _import_module
from pkgutil import iter_modules as _iter_modules

from .base import (
    CERTAIN_MARGIN,
    CLASSIFICATION,
    CLASSIFICATION_SCORINGS,
    DEFAULT_LEARNER,
    IMPORTANCE_TYPES,
    KINDS,
    LEARNERS,
    MEMBERS,
    REGRESSION,
    REGRESSION_SCORINGS,
    ROUND_ALIASES,
    BoosterMember,
    ConstantMember,
    EarlyStopping,
    Learner,
    LearnerKind,
    Member,
    canonical_bytes,
    check_learner_params,
    class_weights,
    classes_of,
    distributions,
    encode,
    fit_vocab,
    learner_kind,
    learner_names,
    library_names,
    make_learner,
    member_from_bytes,
    register,
    register_module,
    sample_weights,
    shap_tree,
    split_rounds,
    treelite_frontend,
    unregister,
)
from .lightgbm import (LGB_DEFAULTS, LightGBMLearner, LightGBMMember, NativeLightGBM, lightgbm_params,
                       neutral_feature_infos)
from .xgboost import XGBoostLearner, XGBoostMember

# every learner module registers itself on import; the names above are the ones other layers use by name
for _info in _iter_modules(__path__):
    if _info.name != "base":
        _import_module(f"{__name__}.{_info.name}")

__all__ = [
    "CERTAIN_MARGIN", "CLASSIFICATION", "CLASSIFICATION_SCORINGS", "DEFAULT_LEARNER", "REGRESSION_SCORINGS",
    "EarlyStopping", "IMPORTANCE_TYPES", "KINDS", "LEARNERS", "MEMBERS", "REGRESSION", "ROUND_ALIASES",
    "BoosterMember", "ConstantMember", "Learner", "LearnerKind", "Member", "canonical_bytes",
    "check_learner_params", "class_weights", "classes_of", "distributions", "encode", "fit_vocab", "learner_kind",
    "learner_names", "library_names", "make_learner", "member_from_bytes", "register", "register_module",
    "sample_weights", "shap_tree", "split_rounds", "treelite_frontend", "unregister", "LGB_DEFAULTS",
    "LightGBMLearner", "LightGBMMember", "NativeLightGBM", "lightgbm_params", "neutral_feature_infos",
    "XGBoostLearner", "XGBoostMember",
]
