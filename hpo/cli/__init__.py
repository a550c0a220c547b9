"""The ``hpo`` command (or ``python -m hpo.cli``).

One module per command, each with its arguments (``add_parser``) and its work (``run``);
the top parser, dispatch and :func:`main` are in :mod:`hpo.cli.main`.
"""

from hpo.cli.main import main

__all__ = ["main"]
