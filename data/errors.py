"""The data package's exception hierarchy: every error a user can cause is a ``DataError``."""

from __future__ import annotations

from os import PathLike


class DataError(Exception):
    """Base class of every error the data package raises on purpose.

    The message names the file (and the key inside it, when there is one) and ends with a
    hint on how to fix it, so a command line can print it as one line.

    Args:
        message: What is wrong.
        file: The file that is wrong or missing, when there is one.
        key: The key (scene key, vector field, source name) that is wrong, when there is one.
        hint: How to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike[str] | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.key = key
        self.hint = hint
        where = " ".join(p for p in (self.file, f"[{key}]" if key else None) if p)
        head = f"{where}: {message}" if where else message
        super().__init__(f"{head} (hint: {hint})" if hint else head)


class SceneSpecError(DataError, ValueError):
    """A scene description (the ``[data]`` section or a scene.toml) is invalid."""


class SplitFileError(SceneSpecError):
    """A split list, group table or manifest is wrong: ids that overlap, are unknown or repeat."""


class DataNotFoundError(DataError, FileNotFoundError):
    """An input file does not exist."""


class NoFilesMatchedError(DataNotFoundError):
    """A file pattern (e.g. a patch folder's ``images`` glob) matches no file."""


class MissingMaskError(DataNotFoundError):
    """An image patch has no mask file although masks are declared."""


class UnreadableFileError(DataError, OSError):
    """An input file exists but cannot be read as the expected format."""


class CRSMissingError(DataError, ValueError):
    """A raster or vector layer has no coordinate reference system."""


class NoOverlapError(DataError, ValueError):
    """An input does not overlap the target grid."""


class BandCountMismatchError(DataError, ValueError):
    """The dates of one source have different band counts."""


class SizeMismatchError(DataError, ValueError):
    """Arrays that must cover the same pixels (an image patch and its mask) differ in size."""


class AllNodataError(DataError, ValueError):
    """A source has no valid pixel on the target grid."""


class EmptyLabelError(DataError, ValueError):
    """A label layer has no landslide pixel where one is needed (e.g. the training split)."""


class DateParseError(DataError, ValueError):
    """A date name or a date field value cannot be parsed."""


class UnknownCodeError(DataError, ValueError):
    """A categorical raster holds a code that is not in the declared set."""


class TestSplitWithheldError(DataError, PermissionError):
    """Tuning code asked for the test split, which is withheld from it."""

    __test__ = False  # not a pytest test class despite the name


class RasterTooLargeError(DataError, ValueError):
    """A raster header (or a target grid) declares more pixels than the toolkit will allocate."""


class InvalidGeometryError(DataError, ValueError):
    """A vector layer holds invalid geometries (self-intersections, unclosed rings, ...)."""


class EmptyLayerError(DataError, ValueError):
    """A vector layer has no feature with a geometry."""
