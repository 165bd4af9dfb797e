"""The suspects command: rank a store's training rows by how suspect their labels look out of sample, and its
groups by what their members do to the others; with ``--holdout``, estimate what acting on the top rows would do.

Read-only: nothing is written to the store (``--holdout`` fits its models on the side, in memory).
"""

from __future__ import annotations

import click

from ..errors import InputError
from ..estimators import ensemble_of
from .app import cli, console, echo_json, json_option, load_model, table, text
from .io import features, read_table


def _cell(value: object, fmt: str = "") -> str:
    # ids, labels and group names are data: the console prints them as plain text ("[bold]" as itself)
    return format(value, fmt) if fmt else str(value)


@cli.command("suspects")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--top", type=click.IntRange(0), default=20, show_default=True, metavar="N",
              help="rows to show, most suspect first")
@click.option("--holdout", metavar="DATA", help="rows never trained on, with the target column: estimate what "
              "forgetting or relabeling the top --act-on rows would do to holdout quality (fits on the side; the "
              "store is not changed)")
@click.option("--target", metavar="COLUMN", help="the target column of --holdout")
@click.option("--act-on", "act_on", type=click.IntRange(1), metavar="K",
              help="how many top rows --holdout acts on (default: half the rows flagged as likely wrong, "
              "recommended_k)")
@json_option
def suspects_cmd(store: str, top: int, holdout: str | None, target: str | None, act_on: int | None,
                 as_json: bool) -> None:
    """Rank the training rows of STORE by how suspect their labels look (scored only by members that did not
    train on them) and its groups by their value to the others' rows (negative: harmful)."""
    from ..suspects import suspects, what_if

    if holdout is not None and not target:
        raise InputError("--holdout needs --target, the name of its label column")
    model = load_model(store)
    found = suspects(model)
    estimate = None
    if holdout is not None:
        data = read_table(holdout)
        if target not in data.column_names:
            raise InputError(f"--target {target!r} is not a column of {holdout!r}; its columns are "
                             f"{data.column_names[:20]!r}")
        k = act_on if act_on is not None else max(1, found.recommended_k)
        estimate = what_if(model, features(data, ensemble_of(model).schema.names),
                           data.column(target).to_numpy(zero_copy_only=False), min(k, len(found)), found)
    if as_json:
        out = found.to_dict(top)
        if estimate is not None:
            out["holdout"] = estimate.to_dict()
        echo_json(out)
        return
    out = console()
    pred = "p_label" if found.task == "classification" else "prediction"
    rows = table("#", "id", "score", "label", pred, "suggested", "group", "flagged",
                 title=f"{len(found):,} rows ranked, {found.n_flagged:,} flagged as likely wrong ({found.seconds:.2f} s)")
    for i in range(min(top, len(found))):
        rows.add_row(str(i + 1), _cell(found.ids[i]), f"{found.score[i]:.3f}", _cell(found.label[i]),
                     f"{found.prediction[i]:.3g}", _cell(found.suggested[i], ".4g" if found.task != "classification"
                                                         else ""), _cell(found.group[i]),
                     "yes" if found.flagged[i] else "")
    out.print(rows)
    groups = table("group", "rows", "value", "95% interval", "",
                   title="groups, most harmful first (value: loss increase on the others' rows without the member)")
    for g in found.groups:
        groups.add_row(_cell(g.name), f"{g.rows:,}", f"{g.value:+.4f}", f"[{g.low:+.4f}, {g.high:+.4f}]",
                       "harmful" if g.harmful else "")
    out.print(groups)
    for note in found.notes:
        out.print(text(f"note: {note}"))
    if estimate is not None:
        out.print(text(str(estimate), lines=True))
