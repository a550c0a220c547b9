"""``hpo synth``: the seeded synthetic landslide scene (GeoTIFFs + scene.toml)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from hpo.cli import _common as common
from hpo.study import describe_scene


def add_parser(subparsers: Any) -> None:
    """Add ``hpo synth`` and its arguments."""
    p = common.add_command(
        subparsers,
        "synth",
        "write the seeded synthetic landslide scene (GeoTIFFs + scene.toml)",
        "Write a seeded, multi-temporal synthetic scene (optical dates, DEM, geology, "
        "faults, precipitation, landslide labels) and its scene.toml.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
    p.add_argument("--size", type=int, default=256, help="raster side in pixels (default: 256)")
    p.add_argument("--dates", type=int, default=5, help="optical dates (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo synth``; returns the exit status."""
    # Not at the top: every command imports this module, and `data` loads GDAL.
    from data.synthetic import generate_scene

    if args.size < 16:
        raise common.UsageError(f"--size {args.size}: use 16 pixels or more")
    if args.dates < 1:
        raise common.UsageError(f"--dates {args.dates}: use 1 or more")
    try:
        scene = generate_scene(args.out_dir, size=args.size, n_dates=args.dates, seed=args.seed)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from exc
    out.print(f"wrote {scene.scene_path}", soft_wrap=True)
    out.print(describe_scene(scene), soft_wrap=True)
    return common.EXIT_OK
