"""Preprocessing inside the exactness boundary: a scikit-learn transformer fitted per group, persisted as JSON.

``preprocessor=`` (a transformer or a ``ColumnTransformer`` of the ``SUPPORTED`` ones) is cloned and fitted on
each group's rows in id order, so its fitted state is part of that group's member: a change retrains a group's
transformer with its member and no other, and the model stays a fresh fit's. A ``TargetEncoder``'s cross-fitting
shuffles its rows: unless the user fixed its folds, they are fixed to the model's seed (``fit``), so a fresh fit
reproduces them.

Persistence (no pickle, nothing loaded as code): a fitted transformer is a JSON document of its class name, from
the declared set, and its attributes, each one of a few encodings (numbers, strings, lists, tuples, dicts of
string keys, slices, numpy arrays as dtype + shape + base64 of their bytes, numpy scalar types, supported
estimators and CV splitters) and nothing else. ``to_document`` writes it with its sha256 and the scikit-learn
version; ``from_document`` checks the sha256, the version (fitted attributes are private to one scikit-learn
version), every class and encoding and the array sizes before it builds anything, then the fitted object's shape
(feature names, output width). The bytes are a function of the fitted state (sorted keys, no object ids), so two
equal fits give equal documents: the exactness tests compare them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import math
from numbers import Integral
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from ._compat import optional
from .data import Schema
from .errors import ChecksumError, ExportError, InputError

FORMAT = "clusterforget-preprocessor"
PROTOCOL = 1
# the declared set: what a member may hold, with where scikit-learn defines it (the document names the class only)
SUPPORTED = {
    "StandardScaler": "sklearn.preprocessing", "MinMaxScaler": "sklearn.preprocessing",
    "MaxAbsScaler": "sklearn.preprocessing", "RobustScaler": "sklearn.preprocessing",
    "OneHotEncoder": "sklearn.preprocessing", "OrdinalEncoder": "sklearn.preprocessing",
    "TargetEncoder": "sklearn.preprocessing", "SimpleImputer": "sklearn.impute",
    "ColumnTransformer": "sklearn.compose",
}
# held by fitted objects of the declared set, never given by the user: a ColumnTransformer's "passthrough" is a
# FunctionTransformer without a function (checked on load), a TargetEncoder's fixed folds a splitter
INTERNAL = {"FunctionTransformer": "sklearn.preprocessing", "KFold": "sklearn.model_selection",
            "StratifiedKFold": "sklearn.model_selection"}
_DTYPES = ("float64", "float32", "int64", "int32", "int8", "uint8", "bool", "object")
MAX_ARRAY = 50_000_000  # elements of one array in a document: bounds what a hostile document makes us allocate
MAX_DEPTH = 40


def _class(name: str) -> type:
    return getattr(importlib.import_module(SUPPORTED.get(name) or INTERNAL[name]), name)


def steps(est: Any, path: str = "preprocessor") -> Iterator[tuple[str, str, Any]]:
    """(where, set_params prefix, estimator) of ``est`` and of every transformer inside its ColumnTransformers."""
    yield path, "", est
    if type(est).__name__ == "ColumnTransformer":
        for name, t, _ in est.transformers:
            if not isinstance(t, str):
                for where, prefix, inner in steps(t, f"{path}[{name!r}]"):
                    yield where, f"{name}__{prefix}", inner
        if not isinstance(est.remainder, str):
            for where, prefix, inner in steps(est.remainder, f"{path}[remainder]"):
                yield where, f"remainder__{prefix}", inner


def check(est: Any) -> Any:
    """``est`` if it and every step inside it are of the declared set, else ``InputError`` naming the step."""
    if est is None:
        return None
    for where, _, step in steps(est):
        name = type(step).__name__
        if name not in SUPPORTED or type(step) is not _class(name):
            raise InputError(
                f"{where} is a {type(step).__module__}.{name}, which clusterforget does not fit inside the model: "
                f"a preprocessor is one of {sorted(SUPPORTED)} (or a ColumnTransformer of them), whose fitted state "
                "it can persist as data and refit per group; FunctionTransformer and other code are refused. Apply "
                "a stateless step before the model yourself (a Pipeline: cf.forget_rows(pipeline, ids))"
            )
        if name == "SimpleImputer" and step.add_indicator:
            raise InputError(f"{where} is a SimpleImputer(add_indicator=True), which is not supported; use "
                             "add_indicator=False (trees handle missing values themselves)")
    return est


def unfitted(est: Any) -> Any:
    """``est`` without any state it was fitted on: a clone of its parameters (what the model fits per group), so
    a spec given already fitted takes no row's value into a store or a pickle."""
    from sklearn.base import clone

    return None if est is None else clone(est, safe=False)  # safe=False: an object of another kind is copied


def frame(rows: pa.Table, schema: Schema) -> Any:
    """The feature columns of canonical ``rows`` as the pandas DataFrame a transformer reads (nulls as NaN)."""
    optional("pandas", "preprocessor=")
    return rows.select(list(schema.names)).to_pandas()


def _folds(step: Any, continuous: bool, y: np.ndarray, seed: int) -> Any:
    """A TargetEncoder's cross-fitting folds, fixed to ``seed`` (scikit-learn's default shuffles at random): the
    splitter ``check_cv`` would pick, with at most as many folds as the group's rows allow (a group too small for
    ``cv`` folds gets fewer, as a fresh fit on those rows does)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not continuous:
        largest = int(np.unique(y, return_counts=True)[1].max())
        if largest >= 2:
            return StratifiedKFold(min(int(step.cv), largest), shuffle=True, random_state=seed)
    return KFold(max(2, min(int(step.cv), len(y))), shuffle=True, random_state=seed)


def _shuffles_at_random(step: Any) -> bool:
    """Whether a TargetEncoder with an integer ``cv`` would shuffle its folds at random: its ``shuffle`` and
    ``random_state`` left at their defaults (``"deprecated"`` since scikit-learn 1.9), or absent (they go away in
    1.11, where an integer ``cv`` still shuffles). Read from its parameters, so no version is compared."""
    params = step.get_params(deep=False)
    return params.get("shuffle", True) in (True, "deprecated") and params.get("random_state") in (None, "deprecated")


def fit(spec: Any, rows: pa.Table, schema: Schema, y: np.ndarray, continuous: bool, seed: int
        ) -> tuple["Fitted", np.ndarray]:
    """A clone of ``spec`` fitted on one group's ``rows`` (in id order) and the matrix the member trains on (its
    ``fit_transform``, so a TargetEncoder's training rows get their cross-fitted encodings, as in a Pipeline)."""
    from sklearn.base import clone

    est = clone(spec)
    fixed: dict[str, Any] = {}
    for _, prefix, step in steps(est):
        if type(step).__name__ != "TargetEncoder":
            continue
        if continuous and step.target_type == "auto":  # a regressor's float targets, even when they look like classes
            fixed[prefix + "target_type"] = "continuous"
        if isinstance(step.cv, Integral) and _shuffles_at_random(step):
            fixed[prefix + "cv"] = _folds(step, continuous or step.target_type == "continuous", y, seed)
    est.set_params(**fixed)
    import warnings

    try:
        with warnings.catch_warnings():  # a small group's folds: fewer rows of a class than folds is expected
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            M = est.fit_transform(frame(rows, schema), y)
    except (ValueError, TypeError) as exc:
        raise InputError(f"the preprocessor failed on a group of {rows.num_rows} rows: {exc}") from exc
    fitted = Fitted(est, len(schema.names))
    return fitted, fitted.matrix(M)


class Fitted:
    """One group's fitted transformer, its document (``to_document``) and the member's feature schema."""

    def __init__(self, est: Any, n_inputs: int, document: dict[str, Any] | None = None):
        self.est = est
        self.document = document or to_document(est)
        self.digest = self.document["sha256"]
        self.n_inputs = n_inputs
        self.n_outputs: int | None = self.document.get("n_outputs")

    def matrix(self, M: Any) -> np.ndarray:
        if hasattr(M, "toarray"):  # a sparse output (OneHotEncoder's default)
            M = M.toarray()
        try:
            M = np.ascontiguousarray(np.asarray(M, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise InputError(f"the preprocessor's output must be numbers, got {exc}; encode text columns (e.g. "
                             "OneHotEncoder, OrdinalEncoder, TargetEncoder)") from exc
        if M.ndim != 2:
            raise InputError(f"the preprocessor's output has shape {M.shape}; it must be rows x features")
        if self.n_outputs is None:
            self.n_outputs = M.shape[1]
            self.document = to_document(self.est, M.shape[1])
            self.digest = self.document["sha256"]
        elif M.shape[1] != self.n_outputs:
            raise InputError(f"the preprocessor gave {M.shape[1]} features where it was fitted to give {self.n_outputs}")
        return M

    def schema(self) -> Schema:
        """The member's feature schema: the transformer's outputs, all numbers."""
        n = int(self.n_outputs or 0)
        return Schema(tuple(f"t{j}" for j in range(n)), ("numeric",) * n, False)

    def transform(self, rows: pa.Table, schema: Schema) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # unknown categories: the encoder's handle_unknown says
            try:
                return self.matrix(self.est.transform(frame(rows, schema)))
            except ValueError as exc:
                raise InputError(f"the preprocessor refused the rows: {exc}") from exc

    def names(self) -> list[str]:
        return [w for w, _, _ in steps(self.est)]


# ---------------------------------------------------------------------------------------------- the document
def _encode(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise InputError("a preprocessor's state is nested too deeply to store")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return {"$int": int(v)}
    if isinstance(v, (float, np.floating)):
        return {"$float": float(v).hex()}  # exact, NaN and infinities included
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "U":  # text labels (a TargetEncoder's classes_): the width kept, so equal fits stay equal
            return {"$strings": v.reshape(-1).tolist(), "shape": list(v.shape), "width": v.dtype.itemsize // 4}
        if v.dtype.name not in _DTYPES:
            raise InputError(f"a preprocessor array of dtype {v.dtype} cannot be stored")
        if v.dtype == object:
            return {"$objects": [_encode(x, depth + 1) for x in v.reshape(-1).tolist()], "shape": list(v.shape)}
        data = np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<"), copy=False).tobytes()
        return {"$array": v.dtype.name, "shape": list(v.shape), "data": base64.b64encode(data).decode("ascii")}
    if isinstance(v, np.dtype):
        return {"$dtype": v.name}
    if isinstance(v, type) and issubclass(v, np.generic):
        return {"$scalar_type": np.dtype(v).name}
    if isinstance(v, tuple):
        return {"$tuple": [_encode(x, depth + 1) for x in v]}
    if isinstance(v, list):
        return [_encode(x, depth + 1) for x in v]
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {"$dict": {k: _encode(x, depth + 1) for k, x in v.items()}}
        if all(isinstance(k, (str, int, np.integer)) and not isinstance(k, (bool, np.bool_)) for k in v):
            return {"$items": [[k if isinstance(k, str) else int(k), _encode(x, depth + 1)] for k, x in v.items()]}
        raise InputError(f"a preprocessor dict with keys {list(v)[:5]!r} cannot be stored")
    if isinstance(v, slice):
        return {"$slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    name = type(v).__name__
    if (name in SUPPORTED or name in INTERNAL) and type(v) is _class(name):
        if name == "FunctionTransformer" and (v.func is not None or v.inverse_func is not None):
            raise InputError("a FunctionTransformer with a function cannot be stored: it is code")
        return {"$estimator": name, "state": {k: _encode(x, depth + 1) for k, x in sorted(vars(v).items())}}
    raise InputError(f"a preprocessor attribute of type {type(v).__module__}.{name} cannot be stored as data")


def _decode(v: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    budget = [MAX_ARRAY] if budget is None else budget
    if depth > MAX_DEPTH:
        raise ChecksumError("a preprocessor document is nested too deeply")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, list):
        return [_decode(x, depth + 1, budget) for x in v]
    if not isinstance(v, dict) or len(v) == 0:
        raise ChecksumError(f"a preprocessor document holds {type(v).__name__} {str(v)[:80]!r} where it holds "
                            "encoded values only")
    tag = next(iter(sorted(k for k in v if k.startswith("$"))), None)
    if tag == "$int" and set(v) == {"$int"} and type(v["$int"]) is int:
        return v["$int"]
    if tag == "$float" and set(v) == {"$float"} and isinstance(v["$float"], str) and len(v["$float"]) < 40:
        try:
            return float.fromhex(v["$float"])
        except ValueError:
            pass
    elif tag in ("$array", "$objects", "$strings") and set(v) == {"$array": {tag, "shape", "data"}, "$objects": {
            tag, "shape"}, "$strings": {tag, "shape", "width"}}[tag]:
        shape = v["shape"]
        if not (isinstance(shape, list) and len(shape) <= 3 and all(type(s) is int and 0 <= s <= MAX_ARRAY
                                                                    for s in shape)):
            raise ChecksumError(f"a preprocessor array has shape {str(shape)[:80]}")
        size = math.prod(shape)
        budget[0] -= size
        if budget[0] < 0:
            raise ChecksumError(f"a preprocessor document holds more than {MAX_ARRAY} array elements")
        if tag == "$strings":
            items, width = v["$strings"], v["width"]
            if not (isinstance(items, list) and len(items) == size and all(isinstance(x, str) for x in items)
                    and type(width) is int and 0 < width <= 10_000 and all(len(x) <= width for x in items)):
                raise ChecksumError(f"a preprocessor text array of shape {shape} is not {size} strings of width "
                                    f"{str(width)[:20]}")
            budget[0] -= size * width
            return np.array(items, dtype=f"<U{width}").reshape(shape)
        if tag == "$objects":
            items = v["$objects"]
            if not (isinstance(items, list) and len(items) == size):
                raise ChecksumError(f"a preprocessor object array of shape {shape} holds {len(items)} values")
            values = [_decode(x, depth + 1, budget) for x in items]
            if not all(x is None or isinstance(x, (str, float, int, bool)) for x in values):
                raise ChecksumError("a preprocessor object array holds values other than strings and numbers")
            out = np.empty(size, dtype=object)
            out[:] = values
            return out.reshape(shape)
        if v["$array"] not in _DTYPES or v["$array"] == "object" or not isinstance(v["data"], str):
            raise ChecksumError(f"a preprocessor array of dtype {str(v['$array'])[:40]!r} is not supported")
        dtype = np.dtype(v["$array"]).newbyteorder("<")
        try:
            data = base64.b64decode(v["data"], validate=True)
        except ValueError as exc:
            raise ChecksumError(f"a preprocessor array is not base64: {exc}") from None
        if len(data) != size * dtype.itemsize:
            raise ChecksumError(f"a preprocessor array of shape {shape} has {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    elif tag == "$dtype" and set(v) == {"$dtype"} and v["$dtype"] in _DTYPES:
        return np.dtype(v["$dtype"])
    elif tag == "$scalar_type" and set(v) == {"$scalar_type"} and v["$scalar_type"] in _DTYPES[:-1]:
        return np.dtype(v["$scalar_type"]).type
    elif tag == "$tuple" and set(v) == {"$tuple"} and isinstance(v["$tuple"], list):
        return tuple(_decode(x, depth + 1, budget) for x in v["$tuple"])
    elif tag == "$dict" and set(v) == {"$dict"} and isinstance(v["$dict"], dict):
        return {k: _decode(x, depth + 1, budget) for k, x in v["$dict"].items()}
    elif tag == "$items" and set(v) == {"$items"} and isinstance(v["$items"], list) and all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) in (int, str) for p in v["$items"]):
        return {k: _decode(x, depth + 1, budget) for k, x in v["$items"]}
    elif tag == "$slice" and set(v) == {"$slice"} and isinstance(v["$slice"], list) and len(v["$slice"]) == 3:
        parts = [_decode(x, depth + 1, budget) for x in v["$slice"]]
        if all(p is None or type(p) is int for p in parts):
            return slice(*parts)
    elif tag == "$estimator" and set(v) == {"$estimator", "state"} and isinstance(v["state"], dict):
        name = v["$estimator"]
        if name not in SUPPORTED and name not in INTERNAL:
            raise ChecksumError(f"a preprocessor document names the class {str(name)[:80]!r}, which is not one of "
                                f"the supported {sorted(SUPPORTED)}")
        cls = _class(name)
        # instance attributes only: a key naming a method or class attribute would shadow it with data
        bad = [k for k in v["state"] if not k.isidentifier() or k.startswith("__") or hasattr(cls, k)]
        if bad:
            raise ChecksumError(f"a preprocessor document sets {str(bad[:3])[:80]} on a {name}, which are not "
                                "fitted attributes or parameters")
        obj = cls.__new__(cls)  # no constructor runs: the state is set as data, as unpickling would, minus code
        state = {k: _decode(x, depth + 1, budget) for k, x in v["state"].items()}
        if name == "FunctionTransformer" and (state.get("func") is not None or state.get("inverse_func") is not None):
            raise ChecksumError("a preprocessor document holds a FunctionTransformer with a function")
        obj.__dict__.update(state)
        return obj
    raise ChecksumError(f"a preprocessor document holds an unknown encoding {str(sorted(v))[:80]}")


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def other_version(doc: Any) -> str | None:
    """The scikit-learn version a preprocessor document names, when it is not the one installed here (cut to 40
    characters: it comes from a file)."""
    named = doc.get("sklearn") if isinstance(doc, dict) else None
    return None if named is None or named == _sklearn_version() else str(named)[:40]


def installed_version() -> str:
    return _sklearn_version()


def _rebuilt(v: Any, where: str) -> Any:
    """An unfitted spec decoded from another scikit-learn version's document, built again by this version's
    constructors from its parameters (a parameter this version no longer takes is dropped when it was left at
    scikit-learn's ``"deprecated"`` default, and refused otherwise)."""
    if isinstance(v, list):
        return [_rebuilt(x, where) for x in v]
    if isinstance(v, tuple):
        return tuple(_rebuilt(x, where) for x in v)
    name = type(v).__name__
    if name not in SUPPORTED or type(v) is not _class(name):
        return v
    cls, given = type(v), vars(v)
    accepted = set(cls._get_param_names())
    gone = {k: x for k, x in given.items() if k not in accepted and not (isinstance(x, str) and x == "deprecated")}
    if gone:
        raise InputError(f"{where} ({name}) was given {', '.join(f'{k}={x!r}' for k, x in sorted(gone.items()))[:200]}, "
                         f"which scikit-learn {_sklearn_version()} does not take; fit a new model with a "
                         "preprocessor= this version accepts")
    return cls(**{k: _rebuilt(x, f"{where}[{k!r}]") for k, x in given.items() if k in accepted})


def spec_from_document(doc: Any) -> Any:
    """The unfitted ``preprocessor=`` spec of a document: checked as ``from_document`` does, or, when the document
    names another scikit-learn version (``other_version``), checked by its sha256 and encodings and built again from
    its parameters by this version (an unfitted transformer holds its parameters only). Used to refit a store."""
    if other_version(doc) is None:
        return from_document(doc)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("protocol") != PROTOCOL:
        raise ChecksumError(f"not a {FORMAT} document of protocol {PROTOCOL}")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest() != doc.get("sha256"):
        raise ChecksumError("a preprocessor document does not match its sha256: it was altered")
    return check(_rebuilt(_decode(doc.get("object")), "preprocessor"))


def to_document(est: Any, n_outputs: int | None = None) -> dict[str, Any]:
    """A fitted (or unfitted) transformer as a JSON-ready document with its sha256."""
    body = {"format": FORMAT, "protocol": PROTOCOL, "sklearn": _sklearn_version(), "n_outputs": n_outputs,
            "object": _encode(est)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {**body, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def from_document(doc: Any, schema: Schema | None = None) -> Any:
    """The transformer of a document, checked (sha256, scikit-learn version, encodings, classes) before any object
    is built; with ``schema``, its fitted feature names and count are checked against the model's."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("protocol") != PROTOCOL:
        raise ChecksumError(f"not a {FORMAT} document of protocol {PROTOCOL}")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    if not isinstance(doc.get("sha256"), str) or hashlib.sha256(text.encode()).hexdigest() != doc["sha256"]:
        raise ChecksumError(f"a preprocessor document does not match its sha256: it was altered; {ALTERED}")
    if doc.get("sklearn") != _sklearn_version():
        raise ChecksumError(
            f"the preprocessor was fitted with scikit-learn {str(doc.get('sklearn'))[:40]}, this is "
            f"{_sklearn_version()}: its fitted attributes are private to that version; install "
            f"scikit-learn=={str(doc.get('sklearn'))[:40]} to score or change this model")
    try:
        return _checked(doc, schema)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; {ALTERED}") from None
    except (InputError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # a declared class holding attributes of the wrong type (or none): the checks' own failure
        raise ChecksumError(f"a preprocessor document does not hold a usable transformer ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); {ALTERED}") from None


# what to do about a document that was re-signed or edited: it is not what clusterforget wrote
ALTERED = "the store or export holding it was altered or damaged: restore it from a copy you trust, or fit the model again"


def _checked(doc: dict[str, Any], schema: Schema | None) -> Any:
    n_outputs = doc.get("n_outputs")
    if not (n_outputs is None or (type(n_outputs) is int and 0 < n_outputs <= 1_000_000)):
        raise ChecksumError(f"a preprocessor document gives {str(n_outputs)[:40]} outputs")
    est = _decode(doc.get("object"))
    if type(est).__name__ not in SUPPORTED:
        raise ChecksumError(f"a preprocessor document holds a {type(est).__name__}, not a supported transformer")
    check(est)
    if schema is not None and n_outputs is not None:
        names = getattr(est, "feature_names_in_", None)
        if getattr(est, "n_features_in_", None) != len(schema.names) or (
                names is not None and [str(n) for n in names] != list(schema.names)):
            raise ChecksumError(f"a member's preprocessor was fitted on other columns than the model's "
                                f"{list(schema.names)[:20]}")
    return est


def fitted_from_document(doc: Any, schema: Schema | None = None) -> Fitted:
    est = from_document(doc, schema)
    if doc.get("n_outputs") is None:
        raise ChecksumError("a member's preprocessor document does not say how many features it gives")
    return Fitted(est, len(est.feature_names_in_) if hasattr(est, "feature_names_in_") else 0, doc)


# fitted attributes that count or name columns and rows: never a row's value
_NOT_VALUES = {"n_features_in_", "n_samples_seen_", "feature_names_in_"}
# where the declared set keeps a row's own value of an integer column; elsewhere integers are counts and indices
_ROW_INTEGERS = {"categories_", "statistics_"}


def held_values(doc: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(field, values) of every fitted attribute of a preprocessor document that can hold a training row's value:
    numbers (``$float``, numeric arrays decoded from their base64) and text (object and text arrays), read from the
    encoded document without building any object. A constructor parameter is the user's setting, not a row's, and
    is skipped, and so are counts and column names (``_NOT_VALUES``); integers count only in ``_ROW_INTEGERS``.
    ``ChecksumError`` on an encoding it cannot read (the purge check cannot then say what the document holds)."""
    if not isinstance(doc, dict):
        raise ChecksumError(f"a preprocessor document is a {type(doc).__name__}, not a document")
    yield from _values(doc.get("object"), "", False, 0, [MAX_ARRAY])


def _values(v: Any, where: str, ints: bool, depth: int, budget: list[int]) -> Iterator[tuple[str, np.ndarray]]:
    if depth > MAX_DEPTH:
        raise ChecksumError(f"a preprocessor document is nested too deeply at {where[:200]}")
    if v is None or isinstance(v, (bool, str)):
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            yield from _values(x, f"{where}[{i}]", ints, depth + 1, budget)
        return
    tag = next(iter(sorted(k for k in v if k.startswith("$"))), None) if isinstance(v, dict) else None
    if tag in ("$int", "$float", "$dtype", "$scalar_type", "$slice") and len(v) == 1:
        if tag == "$int" and ints and type(v["$int"]) is int:
            yield where, np.array([v["$int"]], dtype=np.float64)
        elif tag == "$float" and isinstance(v["$float"], str) and len(v["$float"]) < 40:
            try:
                yield where, np.array([float.fromhex(v["$float"])])
            except ValueError:
                raise ChecksumError(f"a preprocessor number at {where[:200]} is {v['$float']!r}") from None
    elif tag in ("$array", "$objects", "$strings"):
        decoded = _decode(v, depth, budget)  # the loader's own checks: shape, size, dtype, base64
        if decoded.dtype.kind in "fOU" + ("iu" if ints else ""):  # integers only where a row keeps its own (ints)
            yield where, decoded.reshape(-1)
    elif tag in ("$tuple", "$items", "$dict") and len(v) == 1:
        parts = v[tag]
        if not isinstance(parts, dict if tag == "$dict" else list) or tag == "$items" and not all(
                isinstance(p, list) and len(p) == 2 for p in parts):
            raise ChecksumError(f"a preprocessor document holds {tag} of {type(parts).__name__} at {where[:200]}")
        items = parts.items() if tag == "$dict" else enumerate(parts) if tag == "$tuple" else parts
        for k, x in items:
            yield from _values(x, f"{where}[{k!r}]", ints, depth + 1, budget)
    elif tag == "$estimator" and set(v) == {"$estimator", "state"} and isinstance(v["state"], dict):
        name = v["$estimator"]
        if name not in SUPPORTED and name not in INTERNAL:
            raise ChecksumError(f"a preprocessor document names the class {str(name)[:80]!r} at {where[:200]}")
        cls = _class(name)
        params = set(cls._get_param_names())
        for k, x in sorted(v["state"].items()):
            if k not in params and k not in _NOT_VALUES:
                yield from _values(x, f"{where}.{k}" if where else k, k in _ROW_INTEGERS, depth + 1, budget)
    else:
        raise ChecksumError(f"a preprocessor document holds an unknown encoding {str(sorted(v))[:80]} at "
                            f"{where[:200]}" if isinstance(v, dict) else f"a preprocessor document holds "
                            f"{type(v).__name__} at {where[:200]}")


def refuse_export(fitted: Fitted, fmt: str) -> None:
    """``ExportError`` naming the steps a format cannot express (no converter of a preprocessor step exists here)."""
    named = ", ".join(f"{where} ({type(step).__name__})" for where, _, step in steps(fitted.est))
    raise ExportError(f"format={fmt!r} has no converter for the preprocessor step(s) {named}; export "
                      "format='bundle' (cf.Scorer scores it with the preprocessor) or 'compiled'")


__all__ = ["SUPPORTED", "check", "unfitted", "fit", "Fitted", "to_document", "from_document", "fitted_from_document", "steps",
           "frame", "held_values", "refuse_export", "other_version", "installed_version", "spec_from_document"]
