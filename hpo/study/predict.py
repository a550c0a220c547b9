"""A trained checkpoint over a whole scene: a landslide-probability GeoTIFF (``hpo predict``).

The scene is read tile by tile from its cached cube, run and blended by
:func:`networks.inference.blended_strips`, and the map is written strip by strip, so memory
grows with the scene's width, never with its height.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from data.shift import outside_training
from data.tiles import Region, make_tiles
from hpo.engine.atomic import atomic_path
from hpo.engine.errors import HPOError
from hpo.study.figures import write_quicklook
from hpo.study.files import NODATA, THRESHOLD_TAG
from networks import CheckpointError, load_checkpoint
from networks.inference import blended_strips

_MIN_DEFAULT_TILE = 256


def open_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint of ``hpo train``, with errors that say which command writes one.

    Torch's notice about an unusual pickle protocol (any foreign pickle file) is not
    shown: the file is refused with one line either way.

    Args:
        path: The ``model.pt`` file.

    Returns:
        The loaded :class:`networks.Checkpoint`.

    Raises:
        networks.CheckpointError: The file is missing, not a checkpoint, or unsafe.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            if not Path(path).exists():
                raise CheckpointError(
                    f"{path}: no such checkpoint file",
                    hint="pass the model.pt of a run folder that `hpo train` wrote "
                    "(runs/<search>-<time>/model.pt)",
                ) from exc
            hint = exc.hint or ""
            if "save_checkpoint" not in hint:
                raise
            # the API name means nothing on the command line: name the command instead
            message = str(exc).removesuffix(f" (hint: {hint})")
            raise CheckpointError(
                message,
                hint="pass the model.pt that `hpo train BEST.yaml` writes into its run folder",
            ) from exc


class CheckpointMismatchError(HPOError):
    """A checkpoint cannot run on a scene: other sources, other dates or no grid.

    Args:
        message: What differs.
        hint: How to fix it.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


@dataclass
class Prediction:
    """What :func:`predict_scene` wrote.

    Attributes:
        path: The GeoTIFF.
        quicklook: The PNG quick-look, or ``None``.
        shape: (height, width) of the map.
        tile: Tile side used.
        overlap: Pixels shared by neighbouring tiles.
        n_tiles: Tiles run through the model.
        seconds: Wall time of the inference and writing.
        threshold: The checkpoint's validation-chosen threshold, or ``None``.
        valid_fraction: Share of pixels with a prediction.
        mean_probability: Mean probability over valid pixels.
        landslide_fraction: Share of valid pixels above the threshold (0.5 without one).
        outside_training: Per input channel, the share of the scene's valid values far
            outside the training range (:func:`data.shift.outside_training`).
    """

    path: Path
    quicklook: Path | None
    shape: tuple[int, int]
    tile: int
    overlap: int
    n_tiles: int
    seconds: float
    threshold: float | None
    valid_fraction: float
    mean_probability: float
    landslide_fraction: float
    outside_training: dict[str, float] = field(default_factory=dict)

    @property
    def pixels_per_second(self) -> float:
        """Throughput over the whole run (reading, inference, writing)."""
        return self.shape[0] * self.shape[1] / max(self.seconds, 1e-9)


def check_compatible(checkpoint: Any, cube: Any, *, where: str = "the scene") -> None:
    """Raise unless the checkpoint's model can run on the cube.

    The cube must hold every source the model was trained on (any order, extra sources
    are ignored: inputs are read by name, in the checkpoint's order), as many dates, and
    a grid to write the map on.

    Args:
        checkpoint: A :class:`networks.Checkpoint`.
        cube: A :class:`data.Cube`.
        where: The scene, for messages.

    Raises:
        CheckpointMismatchError: Missing sources, another number of dates, or no grid.
    """
    missing = [n for n in checkpoint.source_names if n not in cube.source_names]
    if missing:
        raise CheckpointMismatchError(
            f"the checkpoint's {checkpoint.model_name} model was trained on sources "
            f"{', '.join(checkpoint.source_names)}; {where} lacks {', '.join(missing)} "
            f"(it has {', '.join(cube.source_names)})",
            hint="use a checkpoint trained on this kind of scene (same sources), or a scene "
            "with the sources the checkpoint names",
        )
    if checkpoint.n_times != len(cube.dates):
        raise CheckpointMismatchError(
            f"the checkpoint's model takes {checkpoint.n_times} dates; {where} has "
            f"{len(cube.dates)} ({', '.join(cube.dates)})",
            hint="use a scene with as many dates as the training scene",
        )
    if cube.crs is None or cube.transform is None:
        raise CheckpointMismatchError(
            f"{where} has no georeferencing (a patch collection such as Landslide4Sense)",
            hint="predict on a gridded scene (GeoTIFF sources) to get a map",
        )


def predict_scene(
    checkpoint: Any,
    cube: Any,
    out: str | Path,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    quicklook: bool = True,
    where: str = "the scene",
    progress: Callable[[int, int], None] | None = None,
) -> Prediction:
    """Write a float32 landslide-probability GeoTIFF of a whole scene.

    The map has the cube's CRS, transform and size; pixels without valid input hold
    :data:`NODATA`. Inputs are normalized with the checkpoint's statistics exactly as in
    training (the cube's own data set class reads them). The file appears atomically.

    Args:
        checkpoint: A :class:`networks.Checkpoint` (or a path to one).
        cube: The scene's :class:`data.Cube`.
        out: The GeoTIFF to write; the quick-look is the same name with ``.png``.
        tile: Tile side (default: 256, or the training patch size when larger).
        overlap: Pixels shared by neighbouring tiles (default: a quarter of the tile).
        batch_size: Tiles per forward pass.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        quicklook: Also write the PNG quick-look.
        where: The scene, for messages.
        progress: Called as ``progress(tiles_done, tiles_total)`` after every strip.

    Returns:
        What was written.

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the scene.
        HPOError: Bad tile, overlap or batch size.
    """
    if isinstance(checkpoint, str | Path):
        checkpoint = open_checkpoint(checkpoint)
    check_compatible(checkpoint, cube, where=where)
    extra = checkpoint.extra or {}
    tile, overlap = _tiling(tile, overlap, batch_size, extra)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = checkpoint.model.to(torch_device).eval()
    threshold = _threshold(extra)

    started = time.monotonic()
    height, width = cube.valid.shape
    rows = _tile_rows(height, width, tile, overlap)
    n_tiles = sum(len(r) for r in rows)
    stats = _Stats(threshold if threshold is not None else 0.5)
    out = Path(out)
    with atomic_path(out) as tmp, rasterio.open(tmp, "w", **_profile(cube, height, width)) as dst:
        dst.update_tags(**_tags(checkpoint, threshold))
        dst.set_band_description(1, "landslide probability")
        blended = blended_strips(
            model, rows, _reader(cube, checkpoint), height=height, width=width, tile=tile,
            overlap=overlap, batch_size=batch_size, device=torch_device,
        )
        for k, (r0, probs) in enumerate(blended):
            stats.add(_write_strip(dst, cube.valid, r0, probs, width))
            if progress is not None:
                progress(sum(len(r) for r in rows[: k + 1]), n_tiles)
    seconds = time.monotonic() - started
    look = write_quicklook(out, out.with_suffix(".png"), threshold) if quicklook else None
    return Prediction(
        path=out,
        quicklook=look,
        shape=(height, width),
        tile=tile,
        overlap=overlap,
        n_tiles=n_tiles,
        seconds=seconds,
        threshold=threshold,
        **stats.summary(height * width),
        outside_training=outside_training(cube, checkpoint.norm_stats, checkpoint.source_names),
    )


def _tiling(
    tile: int | None, overlap: int | None, batch_size: int, extra: dict[str, Any]
) -> tuple[int, int]:
    """The tile side and overlap to predict with, checked (with the batch size)."""
    # The networks are fully convolutional: tiles larger than the training patches see
    # more context and put fewer seams in the map (on the quickstart, 128 px tiles gave
    # the same scene AUC as its 16 px patches, 15x faster).
    tile = int(tile or max(_MIN_DEFAULT_TILE, int(extra.get("patch_size") or 0)))
    overlap = tile // 4 if overlap is None else int(overlap)
    if tile < 4:
        raise HPOError(f"--tile {tile}: use 4 pixels or more")
    if not 0 <= overlap < tile:
        raise HPOError(f"--overlap {overlap}: use 0 <= overlap < tile ({tile})")
    if batch_size < 1:
        raise HPOError(f"--batch {batch_size}: use 1 or more")
    return tile, overlap


def _tile_rows(height: int, width: int, tile: int, overlap: int) -> list[list[Any]]:
    """The scene's tiles by strip (a row of tiles), top to bottom."""
    strips: dict[int, list[Any]] = {}
    for t, (_, i, _) in make_tiles([Region(0, 0, height, width)], tile, overlap):
        strips.setdefault(i, []).append(t)
    return [strips[i] for i in sorted(strips)]


def _write_strip(
    dst: Any, valid: np.ndarray, r0: int, probs: np.ndarray, width: int
) -> np.ndarray:
    """Write one strip of probabilities from row ``r0``, NODATA where no input is valid.

    Returns:
        The values written.
    """
    n_rows = probs.shape[0]
    values = np.where(np.asarray(valid[r0 : r0 + n_rows], bool), probs, NODATA).astype(np.float32)
    dst.write(values, 1, window=rasterio.windows.Window(0, r0, width, n_rows))
    return values


def _threshold(extra: dict[str, Any]) -> float | None:
    value = extra.get("threshold")
    return float(value) if isinstance(value, int | float) and 0 < value < 1 else None


def _reader(cube: Any, checkpoint: Any) -> Callable[[Sequence[Any]], torch.Tensor]:
    """Inputs of a batch of tiles, each padded to the full tile side."""

    def read(tiles: Sequence[Any]) -> torch.Tensor:
        # The cube's own data set reads, normalizes and pads the inputs as in training.
        items = cube.dataset(tiles, norm=checkpoint.norm_stats, sources=checkpoint.source_names)
        return torch.stack([items[k][0] for k in range(len(items))])

    return read


class _Stats:
    """Running summaries of the written map (the map itself is never held whole)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.n_valid = 0
        self.total = 0.0
        self.above = 0

    def add(self, values: np.ndarray) -> None:
        valid = values != NODATA
        self.n_valid += int(valid.sum())
        self.total += float(values[valid].sum(dtype=np.float64))
        self.above += int((values[valid] > self.threshold).sum())

    def summary(self, n_pixels: int) -> dict[str, float]:
        n = max(self.n_valid, 1)
        return {
            "valid_fraction": self.n_valid / max(n_pixels, 1),
            "mean_probability": self.total / n,
            "landslide_fraction": self.above / n,
        }


def _profile(cube: Any, height: int, width: int) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "height": height,
        "width": width,
        "crs": cube.crs,
        "transform": cube.transform,
        "nodata": NODATA,
        "compress": "deflate",
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
    }
    if height >= 256 and width >= 256:  # internal tiles help GIS readers on large maps
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _tags(checkpoint: Any, threshold: float | None) -> dict[str, str]:
    tags = {
        "MODEL": checkpoint.model_name,
        "SOURCES": ",".join(checkpoint.source_names),
        "DATES": str(checkpoint.n_times),
        "UNITS": "probability of landslide",
    }
    if threshold is not None:
        tags[THRESHOLD_TAG] = f"{threshold:.6g}"
    return tags


__all__ = [
    "NODATA",
    "THRESHOLD_TAG",
    "CheckpointMismatchError",
    "Prediction",
    "check_compatible",
    "open_checkpoint",
    "predict_scene",
]
