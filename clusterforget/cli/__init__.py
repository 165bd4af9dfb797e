"""The ``clusterforget`` command line (entry point ``clusterforget.cli:main``)."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
