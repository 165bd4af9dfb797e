"""The ``clusterforget`` command line (entry point ``clusterforget.cli:main``), built with click and rich.

One module per command group; each adds its commands to the ``cli`` group of ``app`` when imported:

* ``model``   fit, predict, info, ledger, demo
* ``changes`` forget, forget-group, retrain, relabel, reweight (``--request-id``, ``--dry-run``, ``--yes``)
* ``checks``  verify (probe check, or --request-id/--checks audit), certificate, verify-certificate
* ``serving`` export, serve
* ``planning`` plan
* ``suspects`` suspects (rows whose labels look wrong, harmful groups; ``--holdout`` estimates acting on them)

Command groups of the layers below (export, certificates, plan, serve) go in their own module here, use
``app.cli.command``, ``app.load_model`` and ``changes.run_change`` for the same conventions, and are imported
below.
"""

from . import changes, checks, model, planning, serving, suspects  # noqa: F401 - importing a module registers its commands
from .app import EXIT_OK, EXIT_STORE, EXIT_USAGE, EXIT_USER, cli, main

__all__ = ["main", "cli", "EXIT_OK", "EXIT_USER", "EXIT_USAGE", "EXIT_STORE"]
