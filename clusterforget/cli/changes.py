"""Commands that change a model: forget, forget-group, retrain, relabel, reweight.

Each takes ``--request-id`` (recorded in the report and the ledger), ``--dry-run`` (print the plan, change
nothing) and ``--yes`` (no prompt). Before a change the plan is shown: rows matched, groups to retrain and to
drop, the estimated training time from the members' recorded fit times. Without ``--yes`` it asks at a
terminal and refuses when there is none, rather than wait on a prompt nobody sees.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

import click
import pyarrow as pa

from ..errors import InputError
from ..report import Report
from .app import Refused, cli, console, echo_json, interactive, load_model, say, table, text

# ASCII digits only: str.isdigit() and int() also take '²' and Arabic-Indic '١٢' (which int() reads as 12)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def split_ids(values: Sequence[str]) -> list[str]:
    """Ids as typed: ``--ids 17 42`` (click gives the first to the option, the rest as arguments) or ``--ids "17 42"``."""
    return [v for s in values for v in s.split()]


def read_ids_file(path: str) -> list[str]:
    """The ids of an ids file, one per line (UTF-8; a byte-order mark, as some editors write, is accepted)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"the ids file {path!r} is not UTF-8 text ({exc}); write one id per line") from None
    return [line.strip() for line in lines if line.strip()]


def integer_ids(values: Sequence[str]) -> list[int]:
    """Integer ids as typed: ASCII digits with an optional sign, nothing else."""
    bad = [v for v in values if not _INTEGER.fullmatch(v.strip())]
    if bad:
        raise InputError(f"this model's row ids are integers, got {bad[:5]!r}; pass whole numbers written with "
                         "the digits 0-9")
    return [int(v) for v in values]


def typed_ids(model: Any, values: Sequence[str]) -> list:
    """Ids typed on the command line, as the model's id type (integers or strings)."""
    if pa.types.is_integer(model.ensemble_.id_type):
        return integer_ids(values)
    return list(values)


def typed_key(model: Any, values: Sequence[str]) -> Any:
    """A group key typed on the command line, as the model's grouping parses it (``Grouping.parse_key``): a
    value per key column ('null' for missing), or a cluster or shard number."""
    ens = model.ensemble_
    return ens.grouping.parse_key(values, ens.schema)


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)}" + (f": {shown}" if names else "") + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def plan_dict(model: Any, plan: Report) -> dict[str, Any]:
    """A dry run's report as JSON, with the estimated training seconds (None when no fit time was recorded)."""
    out = plan.to_dict()
    out["dry_run"] = True
    out["estimated_seconds"] = model.ensemble_.estimate_seconds(plan.groups_retrained) if plan.groups_retrained else 0.0
    return out


def show_plan(model: Any, store: str, plan: Report) -> None:
    d = plan_dict(model, plan)
    out = console()
    head = f"plan: {plan.operation} on {store} (version {model.version_}, {model.n_rows_} rows)"
    out.print(text(head + (f", request {plan.request_id}" if plan.request_id else "")))
    t = table("", "")
    t.show_header = False
    if plan.rule:
        t.add_row("rule", repr(plan.rule))
        t.add_row("training rows matching", str(plan.rows_matched))
    if plan.operation.startswith("forget"):
        t.add_row("rows to forget", str(plan.rows_removed))
    if plan.rows_relabeled:
        t.add_row("rows to relabel", str(plan.rows_relabeled))
    if plan.operation == "reweight":
        t.add_row("rows to reweight", f"{plan.rows_reweighted} of {plan.rows_matched} (not a deletion: the rows stay)")
    t.add_row("groups to retrain", _names(plan.groups_retrained))
    t.add_row("groups to drop", _names(plan.groups_dropped))
    if plan.groups_pending:
        t.add_row("left pending", _names(plan.groups_pending))
    if plan.clustering_refit:
        t.add_row("clustering", "refit" + (f", {plan.rows_moved} row(s) move" if plan.clustering_changed else ", unchanged"))
    est = d["estimated_seconds"]
    t.add_row("estimated time", "unknown (no recorded fit times)" if est is None else f"about {est:.2f}s")
    out.print(t)


def run_change(store: str, make: Callable[[Any], Callable[..., Report]], *, request_id: str | None,
               dry_run: bool, yes: bool, as_json: bool, refit: bool = False) -> None:
    """Load, plan, show the plan, confirm, apply: the path every changing command takes.

    ``make(model)`` returns the model method to call (bound to its arguments), taking ``request_id`` and
    ``dry_run``. The change commits to the store before it returns; a refusal leaves the store untouched.
    """
    model = load_model(store, progress=not as_json, refit=refit)
    operation = make(model)
    plan = operation(request_id=request_id, dry_run=True)
    if dry_run:
        if as_json:
            echo_json(plan_dict(model, plan))
        else:
            show_plan(model, store, plan)
            say("dry run: nothing was changed")
        return
    if not as_json:
        show_plan(model, store, plan)
    nothing = not (plan.rows_removed or plan.rows_relabeled or plan.rows_reweighted or plan.groups_retrained
                   or plan.groups_dropped or plan.operation == "relabel_override")
    if nothing:  # e.g. retrain with nothing pending: no commit, no ledger line
        if as_json:
            echo_json(plan_dict(model, plan))
        else:
            click.echo("nothing to do; nothing was changed")
        return
    if not yes:
        if not interactive():
            raise Refused(f"{plan.operation} on {store!r} needs confirmation and there is no terminal to ask on; "
                          "nothing was changed. Pass --yes to go ahead")
        if not click.confirm("go ahead?", default=False, err=True):
            raise Refused(f"{plan.operation} on {store!r} was not confirmed; nothing was changed")
    report = operation(request_id=request_id)
    if as_json:
        echo_json(report.to_dict())
    else:
        say(str(report))


def changing(f: Callable) -> Callable:
    """The options every changing command takes."""
    f = click.option("--json", "as_json", is_flag=True, help="print the report (or the plan) as JSON")(f)
    f = click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")(f)
    f = click.option("--dry-run", is_flag=True, help="print what would happen and change nothing")(f)
    f = click.option("--request-id", metavar="REQ", help="the deletion request (ticket) this serves; goes into the ledger")(f)
    return f


@cli.command("forget")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("more_ids", nargs=-1, metavar="[ID]...")
@click.option("--ids", multiple=True, metavar="ID", help="row ids to forget: --ids 17 42 (or as arguments after STORE)")
@click.option("--ids-file", type=click.Path(dir_okay=False, exists=True), help="a file of ids, one per line")
@click.option("--deferred", is_flag=True, help="take the members out now, retrain them later (`retrain`)")
@changing
def forget_cmd(store: str, more_ids: tuple[str, ...], ids: tuple[str, ...], ids_file: str | None, deferred: bool,
               **opts: Any) -> None:
    """Forget rows by id: retrain only the members whose groups held them."""
    values = split_ids(ids + more_ids)
    if ids_file:
        values += read_ids_file(ids_file)
    if not values:
        raise click.UsageError("no ids given: pass --ids ID [--ids ID ...] or --ids-file FILE (one id per line)")
    retrain = "deferred" if deferred else "now"
    run_change(store, lambda m: lambda **kw: m.forget_rows(typed_ids(m, values), retrain, **kw), **opts)


@cli.command("forget-group")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("key", nargs=-1, required=True)
@click.option("--deferred", is_flag=True, help="for learned clusters: retrain the other members later")
@changing
def forget_group_cmd(store: str, key: tuple[str, ...], deferred: bool, **opts: Any) -> None:
    """Forget every row of the group KEY (a value per key column, 'null' for missing; or a cluster number)."""
    retrain = "deferred" if deferred else "now"
    run_change(store, lambda m: lambda **kw: m.forget_group(typed_key(m, key), retrain, **kw), **opts)


@cli.command("retrain")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--refit", is_flag=True,
              help="also refit the members whose preprocessor was fitted under another scikit-learn version (such a "
                   "store refuses to load until then), from the stored rows")
@changing
def retrain_cmd(store: str, refit: bool, **opts: Any) -> None:
    """Retrain the members left pending by deferred forgetting (with --refit: and those fitted under another
    scikit-learn version)."""
    run_change(store, lambda m: m.retrain_pending, refit=refit, **opts)


def typed_label(model: Any, text: str) -> Any:
    """A label typed on the command line, as the model's label type."""
    classes = getattr(model, "classes_", None)
    kind = "f" if classes is None else classes.dtype.kind
    if kind == "b":
        if text.lower() not in ("true", "false"):
            raise InputError(f"this model's labels are true/false, got {text!r}")
        return text.lower() == "true"
    if kind in "iuf":
        try:
            return float(text) if kind == "f" else int(text)
        except ValueError:
            raise InputError(f"this model's labels are {'numbers' if kind == 'f' else 'integers'}, got {text!r}") from None
    return text


@cli.command("relabel")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("rule")
@click.option("--label", required=True, help="the label the matching rows get")
@click.option("--mode", type=click.Choice(["retrain", "override"]), default="retrain", show_default=True,
              help="retrain: relabel the training rows; override: change outputs only")
@changing
def relabel_cmd(store: str, rule: str, label: str, mode: str, **opts: Any) -> None:
    """Apply a relabel RULE such as "fare == 0" to the training rows (retrain) or to the outputs (override)."""
    run_change(store, lambda m: lambda **kw: m.relabel(rule, typed_label(m, label), mode=mode, **kw), **opts)


def typed_weights(values: Sequence[str]) -> list[float]:
    """Weights typed on the command line: plain decimal numbers (the model checks their range)."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise InputError(f"a weight must be a number such as 0.5 or 2, got {v!r}") from None
    return out


@cli.command("reweight")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("more_ids", nargs=-1, metavar="[ID]...")
@click.option("--weight", "weights", required=True, multiple=True, metavar="W",
              help="the new sample weight: one for every id, or one --weight per id in order")
@click.option("--ids", multiple=True, metavar="ID", help="row ids to reweight: --ids 17 42 (or as arguments after STORE)")
@click.option("--ids-file", type=click.Path(dir_okay=False, exists=True), help="a file of ids, one per line")
@changing
def reweight_cmd(store: str, more_ids: tuple[str, ...], weights: tuple[str, ...], ids: tuple[str, ...],
                 ids_file: str | None, **opts: Any) -> None:
    """Give rows new sample weights; only the members holding them retrain. Not a deletion (weight 0 included)."""
    values = split_ids(ids + more_ids)
    if ids_file:
        values += read_ids_file(ids_file)
    if not values:
        raise click.UsageError("no ids given: pass --ids ID [--ids ID ...] or --ids-file FILE (one id per line)")
    w = typed_weights(split_ids(weights))
    if len(w) not in (1, len(values)):
        raise click.UsageError(f"got {len(w)} weights for {len(values)} ids: pass one --weight, or one per id")
    run_change(store, lambda m: lambda **kw: m.reweight(typed_ids(m, values), w[0] if len(w) == 1 else w, **kw),
               **opts)
