"""Tiled inference of a trained checkpoint over a whole scene: a landslide-probability GeoTIFF.

The scene is read tile by tile from its cached cube and the map is written strip by
strip, so memory grows with the scene's width, never with its height: about
``2 * tile * width`` floats of blending buffers plus one batch of tiles. Neighbouring tiles
overlap and are blended with a raised-cosine window, so tile seams (where a fully
convolutional network sees least context) do not show in the map.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.engine.atomic import atomic_path
from hpo.engine.errors import HPOError
from hpo.study.figures import pyplot, save_figure

NODATA = -9999.0
"""Value of the map where the scene has no valid input (also the GeoTIFF's nodata)."""
THRESHOLD_TAG = "THRESHOLD"
"""GeoTIFF tag of a probability map: the decision threshold its checkpoint carries."""

_QUICKLOOK_SIDE = 1024
_MIN_DEFAULT_TILE = 256
# Never give a pixel zero weight: at the scene's border no neighbour shares it, and the
# blend divides by the summed weights.
_MIN_WEIGHT = 1e-3


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
    import warnings

    from networks import CheckpointError, load_checkpoint

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


def landslide_probability(model: Any, x: Any) -> Any:
    """Landslide probabilities of a batch: ``(B, S, T, h, w)`` -> ``(B, h, w)``.

    Args:
        model: A model of :mod:`networks` (two-class logits), in eval mode.
        x: Normalized inputs on the model's device.

    Returns:
        The probability of the landslide class per pixel (a tensor).
    """
    import torch

    with torch.no_grad():
        return torch.softmax(model(x.float()).float(), dim=1)[:, 1]


def landslide_log_odds(model: Any, x: Any) -> Any:
    """Landslide log-odds of a batch: ``(B, S, T, h, w)`` -> ``(B, h, w)``.

    The landslide logit minus the background logit, which ranks pixels where float32
    probabilities of a confident model would all round to 0 or 1.

    Args:
        model: A model of :mod:`networks` (two-class logits), in eval mode.
        x: Normalized inputs on the model's device.

    Returns:
        A tensor on the model's device.
    """
    import torch

    with torch.no_grad():
        logits = model(x.float()).float()
    return logits[:, 1] - logits[:, 0]


def blend_window(size: int, overlap: int) -> np.ndarray:
    """A ``(size, size)`` weight: 1 inside, raised-cosine ramps over the overlap at each edge.

    Where two tiles overlap their ramps add up to (about) one, so the blend fades from one
    tile's prediction to the next instead of switching at a seam.

    Args:
        size: Tile side.
        overlap: Pixels shared by neighbouring tiles (0: no ramp).

    Returns:
        float32 weights in ``(0, 1]``.
    """
    ramp = np.ones(size, np.float64)
    if overlap > 0:
        k = np.arange(min(overlap, size))
        up = 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / overlap)
        ramp[: len(k)] = np.minimum(ramp[: len(k)], up)
        ramp[size - len(k) :] = np.minimum(ramp[size - len(k) :], up[::-1])
    ramp = np.maximum(ramp, _MIN_WEIGHT)
    return np.outer(ramp, ramp).astype(np.float32)


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
    import rasterio
    import torch

    from data.shift import outside_training
    from data.splits import Region, make_tiles

    if isinstance(checkpoint, str | Path):
        checkpoint = open_checkpoint(checkpoint)
    check_compatible(checkpoint, cube, where=where)
    extra = checkpoint.extra or {}
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
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = checkpoint.model.to(torch_device).eval()
    threshold = _threshold(extra)

    started = time.monotonic()
    height, width = cube.valid.shape
    stride = tile - overlap
    tiles = make_tiles([Region(0, 0, height, width)], tile, overlap)
    strips: dict[int, list[Any]] = {}
    for t, (_, i, _) in tiles:
        strips.setdefault(i, []).append(t)
    window = blend_window(tile, overlap)
    # Rows [r0, r0 + tile) of the strip being blended; rows above r0 + stride are final
    # once the strip is done, since the next strip starts there.
    acc = np.zeros((tile, width), np.float32)
    weight = np.zeros((tile, width), np.float32)
    stats = _Stats(threshold if threshold is not None else 0.5)
    out = Path(out)
    with atomic_path(out) as tmp:
        with rasterio.open(tmp, "w", **_profile(cube, height, width)) as dst:
            dst.update_tags(**_tags(checkpoint, threshold))
            dst.set_band_description(1, "landslide probability")
            done = 0
            for i in sorted(strips):
                r0 = i * stride
                for chunk in _chunks(strips[i], batch_size):
                    probs = _run(model, cube, chunk, checkpoint, torch_device)
                    for t, p in zip(chunk, probs, strict=True):
                        h, w = t.height, t.width
                        acc[:h, t.col : t.col + w] += p[:h, :w] * window[:h, :w]
                        weight[:h, t.col : t.col + w] += window[:h, :w]
                last = i == max(strips)
                n_rows = (height - r0) if last else min(stride, height - r0)
                values = _finish(acc[:n_rows], weight[:n_rows], cube.valid[r0 : r0 + n_rows])
                stats.add(values)
                dst.write(values, 1, window=rasterio.windows.Window(0, r0, width, n_rows))
                acc = np.roll(acc, -stride, axis=0)
                weight = np.roll(weight, -stride, axis=0)
                acc[tile - stride :] = 0
                weight[tile - stride :] = 0
                done += len(strips[i])
                if progress is not None:
                    progress(done, len(tiles))
    seconds = time.monotonic() - started
    look = write_quicklook(out, out.with_suffix(".png"), threshold) if quicklook else None
    return Prediction(
        path=out,
        quicklook=look,
        shape=(height, width),
        tile=tile,
        overlap=overlap,
        n_tiles=len(tiles),
        seconds=seconds,
        threshold=threshold,
        **stats.summary(height * width),
        outside_training=outside_training(cube, checkpoint.norm_stats, checkpoint.source_names),
    )


def _threshold(extra: dict[str, Any]) -> float | None:
    value = extra.get("threshold")
    return float(value) if isinstance(value, int | float) and 0 < value < 1 else None


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def _run(model: Any, cube: Any, tiles: Sequence[Any], checkpoint: Any, device: Any) -> np.ndarray:
    """Probabilities of a batch of tiles, each padded to the full tile side."""
    import torch

    # The cube's own data set reads, normalizes and pads the inputs as in training.
    items = cube.dataset(tiles, norm=checkpoint.norm_stats, sources=checkpoint.source_names)
    x = torch.stack([items[k][0] for k in range(len(items))]).to(device)
    return landslide_probability(model, x).cpu().numpy()


def _finish(acc: np.ndarray, weight: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = acc / np.maximum(weight, 1e-12)
    values = np.clip(values, 0.0, 1.0)  # blending cannot leave [0, 1], rounding may
    return np.where(np.asarray(valid, bool), values, NODATA).astype(np.float32)


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


def write_quicklook(tif: str | Path, png: str | Path, threshold: float | None = None) -> Path:
    """A PNG quick-look of a probability map, at most 1024 pixels a side.

    The map is read decimated (block averages), so a map larger than memory still fits.

    Args:
        tif: The probability GeoTIFF.
        png: The PNG to write.
        threshold: Drawn as the colour bar's landslide boundary when given.

    Returns:
        The PNG path.
    """
    import rasterio
    from rasterio.enums import Resampling

    plt = pyplot()
    with rasterio.open(tif) as src:
        scale = max(1, math.ceil(max(src.height, src.width) / _QUICKLOOK_SIDE))
        shape = (max(1, src.height // scale), max(1, src.width // scale))
        values = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
    fig, ax = plt.subplots(figsize=(6, 6 * shape[0] / shape[1] + 0.6), dpi=150)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="landslide probability")
    if threshold is not None:
        bar.ax.axhline(threshold, color="cyan", linewidth=1.5)
    ax.set_title(Path(tif).name, fontsize=9)
    return save_figure(fig, png, bbox_inches="tight")


__all__ = [
    "NODATA",
    "THRESHOLD_TAG",
    "CheckpointMismatchError",
    "Prediction",
    "blend_window",
    "check_compatible",
    "landslide_probability",
    "open_checkpoint",
    "predict_scene",
    "write_quicklook",
]
