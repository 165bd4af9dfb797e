"""``python -m clusterforget`` and the ``clusterforget`` command: the command line, with a clean exit."""

import sys
import traceback

from ._compat import exit_now, passive_openmp


def run() -> None:
    """Run the command line and exit with its code (see ``_compat.exit_now`` for why not ``sys.exit``)."""
    passive_openmp()  # before LightGBM / XGBoost load their OpenMP runtimes
    from .cli import main

    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code)


if __name__ == "__main__":
    run()
