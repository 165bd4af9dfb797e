"""clusterforget: machine unlearning for tabular data with grouped tree ensembles.

Rows are partitioned into groups (key columns, learned clusters or hash shards), one tree model is trained
per group, and the models are combined as a weighted ensemble. Forgetting rows retrains only the members
whose groups held them, and the result is bit-for-bit what a fresh fit on the remaining rows would give.
"""

from . import backends as _backends  # noqa: F401 - registers backend="dask" (without importing dask)
from . import errors as _errors
from .errors import *  # noqa: F403 - the error family, listed in errors.__all__
from .errors import EnvironmentWarning  # a warning, not an error: outside the error family's __all__
from .estimators import ForgetClassifier, ForgetRegressor
from .explain import Comparison, compare
from .export import Scorer
from .grouping import AutoGroups, HashGroups, KeyGroups, KMeansGroups
from .plan import Plan, plan, plan_file
from .report import Report
from .suspects import Suspects, suspects, what_if
from .store import load as _load_store
from .store import read_ledger as _read_ledger
from .store import remove_unreferenced
from .verify import VerifyResult, certificate, verify, verify_certificate

from .version import __version__


def read_ledger(path):
    """The committed ledger entries of a store, oldest first (the hash chain is checked)."""
    return _read_ledger(path)


def load(path, **kwargs):
    """Load a model from a store directory written by ``model.save``; the model stays bound to the store."""
    return _load_store(path, **kwargs)


__all__ = [
    "ForgetClassifier",
    "ForgetRegressor",
    "KeyGroups",
    "KMeansGroups",
    "HashGroups",
    "AutoGroups",
    "Report",
    "verify",
    "plan",
    "plan_file",
    "Plan",
    "VerifyResult",
    "certificate",
    "verify_certificate",
    "load",
    "Scorer",
    "compare",
    "Comparison",
    "read_ledger",
    "suspects",
    "Suspects",
    "what_if",
    "remove_unreferenced",
    "EnvironmentWarning",
    "__version__",
    *_errors.__all__,
]
