"""The settings of a patch folder (``format = "patches"``): channels, patches, mask codes.

:mod:`data.sources.patches` reads them from the ``[data]`` section;
:mod:`data.sources.patch_files` reads the patches they describe into a cube.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DATE", "DEFAULT_MASK_CODES", "HDF5_SUFFIXES", "LAYOUTS", "MANIFEST_NAMES",
           "MASK_CLASSES", "Channel", "Patch", "PatchSettings"]

DATE = "image"
"""The cube's one date name: a patch is one observation."""
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
"""Files read with h5py; every other file is read with rasterio (GeoTIFF, TIFF, PNG, ...)."""
LAYOUTS = ("auto", "chw", "hwc")
"""Axis order of a 3-D HDF5 dataset; ``auto`` finds the axis holding the declared channels."""
MASK_CLASSES = ("landslide", "background", "ignore")
"""What ``mask_codes`` maps each mask value to; ``ignore`` pixels are invalid (never scored)."""
DEFAULT_MASK_CODES = {"landslide": (1,), "background": (0,), "ignore": ()}
MANIFEST_NAMES = ("manifest.json", "manifest.toml")
"""Manifest files looked for in the patch folder when the study names none."""
@dataclass(frozen=True)
class Channel:
    """One declared image channel and the cube sources it becomes."""

    name: str
    kind: str
    type: str
    nodata: tuple[float, ...]
    codes: tuple[int, ...]

    @property
    def outputs(self) -> list[str]:
        """Cube source names: the channel, or one per code when one-hot encoded."""
        if self.type == "categorical":
            return [f"{self.name}_{c}" for c in self.codes]
        return [self.name]


@dataclass(frozen=True)
class Patch:
    """One patch: its id, image file and mask file (``None`` when unlabelled)."""

    id: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class PatchSettings:
    """The checked ``[data]`` section of a patch folder."""

    root: Path
    images: str
    masks: str | None
    patches: tuple[Patch, ...]
    channels: tuple[Channel, ...]
    layout: str
    image_key: str | None
    mask_key: str | None
    mask_codes: dict[str, tuple[int, ...]]
    patch_shape: tuple[int, int] | None
    manifest: Path | None = None
    split_options: dict[str, Any] | None = None

    def description(self) -> dict[str, Any]:
        """Everything that shapes the cube, JSON-able (the inputs' stats are added by the key)."""
        return {
            "format": "patches", "root": str(self.root),
            "patches": [[p.id, str(p.image), str(p.mask) if p.mask else None]
                        for p in self.patches],
            "channels": [asdict(c) for c in self.channels], "layout": self.layout,
            "image_key": self.image_key, "mask_key": self.mask_key,
            "mask_codes": {k: list(v) for k, v in self.mask_codes.items()},
            "patch_shape": list(self.patch_shape) if self.patch_shape else None,
            "canvas": "packed",  # each patch at its own size (a cube of padded slots before)
        }
