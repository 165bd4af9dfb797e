"""Execution backends beside the core: each provides an ``executors.Executor`` and estimators that use it."""
