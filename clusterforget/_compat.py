"""Optional libraries in one place: how to import them, and how to recognise their objects.

The core needs numpy, pyarrow, scikit-learn and lightgbm only. Everything else (xgboost, pandas, polars,
and the extras of later layers: dask, onnx, onnxruntime, ...) is imported through ``optional`` so that a
missing package gives one clear message naming the extra to install, and objects of those libraries are
recognised by ``is_pandas`` / ``is_polars`` without importing them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# package -> the clusterforget extra that installs it
EXTRAS = {
    "xgboost": "xgboost",
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
}


def optional(name: str, purpose: str = "") -> ModuleType:
    """Import an optional package, or raise ``InputError`` saying which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        from .errors import InputError

        extra = EXTRAS.get(name.split(".")[0])
        hint = f"pip install 'clusterforget[{extra}]'" if extra else f"pip install {name.split('.')[0]}"
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


__all__ = ["optional", "available", "is_pandas", "is_polars", "is_scipy_sparse", "EXTRAS"]
