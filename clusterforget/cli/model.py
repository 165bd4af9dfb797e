"""Commands that build or read a model: fit, predict, info, ledger, demo."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..members import CLASSIFICATION_SCORINGS, DEFAULT_LEARNER, REGRESSION_SCORINGS, learner_names
from .app import cli, console, echo_json, interactive, json_option, load_model, say, table, text
from .io import features, read_table, write_table


def _columns(values: tuple[str, ...]) -> list[str]:
    """Column names given as ``--drop a --drop b`` or ``--drop a,b``."""
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _split_target(data: pa.Table, target: str, id_column: str | None, drop: list[str] | None = None,
                  keep: list[str] | None = None, weight_column: str | None = None) -> tuple[pa.Table, np.ndarray, Any]:
    """Features, labels and ids of a data file: the features are every other column, or ``keep``, less ``drop``
    (and less ``weight_column``, the rows' sample weights, which ``sample_weights`` reads)."""
    named = [target] + ([id_column] if id_column else []) + list(drop or []) + list(keep or [])
    named += [weight_column] if weight_column else []
    for col in named:
        if col not in data.column_names:
            raise InputError(f"column {col!r} is not in the data; columns are {data.column_names!r}")
    if weight_column is not None and weight_column in (target, id_column):
        raise InputError(f"--weight-column {weight_column!r} is also the "
                         f"{'target' if weight_column == target else 'id column'}; name another column")
    roles = {target: "target", id_column: "id column", weight_column: "weight column"}
    for col in keep or []:
        if col in roles:
            raise InputError(f"--features names {col!r}, which is the {roles[col]}; a model must not be trained on it")
    y = data.column(target).to_numpy(zero_copy_only=False)
    ids = data.column(id_column) if id_column else None
    features = [c for c in data.column_names if c not in roles] if not keep else list(dict.fromkeys(keep))
    features = [c for c in features if c not in set(drop or [])]
    if not features:
        raise InputError("no feature column is left after --features / --drop; keep at least one")
    return data.select(features), y, ids


# --scoring: the names of ``scoring=`` (None, the estimator's default score, is "accuracy" or "r2" by name here)
_SCORINGS = list(dict.fromkeys(n for n in CLASSIFICATION_SCORINGS + REGRESSION_SCORINGS if n is not None))


def _scoring_for(scoring: str, task: str) -> str:
    """``--scoring`` checked against the task (known only once the data is read when ``--task auto``)."""
    allowed = [n for n in (CLASSIFICATION_SCORINGS if task == "classification" else REGRESSION_SCORINGS) if n]
    if scoring not in allowed:
        other = "regression" if task == "classification" else "classification"
        raise click.BadParameter(f"{scoring!r} is not a score a {task} model stops on; use one of "
                                 f"{', '.join(allowed)} (or --task {other})", param_hint="'--scoring'")
    return scoring


class _LearnerChoice(click.Choice):
    """``--learner``: the registered learners' names, read when parsed (``members.register``)."""

    def __init__(self) -> None:
        super().__init__(learner_names())

    @property
    def choices(self) -> list[str]:
        return learner_names()

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # the registry is the one list of names


@cli.command("fit")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--target", required=True, help="the label column")
@click.option("--id-column", help="a column of unique row ids (default: row numbers 0, 1, ...)")
@click.option("--drop", multiple=True, metavar="COLUMN",
              help="leave this column out of the features (repeat, or a,b): e.g. the label under another name")
@click.option("--features", "keep", multiple=True, metavar="COLUMN",
              help="train on these columns only (repeat, or a,b); default: every column but target and ids")
@click.option("--weight-column", metavar="COLUMN",
              help="a column of sample weights (finite numbers from 0 to 1e12; not a feature); default: every row 1")
@click.option("--group-by", multiple=True, metavar="COLUMN", help="a key column (repeat for several)")
@click.option("--kmeans", type=click.IntRange(1), metavar="K", help="K learned clusters")
@click.option("--hash", "hash_", type=click.IntRange(1), metavar="K", help="K hash shards of the row id")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]), default="auto", show_default=True)
@click.option("--learner", type=_LearnerChoice(), default=DEFAULT_LEARNER, show_default=True)
@click.option("--combine", type=click.Choice(["auto", "average", "route"]), default="auto", show_default=True,
              help="how members combine (auto: hash shards average, clusters route, key groups take whichever scores "
                   "better on their held-out slices)")
@click.option("--max-group-rows", type=click.IntRange(1), help="split larger groups into hash shards")
@click.option("--early-stopping", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="stop each member early on its group's held-out slice (auto: in groups of more than 10,000 rows)")
@click.option("--validation-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, metavar="FRACTION", help="the share of each group's rows in its held-out slice")
@click.option("--n-iter-no-change", type=click.IntRange(1), default=10, show_default=True, metavar="ROUNDS",
              help="rounds without a better score on the slice that stop a member")
@click.option("--scoring", type=click.Choice(_SCORINGS), default="loss", show_default=True, metavar="NAME",
              help="what the slice is scored by: loss (the objective's own); for classification accuracy, roc_auc, "
                   "neg_log_loss; for regression r2, neg_mean_squared_error, neg_root_mean_squared_error, "
                   "neg_mean_absolute_error")
@click.option("--params", help="learner parameters as JSON, e.g. '{\"num_iterations\": 200}'")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-jobs", type=int, help="threads (default: every core)")
@click.option("--quiet", is_flag=True, help="no progress bar (there is none when not at a terminal)")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="the store directory to create")
@json_option
def fit_cmd(data: str, target: str, id_column: str | None, drop: tuple[str, ...], keep: tuple[str, ...],
            weight_column: str | None, group_by: tuple[str, ...], kmeans: int | None,
            hash_: int | None, task: str, learner: str, combine: str, max_group_rows: int | None,
            early_stopping: str, validation_fraction: float, n_iter_no_change: int, scoring: str,
            params: str | None, seed: int, n_jobs: int | None, quiet: bool, store: str, as_json: bool) -> None:
    """Fit a model on DATA (CSV, Parquet or Arrow IPC) and save it to a new store."""
    from .. import ForgetClassifier, ForgetRegressor, HashGroups, KMeansGroups

    chosen = [o for o, v in (("--group-by", group_by), ("--kmeans", kmeans), ("--hash", hash_)) if v]
    if len(chosen) != 1:
        raise click.UsageError("say how to group rows with exactly one of --group-by COLUMN, --kmeans K or --hash K"
                               + (f" (got {' and '.join(chosen)})" if chosen else ""))
    grouping: Any = KMeansGroups(kmeans) if kmeans else HashGroups(hash_) if hash_ else list(group_by)
    try:
        learner_params = json.loads(params) if params else None
    except json.JSONDecodeError as exc:
        raise InputError(f"--params {params!r} is not JSON ({exc}); write it like '{{\"num_iterations\": 200}}'") from None
    rows = read_table(data)
    X, y, ids = _split_target(rows, target, id_column, _columns(drop), _columns(keep), weight_column)
    # a missing weight reads as NaN, which fit refuses quoting its row
    weights = rows.column(weight_column).to_numpy(zero_copy_only=False) if weight_column else None
    if task == "auto":
        task = "regression" if y.dtype.kind == "f" and len(np.unique(y[~np.isnan(y)])) > 20 else "classification"
    cls = ForgetRegressor if task == "regression" else ForgetClassifier
    stopping = {"early_stopping": {"auto": "auto", "on": True, "off": False}[early_stopping],
                "validation_fraction": validation_fraction, "n_iter_no_change": n_iter_no_change,
                "scoring": _scoring_for(scoring, task)}
    model = cls(grouping=grouping, learner=learner, learner_params=learner_params, combine=combine,
                max_group_rows=max_group_rows, random_state=seed, n_jobs=n_jobs, verbose=not quiet and interactive(),
                **stopping)
    model.fit(X, y, ids=ids, sample_weight=weights)
    report = model.save(store)
    if as_json:
        echo_json({"estimator": cls.__name__, "task": task, "rows": model.n_rows_, "groups": len(model.groups_),
                   "store": store, "version": report.version})
    else:
        say(f"fitted {cls.__name__} ({task}): {model.n_rows_} rows in {len(model.groups_)} groups; "
                   f"store {store} at version {report.version}")


@cli.command("predict")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--out", help="file to write: .parquet or .csv (default: CSV on standard output)")
@click.option("--id-column", metavar="COLUMN", help="a column of DATA to copy into the output, first (e.g. row ids)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per row on standard output instead of CSV")
def predict_cmd(store: str, data: str, out: str | None, id_column: str | None, as_json: bool) -> None:
    """Predict the rows of DATA (CSV, Parquet or Arrow IPC): a prediction column, and proba_<class> columns."""
    model = load_model(store)
    rows = read_table(data)
    if id_column is not None and id_column not in rows.column_names:
        raise InputError(f"--id-column {id_column!r} is not a column of {data!r}; columns are {rows.column_names!r}")
    X = features(rows, model.ensemble_.schema.names)
    cols: dict[str, Any] = {}
    if id_column is not None:
        if id_column in ("prediction",) or id_column.startswith("proba_"):
            raise InputError(f"--id-column {id_column!r} clashes with an output column; rename it in the data")
        cols[id_column] = rows.column(id_column)
    cols["prediction"] = model.predict(X)
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        for j, c in enumerate(model.classes_):
            cols[f"proba_{c}"] = proba[:, j]
    result = pa.table({k: v if isinstance(v, pa.ChunkedArray) else pa.array(np.asarray(v).tolist())
                       for k, v in cols.items()})
    if as_json and not out:
        for row in result.to_pylist():
            echo_json(row)
        return
    write_table(result, out)
    if out:
        say(f"wrote {result.num_rows} predictions to {out}", err=True)


def info_dict(model: Any) -> dict[str, Any]:
    """What ``info --json`` prints: estimator, version, rows, parameters, groups, pending members, overrides."""
    params = {k: (v if isinstance(v, (int, float, str, type(None), dict, list)) else repr(v))
              for k, v in model.get_params().items()}
    groups = model.groups_
    return {"estimator": type(model).__name__, "version": model.version_, "rows": model.n_rows_, "params": params,
            "groups": groups, "pending": [g["name"] for g in groups if g["pending"]], "overrides": model.rules}


@cli.command("info")
@click.argument("store", type=click.Path(file_okay=False))
@json_option
def info_cmd(store: str, as_json: bool) -> None:
    """Show the model's groups (rows, weight, pending), version, rules and overrides."""
    info = info_dict(load_model(store))
    if as_json:
        click.echo(json.dumps(info, default=str, indent=2))
        return
    out = console()
    p = info["params"]
    out.print(text(f"{info['estimator']} at version {info['version']}: {info['rows']} rows in {len(info['groups'])} "
                   f"groups (grouping {p['grouping']}, learner {p['learner']}, combine {p['combine']})"))
    t = table("group", "rows", "weight", "learner", "state")
    for g in info["groups"]:
        t.add_row(g["name"], str(g["rows"]), f"{g['weight']:.4f}", str(g["learner"] or ""),
                  "pending retrain" if g["pending"] else "ready")
    out.print(t)
    if info["pending"]:
        out.print(text(f"{len(info['pending'])} member(s) pending: run `clusterforget retrain {store}`"))
    for r in info["overrides"]:
        out.print(text(f"override {r['rule_id']}: {r['rule']} -> {r['label']!r}" + ("" if r["active"] else " (inactive)")))


def _rows_cell(e: dict) -> str:
    parts = [f"-{e['rows_removed']}" if e.get("rows_removed") else "", f"+{e['rows_added']}" if e.get("rows_added") else "",
             f"~{e['rows_relabeled']}" if e.get("rows_relabeled") else ""]
    return " ".join(p for p in parts if p) or "0"


def _groups_cell(e: dict) -> str:
    parts = [f"{len(e.get(k) or [])} {word}" for k, word in
             (("groups_retrained", "retrained"), ("groups_dropped", "dropped"), ("groups_pending", "pending"))
             if e.get(k)]
    return ", ".join(parts) or "-"


@cli.command("ledger")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--request-id", help="only the lines of this request")
@json_option
def ledger_cmd(store: str, request_id: str | None, as_json: bool) -> None:
    """Show the store's ledger: one line per committed change (JSON lines with --json)."""
    from .. import read_ledger

    entries = [e for e in read_ledger(store) if request_id is None or e.get("request_id") == request_id]
    if as_json:
        for e in entries:
            echo_json(e)
        return
    t = table("time", "operation", "request id", "rows", "groups", "seconds", "version")
    for e in entries:
        t.add_row(str(e.get("time", "")), str(e.get("operation", "")), e.get("request_id") or "-", _rows_cell(e),
                  _groups_cell(e), f"{float(e.get('seconds') or 0):.2f}", str(e.get("version", "")))
    console().print(t)
    if request_id is not None and not entries:
        say(f"no ledger line has request id {request_id!r}", err=True)


@cli.command("demo")
@click.option("--data", type=click.Path(dir_okay=False, exists=True), help="the adult census CSV (default: data/adult.csv)")
def demo_cmd(data: str | None) -> None:
    """Run the README's demo (examples/demo_adult.py): group adult by country, forget a country and 100 people."""
    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "demo_adult.py"
    if not example.is_file():
        raise InputError(
            f"the demo needs a source checkout of clusterforget ({example} is missing); clone the repository and run "
            "`clusterforget demo` there"
        )
    demo = runpy.run_path(str(example), run_name="clusterforget_demo")
    demo["main"](Path(data) if data else demo["DATA"])
