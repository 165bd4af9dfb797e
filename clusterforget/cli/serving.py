"""Commands that take a model to where predictions are made: export, serve."""

from __future__ import annotations

import click

from .app import cli, console, echo_json, json_option, load_model, text

FORMATS = ("bundle", "onnx", "compiled")


@cli.command("export")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="bundle", show_default=True,
              help="bundle: manifest + native member files (cf.Scorer); onnx: one graph; compiled: shared libraries")
@click.option("-o", "--out", required=True, metavar="PATH", help="a directory (bundle, compiled) or a .onnx file")
@click.option("--notify", metavar="URL", help="tell a running `clusterforget serve` to reload now, e.g. http://127.0.0.1:8000")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True),
              help="authenticate the export with this key (hex or raw bytes; default $CLUSTERFORGET_KEY(_FILE))")
@json_option
def export_cmd(store: str, fmt: str, out: str, notify: str | None, key_file: str | None, as_json: bool) -> None:
    """Export the model in STORE for a scoring service (written atomically: a watcher sees old or new, never part)."""
    from ..export import export

    info = export(load_model(store), out, format=fmt, notify=notify, key=key_file)
    if as_json:
        echo_json(info)
        return
    console().print(text(
        f"exported version {info.get('model_version')} as {info.get('format')} to {info.get('path')} "
        f"({info.get('seconds', 0):.2f}s)"
    ))


@cli.command("serve")
@click.argument("export_dir")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--poll", type=click.FloatRange(0.05), default=0.2, show_default=True,
              help="seconds between checks of the export for a new version")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True),
              help="the key the export was written with: anything changed without it is refused "
                   "(default $CLUSTERFORGET_KEY(_FILE))")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help="a bearer token POST /predict and /reload require (default $CLUSTERFORGET_TOKEN); /docs is then off")
@click.option("--trust-code", is_flag=True,
              help="load the shared libraries of an unauthenticated compiled export (loading one runs its code)")
@click.option("--max-body-bytes", type=click.IntRange(1), help="largest request body (default 16 MiB)")
@click.option("--max-rows", type=click.IntRange(1), help="most rows in one request (default 100,000)")
@click.option("--max-decoded-bytes", type=click.IntRange(1), help="largest decoded Arrow body (default 256 MiB)")
@click.option("--max-json-depth", type=click.IntRange(3), help="deepest JSON nesting (default 8)")
def serve_cmd(export_dir: str, host: str, port: int, poll: float, key_file: str | None, token_file: str | None,
              trust_code: bool, **limits: int | None) -> None:
    """Serve an export, or a registered model (models:/NAME@ALIAS), over HTTP; new versions are swapped in live.

    Endpoints: POST /predict, POST /invocations (MLflow), /v2/... (KServe v2), GET /health, /model, /metrics.
    A registry URI is read from the MLflow tracking server in $MLFLOW_TRACKING_URI; its alias is polled.
    """
    from pathlib import Path

    from ..serve import run_server

    if not export_dir.startswith("models:/") and not Path(export_dir).exists():
        raise click.BadParameter(f"{export_dir!r} does not exist; pass an export (a bundle directory or an .onnx "
                                 "file) or a registry URI models:/NAME@ALIAS", param_hint="EXPORT_DIR")

    run_server(export_dir, host=host, port=port, poll=poll, key_file=key_file, token_file=token_file,
               trust_code=trust_code, **limits)
