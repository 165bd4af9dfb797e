"""clusterforget: machine unlearning for tabular data with grouped tree ensembles.

Rows are partitioned into groups (key columns, learned clusters or hash shards), one tree model is trained
per group, and the models are combined as a weighted ensemble. Forgetting rows retrains only the members
whose groups held them, and the result is bit-for-bit what a fresh fit on the remaining rows would give.
"""

# The public names load on first use (PEP 562): ``import clusterforget`` and ``cf.Scorer(path)`` import
# numpy, pyarrow and the member's learner only, so a scoring process starts without scikit-learn. The first
# use of anything else loads every layer, which also plugs the upper layers into the estimators (save,
# export, audit, backends).
from __future__ import annotations

import importlib
import logging as _logging
import sys
import types
from typing import Any

from . import errors as _errors
from .version import __version__

# public name -> (module, attribute); "layers" marks names whose module needs the upper layers plugged in
_PUBLIC: dict[str, tuple[str, str, bool]] = {
    "ForgetClassifier": ("estimators", "ForgetClassifier", True),
    "ForgetRegressor": ("estimators", "ForgetRegressor", True),
    "KeyGroups": ("grouping", "KeyGroups", False),
    "KMeansGroups": ("grouping", "KMeansGroups", False),
    "HashGroups": ("grouping", "HashGroups", False),
    "AutoGroups": ("grouping", "AutoGroups", False),
    "Report": ("report", "Report", False),
    "verify": ("verify", "verify", True),
    "forget_rows": ("estimators", "forget_rows", True),
    "plan": ("plan", "plan", True),
    "plan_file": ("plan", "plan_file", True),
    "Plan": ("plan", "Plan", True),
    "VerifyResult": ("verify", "VerifyResult", True),
    "certificate": ("verify", "certificate", True),
    "verify_certificate": ("verify", "verify_certificate", True),
    "Scorer": ("export.bundle", "Scorer", False),
    "compare": ("explain", "compare", True),
    "Comparison": ("explain", "Comparison", True),
    "suspects": ("suspects", "suspects", True),
    "Suspects": ("suspects", "Suspects", True),
    "what_if": ("suspects", "what_if", True),
    "remove_unreferenced": ("store.codec", "remove_unreferenced", True),
}
_PUBLIC.update({name: ("errors", name, False) for name in (*_errors.__all__, "EnvironmentWarning")})
# public functions named like a submodule: importing the submodule must not replace the function
_SHADOWED = frozenset(name for name, (module, _, _) in _PUBLIC.items() if module.split(".")[0] == name)


def _load_layers() -> None:
    """Import the layers above the estimators; each plugs its part in (``estimators.load_layers``: the one loader)."""
    importlib.import_module(f"{__name__}.estimators").load_layers()


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr, layers = _PUBLIC[name]
    if layers:
        _load_layers()
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule: it stays in sys.modules, the name keeps the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def read_ledger(path):
    """The committed ledger entries of a store, oldest first (the hash chain is checked)."""
    from .store import read_ledger as _read_ledger

    return _read_ledger(path)


def load(path, **kwargs):
    """Load a model from a store directory written by ``model.save``; the model stays bound to the store."""
    _load_layers()
    from .store import load as _load_store

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
    "forget_rows",
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

_logging.getLogger("clusterforget").addHandler(_logging.NullHandler())
