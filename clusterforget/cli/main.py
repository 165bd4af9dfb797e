"""Command line: fit a model into a store, forget rows or groups, relabel, predict, inspect.

    clusterforget fit data/adult.csv --target class --group-by native-country --store stores/adult
    clusterforget forget stores/adult --ids 17 42
    clusterforget forget-group stores/adult Mexico
    clusterforget info stores/adult
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from ..errors import ClusterForgetError, InputError


def _read_table(path: str) -> pa.Table:
    p = Path(path)
    if not p.exists():
        raise InputError(f"data file {path!r} does not exist")
    if p.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(p, use_threads=False)  # no Arrow thread pool to abort at exit
    if p.suffix.lower() in (".csv", ".txt", ".gz"):
        import pyarrow.csv as pcsv

        return pcsv.read_csv(p)
    raise InputError(f"cannot read {path!r}: use a .csv or .parquet file")


def _split_target(table: pa.Table, target: str, id_column: str | None):
    for col in [target] + ([id_column] if id_column else []):
        if col not in table.column_names:
            raise InputError(f"column {col!r} is not in the data; columns are {table.column_names!r}")
    y = table.column(target).to_numpy(zero_copy_only=False)
    ids = table.column(id_column) if id_column else None
    X = table.drop_columns([c for c in (target, id_column) if c])
    return X, y, ids


def _typed_ids(model, values: Sequence[str]) -> list:
    if pa.types.is_integer(model.ensemble_.id_type):
        try:
            return [int(v) for v in values]
        except ValueError as exc:
            raise InputError(f"this model's row ids are integers: {exc}") from exc
    return list(values)


def _typed_key(model, values: Sequence[str]) -> Any:
    from ..data import NUMERIC
    from ..grouping import KeyGroups

    grouping = model.ensemble_.grouping
    if not isinstance(grouping, KeyGroups):
        if len(values) != 1:
            raise InputError(f"a cluster or shard key is one number, got {list(values)!r}")
        try:
            return int(values[0])
        except ValueError as exc:
            raise InputError(f"a cluster or shard key is a number, got {values[0]!r}") from exc
    if len(values) != len(grouping.columns):
        raise InputError(f"the grouping has columns {list(grouping.columns)!r}: give one value for each")
    out = []
    for col, v in zip(grouping.columns, values):
        if v in ("null", "None"):
            out.append(None)
        elif model.ensemble_.schema.kind(col) == NUMERIC:
            try:
                out.append(float(v))
            except ValueError as exc:
                raise InputError(f"column {col!r} is numeric, so its key must be a number, got {v!r}") from exc
        else:
            out.append(v)
    return tuple(out) if len(out) > 1 else out[0]


def _print(report, as_json: bool) -> None:
    print(json.dumps(report.to_dict(), default=str) if as_json else str(report))


def cmd_fit(a) -> None:
    from .. import ForgetClassifier, ForgetRegressor, HashGroups, KMeansGroups

    table = _read_table(a.data)
    X, y, ids = _split_target(table, a.target, a.id_column)
    if a.kmeans:
        grouping: Any = KMeansGroups(a.kmeans)
    elif a.hash:
        grouping = HashGroups(a.hash)
    elif a.group_by:
        grouping = a.group_by
    else:
        raise InputError("say how to group rows: --group-by COLUMN [COLUMN ...], --kmeans K or --hash K")
    task = a.task
    if task == "auto":
        task = "regression" if y.dtype.kind == "f" and len(set(y.tolist())) > 20 else "classification"
    cls = ForgetRegressor if task == "regression" else ForgetClassifier
    params = json.loads(a.params) if a.params else None
    model = cls(grouping=grouping, learner=a.learner, learner_params=params, combine=a.combine,
                max_group_rows=a.max_group_rows, random_state=a.seed, n_jobs=a.n_jobs, verbose=not a.quiet)
    model.fit(X, y, ids=ids)
    report = model.save(a.store)
    print(f"fitted {cls.__name__} ({task}): {model.n_rows_} rows in {len(model.groups_)} groups; "
          f"store {a.store} at version {report.version}")


def _load(store: str):
    from .. import load

    return load(store)


def cmd_forget(a) -> None:
    model = _load(a.store)
    values = list(a.ids or [])
    if a.ids_file:
        values += [line.strip() for line in Path(a.ids_file).read_text().splitlines() if line.strip()]
    if not values:
        raise InputError("no ids given: pass --ids ID [ID ...] or --ids-file FILE (one id per line)")
    _print(model.forget_rows(_typed_ids(model, values), retrain="deferred" if a.deferred else "now"), a.json)


def cmd_forget_group(a) -> None:
    model = _load(a.store)
    _print(model.forget_group(_typed_key(model, a.key), retrain="deferred" if a.deferred else "now"), a.json)


def cmd_retrain(a) -> None:
    _print(_load(a.store).retrain_pending(), a.json)


def cmd_relabel(a) -> None:
    model = _load(a.store)
    label: Any = a.label
    classes = getattr(model, "classes_", None)
    if classes is None or classes.dtype.kind in "if":
        try:
            label = float(a.label) if classes is None or classes.dtype.kind == "f" else int(a.label)
        except ValueError as exc:
            raise InputError(f"this model's labels are numbers, got {a.label!r}") from exc
    _print(model.relabel(a.rule, label, mode=a.mode), a.json)


def cmd_predict(a) -> None:
    import numpy as np

    model = _load(a.store)
    table = _read_table(a.data)
    drop = [c for c in table.column_names if c not in model.ensemble_.schema.names]
    X = table.drop_columns(drop)
    cols: dict[str, Any] = {"prediction": model.predict(X)}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        for j, c in enumerate(model.classes_):
            cols[f"proba_{c}"] = proba[:, j]
    out = pa.table({k: pa.array(np.asarray(v).tolist()) for k, v in cols.items()})
    if a.out:
        import pyarrow.csv as pcsv

        pcsv.write_csv(out, a.out)
        print(f"wrote {out.num_rows} predictions to {a.out}")
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(out, sys.stdout.buffer)


def cmd_info(a) -> None:
    model = _load(a.store)
    info = {
        "estimator": type(model).__name__,
        "version": model.version_,
        "rows": model.n_rows_,
        "params": {k: (repr(v) if not isinstance(v, (int, float, str, type(None), dict)) else v)
                   for k, v in model.get_params().items()},
        "groups": model.groups_,
        "overrides": model.rules,
    }
    if a.json:
        print(json.dumps(info, default=str, indent=2))
        return
    print(f"{info['estimator']}: version {info['version']}, {info['rows']} rows, {len(info['groups'])} groups")
    for g in info["groups"]:
        state = "pending retrain" if g["pending"] else f"weight {g['weight']:.4f}"
        print(f"  {g['name']:<40} {g['rows']:>9} rows  {state}")
    for r in info["overrides"]:
        print(f"  override {r['rule_id']}: {r['rule']} -> {r['label']!r}")


def cmd_verify(a) -> None:
    from ..verify import verify

    model = _load(a.store)
    probe = None
    if a.probe:
        table = _read_table(a.probe)
        probe = table.drop_columns([c for c in table.column_names if c not in model.ensemble_.schema.names])
    forgotten = _typed_ids(model, a.ids) if a.ids else None
    result = verify(model, forgotten=forgotten, X_probe=probe)
    print(result)
    if not result.ok:
        raise SystemExit(1)


def cmd_ledger(a) -> None:
    from ..store import read_ledger

    for entry in read_ledger(a.store):
        print(json.dumps(entry, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterforget", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a model on a CSV/Parquet file and save it to a store")
    p.add_argument("data")
    p.add_argument("--target", required=True, help="the label column")
    p.add_argument("--id-column", help="a column of unique row ids (default: row numbers)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--group-by", nargs="+", metavar="COLUMN", help="key columns")
    g.add_argument("--kmeans", type=int, metavar="K", help="K learned clusters")
    g.add_argument("--hash", type=int, metavar="K", help="K hash shards")
    p.add_argument("--task", choices=["auto", "classification", "regression"], default="auto")
    p.add_argument("--learner", choices=["lightgbm", "xgboost"], default="lightgbm")
    p.add_argument("--combine", choices=["auto", "average", "route"], default="auto",
                   help="how members combine (auto: what measured best for the grouping and task)")
    p.add_argument("--max-group-rows", type=int)
    p.add_argument("--params", help="learner parameters as JSON, e.g. '{\"num_iterations\": 200}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--store", required=True, help="directory to create")
    p.set_defaults(func=cmd_fit)

    for name, func, helptext in [
        ("forget", cmd_forget, "forget rows by id"),
        ("forget-group", cmd_forget_group, "forget every row of a group"),
        ("retrain", cmd_retrain, "retrain members left pending by deferred forgetting"),
        ("relabel", cmd_relabel, "apply a relabel rule (retrain) or an output override"),
        ("predict", cmd_predict, "predict a CSV/Parquet file"),
        ("info", cmd_info, "show the model's groups, version and overrides"),
        ("ledger", cmd_ledger, "print the store's ledger (JSON lines)"),
        ("verify", cmd_verify, "check forgotten ids are gone and the model equals a fresh fit"),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("store")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        if name == "forget":
            p.add_argument("--ids", nargs="+", metavar="ID")
            p.add_argument("--ids-file", metavar="FILE")
            p.add_argument("--deferred", action="store_true", help="take members out now, retrain later")
        elif name == "forget-group":
            p.add_argument("key", nargs="+", help="the key value(s); 'null' for a missing value")
            p.add_argument("--deferred", action="store_true")
        elif name == "relabel":
            p.add_argument("rule")
            p.add_argument("--label", required=True)
            p.add_argument("--mode", choices=["retrain", "override"], default="retrain")
        elif name == "verify":
            p.add_argument("--ids", nargs="+", metavar="ID", help="forgotten ids that must be gone")
            p.add_argument("--probe", metavar="DATA", help="CSV/Parquet rows to compare with a fresh fit on")
        elif name == "predict":
            p.add_argument("data")
            p.add_argument("--out", help="CSV file to write (default: standard output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .._compat import passive_openmp

    passive_openmp()  # before a learner loads its OpenMP runtime (the console script enters through run())
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClusterForgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
