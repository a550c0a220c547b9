"""The ``hpo`` command line: the top parser, dispatch to a command's module, ``main``.

``hpo tune | status | dashboard | export | train | predict | report | synth | compare``;
every subcommand has ``--help``. Errors a user can cause print one line on stderr
(``hpo: error: ...``, with a hint) and exit non-zero: 2 for a bad command line or a file it
names that is missing or not of its kind (study file, export, checkpoint), 1 otherwise.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from hpo.cli import compare, dashboard, export, predict, report, status, synth, train, tune
from hpo.cli._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_status,
    one_line,
)
from hpo.cli._console import consoles, setup_logging

# In the order of `hpo --help`.
COMMANDS = {
    module.__name__.rsplit(".", 1)[-1]: module
    for module in (tune, status, export, dashboard, train, predict, report, synth, compare)
}


def _version() -> str:
    try:
        return version("landslide-hpo")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``hpo: error: ... (see --help)``."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        self.exit(EXIT_USAGE, f"hpo: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``hpo`` command."""
    parser = _Parser(
        prog="hpo",
        description=(
            "Layer-wise hyperparameter optimization (random search, then Bayesian "
            "optimization, stage by stage) for a spatiotemporal fusion network that "
            "recognizes landslides from multi-source, multi-temporal rasters."
        ),
        epilog="Start with: hpo tune studies/quickstart.toml",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and the engine's log")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def _replay(held: list[warnings.WarningMessage]) -> None:
    """Issue held-back warnings again, through the filters now in force."""
    for w in held:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def main(argv: list[str] | None = None) -> int:
    """Run the ``hpo`` command; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    debug = bool(getattr(args, "debug", False))
    out, err = consoles()
    restore_logging = None
    held: list[warnings.WarningMessage] = []
    try:
        restore_logging = setup_logging(out, debug)
        # Libraries' warnings (rasterio's NotGeoreferencedWarning, torch's pickle notice,
        # numpy's on NaN) are held back: before a one-line error they are noise that hides
        # it, so they are shown only when the command gets that far (or with --debug).
        with warnings.catch_warnings(record=True) as caught:
            try:
                code = int(COMMANDS[args.command].run(args, out, err))
            finally:
                held = list(caught)
        _replay(held)
        return code
    except KeyboardInterrupt:
        print("hpo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hpo status --json | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - user errors become one line
        code = exit_status(exc)
        if code is None or debug:
            _replay(held)
            raise
        print(f"hpo: error: {one_line(exc)}", file=sys.stderr)
        return code
    finally:
        if restore_logging is not None:
            restore_logging()

