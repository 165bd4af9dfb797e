"""The ``clusterforget`` command group and what every command shares: exit codes, errors, output, confirmation.

Exit codes: 0 done, 1 user error (bad input, unknown id, refused confirmation), 2 usage error (click's own),
3 store problem (lock held, checksum mismatch, unreadable store). An error is one line and a hint on standard
error; the traceback only with ``--debug`` (or ``CLUSTERFORGET_DEBUG=1``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from typing import Any, Callable, Sequence

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ClusterForgetError, InputError, LockError, StoreError, VersionError

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3

_STATE: dict[str, Any] = {"debug": False, "lock_timeout": None}


class Refused(InputError):
    """A destructive command was not confirmed (answered no, or no terminal to ask on and no ``--yes``)."""


def interactive() -> bool:
    """Whether a person is at the terminal: progress bars and confirmation prompts only then."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def console(stderr: bool = False) -> Console:
    # markup and emoji codes off: what is printed comes from stores and data files written by others, and a
    # request id "[/bold]" or ":fire:" must print as typed (a table's header style is a style, not markup)
    stream = sys.stderr if stderr else sys.stdout
    # a wide fixed width when piped, so tables are never cut to 80 columns in logs
    return Console(file=stream, width=None if stream.isatty() else 200, highlight=False, soft_wrap=False,
                   markup=False, emoji=False)


# C0/C1 control characters (ESC starts terminal sequences that hide, recolour or link text) and DEL
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: Any, lines: bool = True) -> str:
    """Data-derived text made safe for a terminal: control characters shown as ``\\xNN`` escapes (newlines and
    tabs too unless ``lines``)."""
    pattern = _CONTROL if lines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def text(value: Any, lines: bool = False) -> Text:
    """Data as a rich ``Text`` (one line unless ``lines``): printed as it is (``plain``), never parsed as markup
    by any console."""
    return Text(plain(value, lines=lines))


def say(message: Any, err: bool = False) -> None:
    """``click.echo`` of text that may carry data (request ids, keys, rule text): control characters escaped."""
    click.echo(plain(message), err=err)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


class SafeTable(Table):
    """A table whose cells are data: each is rendered as plain text, never as markup."""

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(c if isinstance(c, Text) else text(c) for c in cells), **kwargs)


def table(*columns: str, title: str | None = None) -> Table:
    t = SafeTable(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in {"rows", "weight", "seconds", "version", "#"} else "left")
    return t


def load_model(store: str, progress: bool = False, refit: bool = False) -> Any:
    """The model in ``store``, bound to it; training progress shown only at a terminal (``progress``); ``refit``:
    members fitted under another scikit-learn version come back pending (``cf.load(refit=True)``)."""
    from .. import load

    return load(store, verbose=bool(progress and interactive()), **({"refit": True} if refit else {}), **lock_timeout())


def lock_timeout() -> dict:
    """``clusterforget --lock-timeout S`` as keyword arguments of the store's writers (none: their default)."""
    return {} if _STATE["lock_timeout"] is None else {"lock_timeout": _STATE["lock_timeout"]}


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output (JSON)")(f)


# the first matching type's hint wins: subclasses before the classes they extend
_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (LockError, "another clusterforget command is writing this store; retry when it is done, or wait longer with "
                "--lock-timeout"),
    (VersionError, "the store was not changed; install the version named above, or refit with "
                   "`clusterforget retrain STORE --refit`"),
    (StoreError, "the store was not changed; check the path, or restore the store from its backup"),
    (Refused, "run with --dry-run to see the plan, and with --yes to go ahead without a prompt"),
    (ClusterForgetError, "nothing was changed; fix the input and run the command again"),
    (OSError, "check that the path exists, that you may read or write it, and that the disk has space"),
)


def _hint(exc: BaseException) -> str:
    return next((hint for kind, hint in _HINTS if isinstance(exc, kind)),
                "this looks like a bug in clusterforget: rerun with --debug and report the traceback")


def _fail(exc: BaseException, code: int) -> int:
    if _STATE["debug"]:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (ClusterForgetError, OSError)):
        message = f"{type(exc).__name__}: {message}"
    if len(message) > 2000:  # an error quoting a huge value stays readable
        message = message[:2000] + " ..."
    say(f"error: {message}", err=True)
    say(f"hint: {_hint(exc)}", err=True)
    return code


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, envvar="CLUSTERFORGET_DEBUG", help="show the traceback of an error")
@click.option("--lock-timeout", type=click.FloatRange(0), metavar="SECONDS",
              help="how long to wait for another writer of the store (default 10)")
@click.option("--learner-module", "learner_modules", multiple=True, metavar="MODULE",
              envvar="CLUSTERFORGET_LEARNER_MODULES",
              help="import this module first: it registers a plugin learner, which --learner and the stores of its "
                   "models then know (repeat for several; env: space-separated)")
@click.version_option(package_name="clusterforget")
def cli(debug: bool, lock_timeout: float | None, learner_modules: tuple[str, ...]) -> None:
    """Exact machine unlearning for tabular data: fit a grouped ensemble into a store, forget rows or
    groups, relabel, predict, and audit what each deletion request did.

    \b
      clusterforget fit data/titanic.csv --target survived --drop alive --group-by pclass --store stores/titanic
      clusterforget forget stores/titanic --ids 17 42 --request-id REQ-1042 --dry-run
      clusterforget forget stores/titanic --ids 17 42 --request-id REQ-1042 --yes
      clusterforget ledger stores/titanic
    """
    _STATE["debug"] = _STATE["debug"] or debug
    _STATE["lock_timeout"] = lock_timeout
    if learner_modules:
        from ..members import register_module  # here: before the command's options (``--learner``) are parsed

        for module in learner_modules:
            register_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _STATE["debug"] = "--debug" in args[:1] or os.environ.get("CLUSTERFORGET_DEBUG", "") not in ("", "0")
    try:
        code = cli.main(args=args, prog_name="clusterforget", standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.Abort:  # Ctrl-C or end of input at a prompt
        click.echo("error: aborted; nothing was changed", err=True)
        return EXIT_USER
    except click.ClickException as exc:  # usage errors: click's message and usage line, code 2
        exc.show()
        return exc.exit_code
    except StoreError as exc:
        return _fail(exc, EXIT_STORE)
    except ClusterForgetError as exc:
        return _fail(exc, EXIT_USER)
    except OSError as exc:  # a path given on the command line: one line and a hint, not a traceback
        return _fail(exc, EXIT_USER)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line instead of a traceback, unless --debug
        return _fail(exc, EXIT_USER)

