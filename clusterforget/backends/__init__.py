"""Execution backends beside the core: each provides an ``executors.Executor`` and registers it by name.

``backend="dask"`` (``backends/dask.py``) trains members as Dask tasks; importing this package never
imports dask (the factory does, when a model first asks for that backend).
"""

from .. import estimators as _estimators
from .. import executors as _executors
from . import dask as _dask

_executors.BACKENDS["dask"] = _dask.dask_executor
# a dask DataFrame or Parquet paths given to fit / add_rows are read here
_estimators.register_hook("read_input", _dask.read_input)
