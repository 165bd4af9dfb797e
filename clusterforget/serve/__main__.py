"""``python -m clusterforget.serve EXPORT [--host H] [--port P]``: the service's own entry point."""

import os

# before anything loads OpenMP (importing clusterforget does): idle OpenMP threads must sleep, not spin
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

from clusterforget.serve import LIMIT_OPTIONS, run_server  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterforget.serve", description="Serve a clusterforget export")
    parser.add_argument("export", help="a bundle directory or an .onnx file written by model.export, or a "
                        "registered model models:/NAME@ALIAS (MLFLOW_TRACKING_URI names the server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between checks of the export")
    parser.add_argument("--key-file", help="the key the export was written with (default $CLUSTERFORGET_KEY(_FILE))")
    parser.add_argument("--token-file", help="a bearer token /predict and /reload require (default $CLUSTERFORGET_TOKEN)")
    parser.add_argument("--trust-code", action="store_true",
                        help="load the shared libraries of an unauthenticated compiled export (runs their code)")
    for name in LIMIT_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args(argv)
    run_server(args.export, args.host, args.port, args.poll, key_file=args.key_file, token_file=args.token_file,
               trust_code=args.trust_code, **{name: getattr(args, name) for name in LIMIT_OPTIONS})


if __name__ == "__main__":
    main()
