"""Commands that check a store: verify (and, as they land, the certificate commands of the verify layer)."""

from __future__ import annotations

import click

from .app import cli, echo_json, json_option, load_model
from .changes import split_ids, typed_ids
from .io import features, read_table


@cli.command("verify")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("more_ids", nargs=-1, metavar="[ID]...")
@click.option("--ids", multiple=True, metavar="ID", help="forgotten ids that must be gone: --ids 17 42")
@click.option("--probe", metavar="DATA", help="rows (CSV, Parquet, Arrow IPC) to compare predictions with a fresh fit on")
@json_option
def verify_cmd(store: str, more_ids: tuple[str, ...], ids: tuple[str, ...], probe: str | None, as_json: bool) -> None:
    """Check that forgotten ids are gone and that the model equals a fresh fit on the rows it holds."""
    from ..verify import verify

    model = load_model(store)
    X = features(read_table(probe), model.ensemble_.schema.names) if probe else None
    values = split_ids(ids + more_ids)
    forgotten = typed_ids(model, values) if values else None
    result = verify(model, forgotten=forgotten, X_probe=X)
    if as_json:
        echo_json({k: v for k, v in vars(result).items()})
    else:
        click.echo(str(result))
    if not result.ok:
        raise click.exceptions.Exit(1)
