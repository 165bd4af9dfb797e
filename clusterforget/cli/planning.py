"""The plan command: measure candidate groupings on a data file and recommend one within the budgets."""

from __future__ import annotations

import click

from .app import cli, echo_json, interactive, json_option, say


@cli.command("plan")
@click.argument("data", type=click.Path(dir_okay=False, exists=True))
@click.option("--target", required=True, metavar="COLUMN", help="the label column")
@click.option("--group-by", multiple=True, metavar="COLUMN", help="a key column to try as a grouping (repeatable)")
@click.option("--max-forget-seconds", type=click.FloatRange(0, min_open=True), metavar="S",
              help="budget: seconds to forget one row (retrain now)")
@click.option("--max-accuracy-loss", type=click.FloatRange(0), metavar="LOSS",
              help="budget: holdout metric loss against one model (AUC, log-loss or relative RMSE)")
@click.option("--time-budget", type=click.FloatRange(1), default=300, show_default=True, metavar="S",
              help="seconds the planner may spend measuring")
@click.option("--plot", "plot_path", metavar="PNG", help="also draw accuracy loss against forget speed-up")
@json_option
def plan_cmd(data: str, target: str, group_by: tuple[str, ...], max_forget_seconds: float | None,
             max_accuracy_loss: float | None, time_budget: float, plot_path: str | None, as_json: bool) -> None:
    """Measure candidate groupings on DATA (holdout metric, fit, single-row forget, predict) and recommend one."""
    from ..plan import plan_file

    plan = plan_file(data, target, group_by=list(group_by) or None, max_forget_seconds=max_forget_seconds,
                     max_accuracy_loss=max_accuracy_loss, time_budget=time_budget,
                     progress=interactive() and not as_json)
    if plot_path:
        plan.plot(plot_path)
    if as_json:
        echo_json(plan.to_dict())
    else:
        say(str(plan))
