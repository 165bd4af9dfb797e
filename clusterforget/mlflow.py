"""The MLflow flavor: a fitted model as an MLflow Model whose artifact is the bundle export, never the rows.

Written as MLflow's own flavors are (``mlflow/lightgbm/__init__.py``): ``FLAVOR_NAME``, ``save_model``,
``log_model``, ``load_model`` and the pyfunc loader ``_load_pyfunc``. The artifact directory holds::

    MLmodel                 flavors "clusterforget" and "python_function" (loader: this module)
    bundle/                 the bundle export (``model.export(path, format="bundle")``): manifest, schema,
                            routing, members' native files; no training row, no row id
    requirements.txt, python_env.yaml, conda.yaml

``load_model(uri)`` gives a ``cf.Scorer`` (it verifies every file's sha256); ``mlflow.pyfunc.load_model(uri)``
scores bitwise as the model: class probabilities for a classifier (``predict_output="labels"`` at save time, or
``params={"output": "labels"}`` at predict time, gives labels), values for a regressor.

``publish(model, name, alias="champion")`` is how a deletion reaches the registry: it logs the model's current
version, registers it under ``name``, moves the alias to it and, with ``retire_previous=True``, deletes the
artifacts of every earlier version (their members were trained on rows since forgotten) and says which.
Pickle is never used: a logged model is read back by parsing its manifest and native files only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._compat import optional
from .errors import ExportError, InputError
from .export import Scorer
from .export._files import provenance
from .export.bundle import LOCK, write_bundle
from .members import DEFAULT_LEARNER, distributions
from .version import __version__

FLAVOR_NAME = "clusterforget"
BUNDLE = "bundle"
OUTPUTS = ("probabilities", "labels")
# registry tags a version carries: which model state it holds (an auditor reads them without the artifact)
TAG_MODEL_VERSION = "clusterforget.model_version"
TAG_STORE_VERSION = "clusterforget.store_version"
TAG_LEDGER_HEAD = "clusterforget.ledger_head"
TAG_RETIRED = "clusterforget.retired"
log = logging.getLogger("clusterforget.mlflow")


def _mlflow() -> Any:
    return optional("mlflow", "the MLflow flavor")


def _check_output(output: Any) -> str:
    if output not in OUTPUTS:
        raise InputError(f"predict_output={output!r} is not an option; use 'probabilities' (classifiers' default) "
                         "or 'labels'")
    return output


def provenance_tags(manifest: dict[str, Any]) -> dict[str, str]:
    """The tags of a bundle's manifest: model version, and the bound store's version and ledger head."""
    store = manifest.get("store") or {}
    return {
        TAG_MODEL_VERSION: str(manifest["model_version"]),
        TAG_STORE_VERSION: "" if store.get("version") is None else str(store["version"]),
        TAG_LEDGER_HEAD: store.get("ledger_head") or "",
    }


def get_default_pip_requirements(manifest: dict[str, Any] | None = None) -> list[str]:
    """What an environment scoring this flavor needs (``save_model`` writes it to ``requirements.txt``), pinned to
    the versions installed here: clusterforget, numpy, pyarrow and the libraries of the learners whose members a
    bundle ``manifest`` holds (their kinds', ``members.LearnerKind.libraries``: the distribution installed here,
    xgboost-cpu or xgboost), and scikit-learn when a member has a preprocessor (scoring runs its transformer).
    Without a manifest: the default learner's."""
    from mlflow.utils.requirements_utils import _get_pinned_requirement

    metas = [m["meta"] for m in manifest["members"]] if manifest is not None else []
    learners = dict.fromkeys(m["learner"] for m in metas) if manifest is not None else [DEFAULT_LEARNER]
    libraries = distributions(learners)
    if any("preprocessor" in m for m in metas):
        libraries.setdefault("sklearn", "scikit-learn")
    return [f"clusterforget=={__version__}",
            *(_get_pinned_requirement(dist, module=lib) for lib, dist in libraries.items()),
            *(_get_pinned_requirement(p) for p in ("numpy", "pyarrow"))]


def name_filter(name: str) -> str:
    """The registry search filter ``name = '<name>'``: MLflow strips one pair of quotes and unescapes nothing, so
    a name holding ``'`` is quoted with ``"``; one holding both cannot be searched and is refused (``InputError``)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"registered model name {name!r} is not usable; pass a non-empty string")
    for quote in ("'", '"'):
        if quote not in name:
            return f"name = {quote}{name}{quote}"
    raise InputError(f"registered model name {name!r} holds both ' and \"; MLflow's registry search cannot match "
                     "it: use a name without one of them")


def _signature(columns: list[str]) -> Any:
    """The input columns of the bundle, each optional and of any type, and the ``output`` parameter.

    Any type, because MLflow's enforcement refuses an int64 column against "double" ("cannot safely convert"),
    and the scorer converts and checks each column itself (numbers, strings, null).
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    cols = [ColSpec(AnyType(), name, required=False) for name in columns]
    params = ParamSchema([ParamSpec("output", "string", "")])
    return ModelSignature(inputs=Schema(cols), params=params)


def save_model(model: Any, path: Any, mlflow_model: Any = None, signature: Any = None, input_example: Any = None,
               predict_output: str | None = None, pip_requirements: Any = None, extra_pip_requirements: Any = None,
               metadata: dict | None = None) -> None:
    """Save a fitted ``ForgetClassifier`` / ``ForgetRegressor`` as an MLflow Model directory at ``path``.

    Parameters
    ----------
    model : a fitted clusterforget estimator
    path : str or Path
        A new directory (MLflow refuses an existing, non-empty one).
    signature : mlflow.models.ModelSignature, optional
        Default: the bundle's column names (any type: the scorer checks values) and the ``output``
        parameter. ``False`` saves none.
    input_example : optional
        Saved into the artifact as MLflow does: it then holds those rows' feature values, so never pass rows
        that may later be forgotten.
    predict_output : {"probabilities", "labels"}, default "probabilities" for classifiers
        What pyfunc ``predict`` returns for a classifier (``params={"output": ...}`` overrides it per call).
    """
    mlflow = _mlflow()
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.utils.environment import (_CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME, _REQUIREMENTS_FILE_NAME,
                                          _mlflow_conda_env, _process_pip_requirements, _PythonEnv)
    from mlflow.utils.model_utils import _validate_and_prepare_target_save_path

    output = _check_output(predict_output or "probabilities")
    path = os.path.abspath(str(path))
    _validate_and_prepare_target_save_path(path)
    doc = write_bundle(model, os.path.join(path, BUNDLE))
    Path(path, BUNDLE, LOCK).unlink(missing_ok=True)  # the export's lock file: nothing to ship
    if mlflow_model is None:
        mlflow_model = Model()
    _save_example(mlflow_model, input_example, path)
    if signature is None:
        signature = _signature(doc["schema"]["names"])  # the columns of the manifest just written
    if signature is not False:
        mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata
    tags = provenance_tags(doc)
    add_to_model(mlflow_model, loader_module="clusterforget.mlflow", data=BUNDLE, conda_env=_CONDA_ENV_FILE_NAME,
                 python_env=_PYTHON_ENV_FILE_NAME)

    mlflow_model.add_flavor(
        FLAVOR_NAME,
        clusterforget_version=__version__,
        data=BUNDLE,
        task=doc["task"],
        estimator=doc["estimator"],
        predict_output=output,
        model_version=int(doc["model_version"]),
        store_version=tags[TAG_STORE_VERSION] or None,
        ledger_head=tags[TAG_LEDGER_HEAD] or None,
    )
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
    conda_env, reqs, _ = _process_pip_requirements(
        get_default_pip_requirements(doc) if pip_requirements is None else None, pip_requirements,
        extra_pip_requirements
    )
    import yaml

    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
        yaml.safe_dump(conda_env or _mlflow_conda_env(additional_pip_deps=reqs), stream=f, default_flow_style=False)
    Path(path, _REQUIREMENTS_FILE_NAME).write_text("\n".join(reqs))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))
    del mlflow


def log_model(model: Any, name: str = "model", registered_model_name: str | None = None, signature: Any = None,
              input_example: Any = None, predict_output: str | None = None, tags: dict[str, Any] | None = None,
              await_registration_for: int = 300, **kwargs: Any) -> Any:
    """Log a fitted model as an MLflow Model (see ``save_model``); returns MLflow's ``ModelInfo``.

    ``registered_model_name`` also registers it (a new version of that registered model). The logged model
    carries the model version, store version and ledger head as tags (``clusterforget.*``). The artifact holds no
    training row and no training range (``members.neutral_feature_infos``; a ``preprocessor=``'s fitted state,
    which scoring reads, excepted), nor an ``input_example``'s rows unless one is passed: MLflow
    saves its rows into the artifact, so pass made-up rows, never rows that may be forgotten.
    """
    mlflow = _mlflow()
    flavor = sys.modules[__name__]  # this module: MLflow calls its save_model

    prov = provenance_tags(provenance(model, "mlflow"))
    return mlflow.models.Model.log(
        artifact_path=None, name=name, flavor=flavor, registered_model_name=registered_model_name, model=model, signature=signature,
        input_example=input_example, predict_output=predict_output, await_registration_for=await_registration_for,
        tags={**prov, **(tags or {})}, **kwargs,
    )


def _bundle_dir(local_path: str) -> str:
    from mlflow.utils.model_utils import _get_flavor_configuration

    conf = _get_flavor_configuration(model_path=local_path, flavor_name=FLAVOR_NAME)
    return os.path.join(local_path, conf.get("data", BUNDLE))


def load_model(model_uri: str, dst_path: str | None = None) -> Scorer:
    """Load a logged model as a ``cf.Scorer`` (verified; bitwise as the model's ``predict`` / ``predict_proba``).

    ``model_uri``: ``runs:/<run>/model``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``, a local path.
    """
    _mlflow()
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    return Scorer(_bundle_dir(local))


class _PyFuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict(data, params)`` through ``cf.Scorer``."""

    def __init__(self, scorer: Scorer, output: str):
        self.scorer = scorer
        self.output = output

    def get_raw_model(self) -> Scorer:
        return self.scorer

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        output = _check_output((params or {}).get("output") or self.output)
        if self.scorer.spec.task != "classification" or output == "labels":
            return self.scorer.predict(data)
        return self.scorer.predict_proba(data)


def _load_pyfunc(path: str) -> _PyFuncModel:
    """The pyfunc loader (``mlflow.pyfunc.load_model`` calls it with the ``bundle`` data directory)."""
    from mlflow.utils.model_utils import _get_flavor_configuration

    root = os.path.dirname(path) if os.path.basename(os.path.normpath(path)) == BUNDLE else path
    conf = _get_flavor_configuration(model_path=root, flavor_name=FLAVOR_NAME)
    return _PyFuncModel(Scorer(os.path.join(root, conf.get("data", BUNDLE))), conf.get("predict_output",
                                                                                          "probabilities"))


# ---------------------------------------------------------------------------------------------- the registry
@dataclass
class Published:
    """What ``publish`` did: the version registered, where the alias points, which versions were retired."""

    name: str
    version: int
    alias: str
    model_uri: str
    model_version: int
    retired: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = f"published {self.name} version {self.version} (model version {self.model_version}) as @{self.alias}"
        if self.retired:
            text += f"; deleted the artifacts of version(s) {self.retired}"
        return text


def _delete_artifacts(client: Any, name: str, version: str) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    uri = client.get_model_version_download_uri(name, version)
    get_artifact_repository(uri).delete_artifacts()


def publish(model: Any, name: str, alias: str = "champion", *, retire_previous: bool = False,
            client: Any = None) -> Published:
    """Log the model's current version to the registry as a new version of ``name`` and move ``alias`` to it.

    Call it after each change (``forget_rows``, ``relabel``, ...). With ``retire_previous=True`` the artifacts
    of every earlier version of ``name`` are deleted from the artifact store (they hold members trained on
    rows since forgotten); those versions stay in the registry tagged ``clusterforget.retired`` and are listed
    in the result. Aliases, not the deprecated stages, mark what serves (``models:/name@alias``).
    """
    search = name_filter(name)  # before anything is logged: a name the registry cannot search is refused
    mlflow = _mlflow()
    client = client or mlflow.MlflowClient()
    t0 = time.perf_counter()
    active = mlflow.active_run()
    run = None if active is not None else mlflow.start_run(run_name=f"{name} publish")
    try:
        info = log_model(model, name="model", registered_model_name=name)
    finally:
        if run is not None:
            mlflow.end_run()
    version = str(info.registered_model_version)  # registered with the provenance tags (log_model)
    client.set_registered_model_alias(name, alias, version)
    retired: list[int] = []
    if retire_previous:
        for mv in client.search_model_versions(search):
            if int(mv.version) >= int(version) or (mv.tags or {}).get(TAG_RETIRED) == "true":
                continue
            _delete_artifacts(client, name, mv.version)
            client.set_model_version_tag(name, mv.version, TAG_RETIRED, "true")
            retired.append(int(mv.version))
        retired.sort()
    out = Published(name=name, version=int(version), alias=alias, model_uri=f"models:/{name}@{alias}",
                    model_version=int(model.version_), retired=retired, seconds=time.perf_counter() - t0)
    log.info("publish name=%s version=%s alias=%s model_version=%s retired=%s seconds=%.3f", name, version, alias,
             out.model_version, retired, out.seconds)
    return out


def resolve(model_uri: str, client: Any = None) -> tuple[str, int]:
    """``models:/name@alias`` (or ``models:/name/version``) -> (name, version number it points to now)."""
    mlflow = _mlflow()
    if not model_uri.startswith("models:/"):
        raise InputError(f"{model_uri!r} is not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    rest = model_uri[len("models:/"):]
    client = client or mlflow.MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, int(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.partition("/")
    if not version.isdigit():
        raise InputError(f"{model_uri!r}: use models:/NAME@ALIAS or models:/NAME/VERSION (a version number)")
    return name, int(version)


def download_bundle(name: str, version: int, into: Any) -> Path:
    """Download version ``version`` of registered model ``name`` into ``into``; returns its bundle directory."""
    mlflow = _mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(into))
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own and requests' errors
        raise ExportError(f"version {version} of registered model {name!r} cannot be downloaded ({exc})") from exc
    return Path(_bundle_dir(local))


__all__ = ["FLAVOR_NAME", "save_model", "log_model", "load_model", "publish", "Published", "resolve",
           "get_default_pip_requirements"]
