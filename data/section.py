"""The ``[data]`` section of a study file (or an export) as a typed model of its top-level keys.

The model checks what every key is (types, bounds, literals) and refuses a key no adapter
reads; what keys mean together (a source's files, a split's groups) stays with the parsers
that use them (:mod:`data.scene`, the adapters of :mod:`data.sources`, :mod:`data.splits`).
A study's schema composes it (``hpo.study.schema``) and keeps the section as written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from data.normalize import NORMALIZATIONS
from data.scene import FORMATS
from data.splits import FOLD_ROLES, SPLIT_METHODS, VALIDATIONS

__all__ = ["DataSection"]

Pixels = Annotated[StrictInt, Field(ge=0)]
Count = Annotated[StrictInt, Field(ge=1)]
Table = dict[str, Any]


class DataSection(BaseModel):
    """Every top-level key of a ``[data]`` section, of the scene and of any adapter.

    Attributes:
        scene: A scene file holding the sources (relative to the study file).
        format: The adapter that reads the data (``geotiff`` when a scene file names none).
        dates: Date names, first to last (geotiff scenes; kashmir's inventory years).
        sources: The scene's sources (``[[data.sources]]``).
        labels: The landslide labels (``[data.labels]``).
        grid: The target grid: a table (geotiff) or the source to align on (hokkaido).
        path: The folder an adapter reads (l4s, patches, kashmir, hokkaido).
        ids: The patches to read (l4s; default: all).
        images: Image file pattern (patches).
        id: Pattern of a patch id in a file name (patches).
        masks: Mask file pattern (patches).
        image_key: HDF5 dataset of the images (patches).
        mask_key: HDF5 dataset of the masks (patches).
        layout: Axis order of the images (patches).
        channels: The images' channels (patches).
        mask_codes: Mask value of each class (patches).
        patch_shape: Patch size when the files do not tell it (patches).
        manifest: A manifest of channels, groups and splits (patches).
        derive: Derived DEM sources (kashmir).
        tpi_radii: Radii of the ``tpi`` outputs (kashmir).
        patch_size: Tile side in pixels.
        overlap: Pixels shared by neighbouring tiles.
        split: How tiles are split into train / val / test.
        fractions: Shares of train, val and test.
        block_size: Tiles per block side of a ``blocked`` split.
        seed: Seed of the split (default: the study's).
        target: ``last``, ``new`` or a label date.
        cache_dir: Where the prepared cube is cached.
        select: The sources the model sees (``all``, ``optical``, ``factor`` or names).
        folds: Cross-validation folds of the split.
        fold: The fold held out.
        fold_role: What the held-out fold is.
        stratify: Spread the landslide share evenly over the splits.
        context: Pixels of context around each tile.
        normalization: How inputs are scaled.
        clip: Robust scales beyond which inputs are clipped.
        validation: How the validation split is drawn.
        buffer: Pixels left out between splits.
        group: How patches are grouped.
        splits: Named split lists of patches.
        train: The training patches.
        val: The validation patches.
        test: The test patches.
        test_groups: The groups held out for testing.
        synthetic: How to regenerate a synthetic scene (``[data.synthetic]``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scene: StrictStr | None = None
    format: Literal[FORMATS] | None = None  # type: ignore[valid-type]
    dates: list[StrictStr] | None = None
    sources: list[Table] | None = None
    labels: Table | None = None
    grid: StrictStr | Table | None = None
    path: StrictStr | None = None
    ids: list[Any] | None = None
    images: StrictStr | None = None
    id: StrictStr | None = None
    masks: StrictStr | None = None
    image_key: StrictStr | None = None
    mask_key: StrictStr | None = None
    layout: StrictStr | None = None
    channels: Any = None
    mask_codes: Table | None = None
    patch_shape: Any = None
    manifest: StrictStr | None = None
    derive: list[StrictStr] | None = None
    tpi_radii: list[Count] | None = None
    patch_size: Count | None = None
    overlap: Pixels | None = None
    split: Literal[SPLIT_METHODS] | None = None  # type: ignore[valid-type]
    fractions: list[Annotated[StrictFloat, Field(ge=0)]] | None = None
    block_size: Count | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] | None = None
    target: StrictStr | None = None
    cache_dir: StrictStr | None = None
    select: StrictStr | list[StrictStr] | None = None
    folds: Annotated[StrictInt, Field(ge=2)] | None = None
    fold: Pixels | None = None
    fold_role: Literal[FOLD_ROLES] | None = None  # type: ignore[valid-type]
    stratify: StrictBool | None = None
    context: Pixels | None = None
    normalization: Literal[NORMALIZATIONS] | None = None  # type: ignore[valid-type]
    clip: Annotated[StrictFloat, Field(gt=0)] | None = None
    validation: Literal[VALIDATIONS] | None = None  # type: ignore[valid-type]
    buffer: Pixels | None = None
    group: Any = None
    splits: Any = None
    train: Any = None
    val: Any = None
    test: Any = None
    test_groups: Any = None
    synthetic: Table | None = None

    @model_validator(mode="after")
    def _names_its_data(self) -> DataSection:
        if self.scene is None and self.format is None:
            raise PydanticCustomError(
                "invalid",
                "[data] has neither 'scene' nor 'format'",
                {
                    "hint": 'point at a scene file (scene = "scene.toml") or describe the '
                    'sources (format = "geotiff", dates, [[data.sources]])'
                },
            )
        return self
