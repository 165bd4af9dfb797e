"""Optional libraries in one place: how to import them, and how to recognise their objects.

The core needs numpy, pyarrow, scikit-learn and lightgbm only. Everything else (pandas, polars, a learner's
library such as xgboost, and the extras of later layers: dask, onnx, onnxruntime, ...) is imported through
``optional`` so that a missing package gives one clear message naming the extra to install, and objects of those libraries are
recognised by ``is_pandas`` / ``is_polars`` without importing them.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any, NoReturn

# package -> the clusterforget extra that installs it; a learner's library is not here: its kind says
# (``members.LearnerKind.extra``) and passes the hint as ``install``
EXTRAS = {
    "pandas": "pandas",
    "polars": "polars",
    "dask": "dask",
    "distributed": "dask",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "treelite": "compiled",
    "tl2cgen": "compiled",
    "fastapi": "serve",
    "uvicorn": "serve",
    "matplotlib": "bench",
    "shap": "explain",
    "prometheus_client": "serve",
    "mlflow": "mlflow",
}


def optional(name: str, purpose: str = "", install: str | None = None) -> ModuleType:
    """Import an optional package, or raise ``InputError`` saying what installs it: ``install`` (the caller's
    pip line, e.g. a learner kind's), else the extra ``EXTRAS`` names, else the package itself."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        from .errors import InputError

        extra = EXTRAS.get(name.split(".")[0])
        hint = install or (f"pip install 'clusterforget[{extra}]'" if extra else f"pip install {name.split('.')[0]}")
        raise InputError(f"{purpose or name} needs the {name.split('.')[0]} package: {hint}") from exc


def available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _library(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def is_pandas(obj: Any) -> bool:
    """A pandas object (DataFrame, Series, Index, ...), recognised without importing pandas."""
    return _library(obj) == "pandas"


def is_polars(obj: Any) -> bool:
    return _library(obj) == "polars"


def is_scipy_sparse(obj: Any) -> bool:
    return _library(obj) == "scipy" and hasattr(obj, "tocsr")





# ---------------------------------------------------------------------------------------------- process
def passive_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy; call before an OpenMP runtime loads.

    OpenMP workers spin between parallel regions by default; beside another busy process on few cores that
    starved LightGBM (50k rows, 2 threads: over 120 s instead of 2 s). A runtime reads the variable when it
    is loaded (LightGBM's and XGBoost's on their first import), so entry points call this first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def exit_now(code: int) -> NoReturn:
    """Flush output and end the process with ``code``, skipping interpreter teardown.

    Arrow's thread pool torn down at interpreter exit can abort the process ("terminate called without an
    active exception", exit 134; apache/arrow#34314), turning a committed change into a failed command.
    Every file is already fsync'd and the lock is released by the OS, so there is nothing left to tear down.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


__all__ = ["optional", "available", "is_pandas", "is_polars", "is_scipy_sparse", "EXTRAS", "passive_openmp", "exit_now"]
