"""``hpo predict``: a landslide-probability GeoTIFF of a scene from a trained checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo import study as st
from hpo.cli import _common as common
from hpo.engine.progress import format_duration


def add_parser(subparsers: Any) -> None:
    """Add ``hpo predict`` and its arguments."""
    p = common.add_command(
        subparsers,
        "predict",
        "write a landslide-probability GeoTIFF of a scene with a trained checkpoint",
        "Run a checkpoint of `hpo train` over a whole scene, tile by tile with overlapping "
        "tiles blended, and write a float32 GeoTIFF of landslide probability (the scene's "
        "CRS, transform and size; nodata where the inputs are invalid) plus a PNG quick-look.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model.pt of an `hpo train` run")
    p.add_argument(
        "--scene",
        required=True,
        metavar="DIR|SCENE.toml|STUDY.toml",
        help="the scene: a folder with scene.toml, a scene file, or a study file",
    )
    p.add_argument(
        "-o", "--output", metavar="MAP.tif", default="map.tif", help="output GeoTIFF (map.tif)"
    )
    p.add_argument(
        "--tile", type=int, help="tile side (default: 256, or the training patch when larger)"
    )
    p.add_argument("--overlap", type=int, help="pixels shared by neighbours (default: tile/4)")
    p.add_argument("--batch", type=int, default=8, help="tiles per forward pass (default: 8)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--cache-dir", metavar="DIR", help="where the scene's cube is cached")
    p.add_argument("--no-quicklook", action="store_true", help="do not write the PNG")


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo predict``; returns the exit status."""
    # Not at the top: every command imports this module, and these load torch and GDAL.
    from data.shift import shifted_channels
    from hpo.study.predict import open_checkpoint, predict_scene
    from networks import CheckpointError

    try:
        checkpoint = open_checkpoint(args.checkpoint)  # before the scene: fail fast
    except CheckpointError as exc:  # a file that is no checkpoint is a wrong argument
        raise common.UsageError(str(exc)) from exc
    started = time.monotonic()
    scene = Path(args.scene)
    if not (scene / "scene.toml" if scene.is_dir() else scene).is_file():
        # a missing --scene is a wrong argument, as a missing checkpoint (exit 2)
        raise common.UsageError(
            f"{args.scene}: scene not found (hint: pass a scene folder, scene.toml or study "
            "file)"
        )
    cube = st.open_scene(
        args.scene, cache_dir=args.cache_dir, say=lambda text: out.print(text, soft_wrap=True)
    )
    s, t, h, w = cube.shape
    out.print(
        f"scene {args.scene}: {h} x {w} px, {t} dates, {s} sources "
        f"(prepared in {time.monotonic() - started:.1f}s); model {checkpoint.model_name} on "
        f"{len(checkpoint.source_names)} sources",
        soft_wrap=True,
    )
    result = predict_scene(
        checkpoint,
        cube,
        args.output,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        device=args.device,
        quicklook=not args.no_quicklook,
        where=f"scene {args.scene}",
    )
    cut = result.threshold if result.threshold is not None else 0.5
    out.print(
        f"wrote {result.path} ({result.shape[0]} x {result.shape[1]} px float32, "
        f"{result.n_tiles} tile{'s' if result.n_tiles != 1 else ''} of {result.tile} px, "
        f"overlap {result.overlap}) in "
        f"{format_duration(result.seconds)} ({result.pixels_per_second / 1e6:.2f} Mpx/s)",
        soft_wrap=True,
    )
    out.print(
        f"valid {100 * result.valid_fraction:.1f} % of the scene; mean probability "
        f"{result.mean_probability:.3f}; {100 * result.landslide_fraction:.2f} % above "
        + (f"the validation threshold {cut:.3f}" if result.threshold is not None else "0.5")
    )
    named = shifted_channels(result.outside_training)
    if named:
        err.print(
            f"[yellow]warning:[/yellow] inputs far outside the training range ({named} of "
            "valid values lie beyond the training 2-98 % range by more than its width): the "
            "model extrapolates there, so read the map there with care (a study's `clip` "
            "bounds how far)",
            soft_wrap=True,
        )
    if result.quicklook is not None:
        out.print(f"quick-look: {result.quicklook}", soft_wrap=True)
    return common.EXIT_OK
