"""The error family: one root, typed subclasses whose messages quote the bad value and say what to do."""

from __future__ import annotations

import threading
from typing import Any



class ClusterForgetError(Exception):
    """Root of every error raised on purpose by clusterforget."""


class InputError(ClusterForgetError, ValueError):
    """Training or prediction input is malformed (types, shapes, labels, parameters)."""


class SchemaError(InputError):
    """Columns at predict or update time differ from the columns seen at fit time."""


class DuplicateIdError(InputError):
    """Row ids are not unique, or new rows reuse ids the model already holds."""


class UnknownIdError(ClusterForgetError, KeyError):
    """A row id passed to an operation is not held by the model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownGroupError(ClusterForgetError, KeyError):
    """A group key passed to an operation is not a group of the model."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EmptyModelError(ClusterForgetError, ValueError):
    """The operation would leave the model with no training rows."""


class TombstoneError(ClusterForgetError, ValueError):
    """New rows reuse ids of rows that were forgotten earlier."""


class RuleError(ClusterForgetError, ValueError):
    """A relabel rule cannot be parsed or does not fit the model's columns."""


class ExportError(ClusterForgetError, ValueError):
    """A model cannot be exported in the asked format exactly, or an export cannot be read."""


class PipelineStateError(ClusterForgetError, ValueError):
    """A scikit-learn Pipeline step before the model holds state fitted on the rows: forgetting through the model
    alone would leave the forgotten rows in that step."""


class StoreError(ClusterForgetError, OSError):
    """A model store cannot be read or written."""


class ChecksumError(StoreError):
    """A file in a model store does not match the checksum in its manifest."""


class AuthenticationError(ChecksumError):
    """An authenticated store fails its HMAC under the key given, or a key and the store do not match."""


class VersionError(StoreError):
    """A store holds state that only another version of a library reads (a preprocessor fitted under another
    scikit-learn): install that version, or refit the members from the stored rows (``cf.load(path, refit=True)``)."""


class LockError(StoreError):
    """Another writer holds the store's lock."""


class CertificateError(ClusterForgetError, ValueError):
    """A deletion certificate cannot be issued or read (no key, no such request, not a certificate)."""


class ClusterError(ClusterForgetError, RuntimeError):
    """A cluster backend could not run an operation's tasks (its workers kept dying); nothing was changed."""


class RowsLostError(ClusterError):
    """Tables of rows a model keeps on a cluster were lost with a worker; nothing was changed.

    A model bound to a store gets them back from the store's files (and the operation runs again) by itself."""


class NoOutOfSampleError(ClusterForgetError, ValueError):
    """The model has no member that did not train on the rows to score (one member): ``suspects`` cannot rank them
    out of sample."""


class ScoringOnlyError(ClusterForgetError, TypeError):
    """The model was unpickled: a pickle holds what scoring reads (the bundle export's members and routing), never
    the training rows, so the model scores but cannot forget, relabel, add rows or report on its rows. Changes go
    through the store: ``model.save(path)`` before pickling, ``cf.load(path)`` after."""


class EnvironmentWarning(UserWarning):
    """The libraries installed here differ from those a store was written with: retraining its members may not
    reproduce them bit for bit (the ``exact`` check then fails, naming each difference and the install line)."""



def short(text: Any, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters: a message never carries the whole of a hostile value."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: Any, limit: int = 80) -> str:
    """A bad value quoted (its ``repr``) in a message, cut to ``limit`` characters."""
    return short(repr(value), limit)


def _sklearn_based() -> dict[str, type]:
    """The two errors that are also scikit-learn's (``except sklearn.exceptions.NotFittedError`` catches ours).

    Built on first use, so that scoring an export (``cf.Scorer``) never imports scikit-learn.
    """
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
    from sklearn.utils._param_validation import InvalidParameterError as _SklearnInvalidParameterError

    class NotFittedError(ClusterForgetError, _SklearnNotFittedError):
        """The model was used before ``fit`` (or ``load``)."""

    class ParameterError(InputError, _SklearnInvalidParameterError):
        """A constructor parameter has a value the estimator does not accept (scikit-learn's parameter check)."""

    for cls in (NotFittedError, ParameterError):
        cls.__qualname__ = cls.__name__  # as if defined at module level (tracebacks, pickling)
    return {"NotFittedError": NotFittedError, "ParameterError": ParameterError}


_LOCK = threading.Lock()


def __getattr__(name: str) -> type:
    if name in ("NotFittedError", "ParameterError"):
        with _LOCK:  # one class per name, whichever thread asks first
            if name not in globals():
                globals().update(_sklearn_based())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NoOutOfSampleError",
    "ScoringOnlyError",
    "ClusterError",
    "RowsLostError",
    "ClusterForgetError",
    "NotFittedError",
    "InputError",
    "ParameterError",
    "SchemaError",
    "DuplicateIdError",
    "UnknownIdError",
    "UnknownGroupError",
    "EmptyModelError",
    "TombstoneError",
    "RuleError",
    "ExportError",
    "PipelineStateError",
    "StoreError",
    "ChecksumError",
    "AuthenticationError",
    "LockError",
    "VersionError",
    "CertificateError",
]
