"""The ``hpo`` command: one module per command, the parser and dispatch in :mod:`~hpo.cli.main`."""

from hpo.cli.main import main

__all__ = ["main"]
