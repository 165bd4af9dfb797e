"""Commands that check a store: verify (legacy probe check, or the purge / exact / mia / diff audit of one
request), certificate and verify-certificate (signed deletion evidence)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import click

from ..errors import InputError
from .app import cli, echo_json, json_option, lock_timeout, say
from .changes import integer_ids, split_ids, typed_ids
from .io import features, read_table

_KEY_HELP = ("a file holding the key kept OUTSIDE the store (hex or raw bytes); default $CLUSTERFORGET_KEY or "
             "$CLUSTERFORGET_KEY_FILE")
_STORE_KEY_HELP = ("a file holding the key the store was saved with (default: --key, when the store says it is "
                   "authenticated); given, the store must be authenticated by it, or it is refused")


def store_key_option(f: Callable) -> Callable:
    return click.option("--store-key", "store_key_file", type=click.Path(dir_okay=False, exists=True),
                        help=_STORE_KEY_HELP)(f)


def _store_ids(store: str, values: list[str]) -> list:
    """Ids typed as the store's id type, read from its manifest (the audit opens the store read-only)."""
    from ..store import read_manifest

    id_type = read_manifest(Path(store))["ensemble"]["id_type"]
    return integer_ids(values) if id_type and "int" in id_type else list(values)


@cli.command("verify")
@click.argument("store", type=click.Path(file_okay=False))
@click.argument("more_ids", nargs=-1, metavar="[ID]...")
@click.option("--ids", multiple=True, metavar="ID", help="forgotten ids that must be gone: --ids 17 42")
@click.option("--probe", metavar="DATA", help="rows (CSV, Parquet, Arrow IPC) to compare predictions with a fresh fit on")
@click.option("--request-id", metavar="REQ", help="check what this deletion request did (its ledger line)")
@click.option("--checks", metavar="LIST", help="comma-separated: held, purge, exact, mia, diff (default with --request-id: "
              "held,purge,exact)")
@click.option("--exact", "exact_mode", type=click.Choice(["fast", "full"]), default="fast", show_default=True,
              help="fast: retrain only the affected members; full: refit everything")
@click.option("--holdout", metavar="DATA", help="rows never trained on, with the target column (mia)")
@click.option("--target", metavar="COLUMN", help="the target column of --holdout")
@click.option("--forgotten-rows", metavar="DATA", help="the forgotten rows' features (CSV, Parquet, Arrow IPC): purge "
              "finds copies of them and their values inside preprocessor documents; exact routes them to their groups")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help=_KEY_HELP)
@store_key_option
@json_option
def verify_cmd(store: str, more_ids: tuple[str, ...], ids: tuple[str, ...], probe: str | None,
               request_id: str | None, checks: str | None, exact_mode: str, holdout: str | None,
               target: str | None, forgotten_rows: str | None, key_file: str | None, store_key_file: str | None,
               as_json: bool) -> None:
    """Check that forgetting worked: the ids are gone from every file, the model equals a fresh fit, and (mia)
    forgotten rows look like rows the model never saw. Without --checks / --request-id: the probe check."""
    values = split_ids(ids + more_ids)
    if checks is None and request_id is None:
        if forgotten_rows:
            raise InputError("--forgotten-rows is read by the purge and exact checks: name them with --checks, or "
                             "give --request-id")
        from ..verify import verify
        from ..verify.source import open_store, opening_key

        # nothing is signed here: --key is the store's key, and binding (read-only, as every check reads)
        src = open_store(store, opening_key(store, store_key_file or key_file))
        model = src.model
        X = features(read_table(probe), model.ensemble_.schema.names) if probe else None
        result = verify(src, forgotten=typed_ids(model, values) if values else None, X_probe=X)
        if as_json:
            echo_json({k: v for k, v in vars(result).items()})
        else:
            click.echo(str(result))
        if not result.ok:
            raise click.exceptions.Exit(1)
        return
    from ..store import read_manifest
    from ..verify import DEFAULT_CHECKS, verify_store

    extra: dict = {"exact": exact_mode}
    if values:
        extra["forgotten"] = _store_ids(store, values)
    if forgotten_rows:
        extra["X_forgotten"] = features(read_table(forgotten_rows),
                                        read_manifest(Path(store))["ensemble"]["schema"]["names"])
    if holdout:
        if not target:
            raise InputError("--holdout needs --target, the name of its label column")
        table = read_table(holdout)
        if target not in table.column_names:
            raise InputError(f"column {target!r} is not in {holdout!r}; columns are {table.column_names!r}")
        names = read_manifest(Path(store))["ensemble"]["schema"]["names"]
        extra["X_holdout"] = features(table, names)
        extra["y_holdout"] = table.column(target).to_numpy(zero_copy_only=False)
    result = verify_store(store, request_id=request_id, checks=checks or DEFAULT_CHECKS, key=key_file,
                          store_key=store_key_file, **extra)
    click.echo(result.to_json() if as_json else str(result))
    if not result.ok:
        raise click.exceptions.Exit(1)


@cli.command("certificate")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--request-id", required=True, metavar="REQ", help="the deletion request to certify")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help=_KEY_HELP)
@store_key_option
@click.option("-o", "--out", metavar="FILE", help="write the certificate here (default: standard output)")
def certificate_cmd(store: str, request_id: str, key_file: str | None, store_key_file: str | None,
                    out: str | None) -> None:
    """Write a signed deletion certificate for one request (checks held, purge and exact first)."""
    from ..verify import certificate_for

    cert = certificate_for(store, request_id, key=key_file, store_key=store_key_file)
    text = json.dumps(cert, indent=2, sort_keys=True, default=str)
    if out:
        Path(out).write_text(text + "\n")
        click.echo(f"wrote the certificate of {request_id} to {out}")
    else:
        click.echo(text)


@cli.command("verify-certificate")
@click.argument("cert", type=click.Path(dir_okay=False, exists=True))
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help=_KEY_HELP)
@store_key_option
@json_option
def verify_certificate_cmd(cert: str, store: str, key_file: str | None, store_key_file: str | None,
                           as_json: bool) -> None:
    """Check a certificate: its signature, its ledger line in the hash chain, and that the store holds none of the ids."""
    from .. import verify_certificate

    result = verify_certificate(json.loads(Path(cert).read_text()), store, key=key_file, store_key=store_key_file)
    click.echo(result.to_json() if as_json else str(result))
    if not result.ok:
        raise click.exceptions.Exit(1)


@cli.command("remove-unreferenced")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help=_KEY_HELP)
@click.option("--yes", is_flag=True, help="remove without asking")
@json_option
def remove_unreferenced_cmd(store: str, key_file: str | None, yes: bool, as_json: bool) -> None:
    """Delete the files the manifest does not reference (which fail the purge check) and record their names in
    the ledger. Look at them first: an older version's file put back is evidence."""
    from ..store import remove_unreferenced

    asked: list[list[str]] = []

    def confirm(names: list[str]) -> bool:
        # under the store's lock: what is shown is what is removed, and no writer changes the store meanwhile
        asked.append(names)
        if yes:
            return True
        say("\n".join([f"{len(names)} unreferenced file(s):", *names]))
        return click.confirm("remove them (and record it in the ledger)?", default=False)

    removed = remove_unreferenced(store, key=key_file, confirm=confirm, **lock_timeout())
    if asked and not removed:
        raise InputError("nothing was removed (pass --yes to remove without asking)")
    if as_json:
        echo_json({"removed": removed})
    elif not removed:
        say("no unreferenced file")
    else:
        say("\n".join([f"removed {len(removed)} file(s), recorded in the ledger:", *removed]))
