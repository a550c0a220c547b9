"""The ``hpo`` command line."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("landslide-hpo")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``hpo`` command."""
    parser = argparse.ArgumentParser(
        prog="hpo",
        description=(
            "Layer-wise hyperparameter optimization (random search, then Bayesian "
            "optimization, stage by stage) for a spatiotemporal fusion network that "
            "recognizes landslides from multi-source, multi-temporal rasters."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``hpo`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
