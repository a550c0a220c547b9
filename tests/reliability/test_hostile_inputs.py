"""Hostile and broken input: every case is a named error that names the file and/or key.

Organised by kind: study files (explicit cases, then hypothesis fuzzing of every key and of
raw bytes), rasters, vectors, checkpoints, and the command line. Each case builds a valid
tiny input in code and breaks it one way.
"""

from __future__ import annotations

import copy
import os
import pickle
import struct
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
from data.errors import EmptyLayerError, InvalidGeometryError, RasterTooLargeError
from hpo.engine.errors import SpecError
from hpo.study.schema import load_study_file
from networks import CheckpointError, ModelConfig, build_model, load_checkpoint, save_checkpoint
from tests.reliability._inputs import (
    ORIGIN,
    RES,
    SIZE,
    STUDY,
    assert_one_line_error,
    run_cli,
    scene_section,
    toml_document,
    write_scene,
    write_study,
    write_tif,
)

# ============================================================================ study files


def _study_error(path: Path, key: str | None, *fragments: str) -> SpecError:
    """Load ``path``; it must raise a SpecError naming the file, ``key`` and ``fragments``."""
    with pytest.raises(SpecError) as info:
        load_study_file(path, check_paths=False)
    err = info.value
    assert err.file == str(path.resolve())
    assert str(path.resolve()) in str(err)
    assert err.key == key
    if key:
        assert f"[{key}]" in str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    assert err.hint, "every study-file error ends with a hint"
    return err


def _edit(old: str, new: str) -> str:
    assert old in STUDY, old
    return STUDY.replace(old, new, 1)


# name -> (study text, dotted key or None for file-level errors, message fragments)
STUDY_CASES: dict[str, tuple[str | bytes, str | None, tuple[str, ...]]] = {
    "empty file": ("", "data", ("missing [data] section",)),
    "binary garbage": (bytes(range(256)) * 4, None, ("not a text file",)),
    "invalid TOML": ('name = "x\n[[stages]\n', None, ("not valid TOML",)),
    "missing stages": (STUDY.split("[[stages]]")[0], "stages", ("no stages",)),
    "stages not an array": (
        "stages = 3\n" + STUDY.split("[[stages]]")[0],
        "stages",
        ("expected an array of tables",),
    ),
    "table of the wrong type": (
        _edit('sampler = "random"', 'sampler = "random"\nrunner = 3'),
        "runner",
        ("expected a table, got an integer",),
    ),
    "NaN bound": (
        _edit("low = 1e-4", "low = nan"),
        'stages.optim.params."optim.lr".low',
        ("low = nan", "finite"),
    ),
    "infinite resources": (
        _edit('sampler = "random"', 'sampler = "random"\n[runner]\ncpu = inf'),
        "runner.cpu",
        ("cpu = inf",),
    ),
    "integer beyond 64 bits": (
        _edit("n_random = 2", f"n_random = {2**70}"),
        "stages.optim.n_random",
        ("does not fit in 64 bits",),
    ),
    "negative seed": (_edit("seed = 0", "seed = -1"), "seed", ("seed = -1",)),
    "huge cycles": (
        _edit("seed = 0", "seed = 0\ncycles = 1000000000"),
        "cycles",
        ("cycles = 1000000000",),
    ),
    "unicode unknown key": (
        _edit("seed = 0", 'seed = 0\n"ステージ" = 1'),
        '"ステージ"',
        ("unknown key 'ステージ'",),
    ),
    "unicode stage name": (
        _edit('name = "optim"', 'name = "最適化"'),
        "stages.最適化.name",
        ("invalid stage name",),
    ),
    "step larger than the range": (
        _edit("step = 8", "step = 800"),
        'stages.temporal.params."temporal.lstm_hidden".step',
        ("larger than the range",),
    ),
    "range too wide to sample": (
        _edit("low = 1e-4, high = 1e-2, log = true", "low = -1e308, high = 1e308"),
        'stages.optim.params."optim.lr".high',
        ("too wide",),
    ),
    "unknown parameter": (
        _edit('"optim.lr" =', '"optim.lrr" ='),
        'stages.optim.params."optim.lrr"',
        ("did you mean",),
    ),
}


@pytest.mark.parametrize("case", sorted(STUDY_CASES))
def test_broken_study_file_is_a_spec_error(tmp_path: Path, case: str) -> None:
    text, key, fragments = STUDY_CASES[case]
    path = tmp_path / "study.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    _study_error(path, key, *fragments)


def test_study_file_that_is_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "study.toml"
    folder.mkdir()
    _study_error(folder, None, "is a folder, not a study file")


@pytest.mark.parametrize(("suffix", "kind"), [(".yaml", "YAML"), (".json", "JSON")])
def test_yaml_or_json_study_is_refused_with_a_toml_hint(
    tmp_path: Path, suffix: str, kind: str
) -> None:
    path = tmp_path / f"study{suffix}"
    text = '{"name": "x", "stages": []}' if kind == "JSON" else "name: x\nstages:\n  - a\n"
    path.write_text(text, encoding="utf-8")
    err = _study_error(path, None, "not valid TOML")
    assert f"study files are TOML, not {kind}" in err.hint


def test_study_files_have_no_include_mechanism(tmp_path: Path) -> None:
    # No include / extends key exists, so a self-including file is just an unknown key
    # (and can never recurse).
    path = tmp_path / "study.toml"
    path.write_text(_edit("seed = 0", 'seed = 0\ninclude = "study.toml"'), encoding="utf-8")
    _study_error(path, "include", "unknown key 'include'")


# ---------------------------------------------------------------- hypothesis: every key

_VALID = tomllib.loads(STUDY)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.booleans(),
    st.dates(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a parsed study (the root included), tables and arrays alike."""
    found = [prefix]
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        found += _paths(v, (*prefix, k))
    return found


@st.composite
def _mutated_studies(draw: st.DrawFn) -> dict[str, Any]:
    """The valid study with 1-3 keys replaced by any TOML value, deleted, or added."""
    doc = copy.deepcopy(_VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:  # the root: add an unknown top-level key, or drop a section
            if action == "add" or not doc:
                doc[draw(_TEXT)] = draw(_VALUES)
            else:
                del doc[draw(st.sampled_from(sorted(doc)))]
            continue
        *head, last = path
        parent = doc
        for part in head:
            parent = parent[part]
        if action == "add" and isinstance(parent[last], dict):
            parent[last][draw(_TEXT)] = draw(_VALUES)
        elif action == "delete":
            del parent[last]
        else:
            parent[last] = draw(_VALUES)
    return doc


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    write_scene(folder / "scene")
    return folder


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_mutated_studies())
def test_fuzzed_study_is_accepted_or_a_named_error(fuzz_dir: Path, doc: dict[str, Any]) -> None:
    """Wrong types, huge numbers, NaN/inf, unicode, missing and unknown keys at every key.

    The loader accepts the file or raises a SpecError naming the file and the key; the CLI's
    dry run (which also checks the data) exits 0 or prints one named line, never a traceback.
    """
    path = fuzz_dir / "fuzz.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    try:
        spec = load_study_file(path, check_paths=False)
    except SpecError as exc:
        assert exc.file == str(path) and exc.key, exc
        assert str(path) in str(exc) and f"[{exc.key}]" in str(exc)
    else:
        assert spec.to_stages() and spec.fingerprint()
    status, _, err = run_cli("tune", str(path), "--dry-run")
    if status != 0:
        assert_one_line_error(status, err)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=300) | _TEXT.map(lambda s: s.encode("utf-8")))
def test_fuzzed_bytes_are_accepted_or_a_named_error(content: bytes) -> None:
    """Any bytes at all: a SpecError naming the file (no UnicodeError, no TOML traceback)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "garbage.toml"
        path.write_bytes(content)
        with pytest.raises(SpecError) as info:
            load_study_file(path, check_paths=False)
        assert info.value.file == str(path.resolve())


# ============================================================================ rasters


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A valid 16 x 16 px scene folder (red, dem, label rasters)."""
    write_scene(tmp_path)
    return tmp_path


def _build_with(scene: Path, source: str, file: str) -> None:
    """Build the scene's cube with ``source`` ("red", "dem" or "labels") read from ``file``."""
    section = scene_section()
    if source == "red":
        section["sources"][0]["paths"]["2008"] = file
    elif source == "dem":
        section["sources"][1]["path"] = file
    else:
        section["labels"]["paths"]["2008"] = file
    data.build_cube(section, base_dir=scene)


def _expect(kind: type[Exception], run: Callable[[], Any], *needles: str) -> Exception:
    """``run()`` raises ``kind``; its message (one line) contains every needle."""
    with pytest.raises(kind) as info:
        run()
    text = str(info.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return info.value


def _gigantic_header(path: Path, side: int = 1_000_000) -> Path:
    """A valid GeoTIFF whose header is rewritten to claim ``side`` x ``side`` pixels.

    The file stays a few hundred bytes: only the ImageWidth, ImageLength and RowsPerStrip
    tags change, so opening it costs nothing and reading it would need terabytes.
    """
    write_tif(path, np.ones((4, 4), np.float32))
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"II*\x00"  # little-endian classic TIFF, as GDAL writes it
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", raw, entry)[0]
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip -> LONG
            struct.pack_into("<HHII", raw, entry, tag, 4, 1, side)
    path.write_bytes(bytes(raw))
    return path


def test_truncated_geotiff(scene: Path) -> None:
    full = (scene / "dem.tif").read_bytes()
    (scene / "cut.tif").write_bytes(full[: len(full) // 2])
    _expect(
        data.UnreadableFileError,
        lambda: _build_with(scene, "dem", "cut.tif"),
        str(scene / "cut.tif"),
        "truncated or damaged",
    )


def test_zero_byte_raster(scene: Path) -> None:
    (scene / "zero.tif").write_bytes(b"")
    _expect(
        data.UnreadableFileError,
        lambda: _build_with(scene, "dem", "zero.tif"),
        str(scene / "zero.tif"),
        "cannot read as a raster",
    )


def test_text_file_with_a_tif_extension(scene: Path) -> None:
    (scene / "notes.tif").write_text("landslide notes, not a raster\n")
    _expect(
        data.UnreadableFileError,
        lambda: _build_with(scene, "dem", "notes.tif"),
        str(scene / "notes.tif"),
        "cannot read as a raster",
    )


def test_nan_only_raster(scene: Path) -> None:
    write_tif(scene / "nan.tif", np.full((SIZE, SIZE), np.nan, np.float32))
    _expect(
        data.AllNodataError,
        lambda: _build_with(scene, "dem", "nan.tif"),
        str(scene / "nan.tif"),
        "[dem]",
        "no valid pixel",
    )


def test_raster_without_crs(scene: Path) -> None:
    write_tif(scene / "nocrs.tif", np.ones((SIZE, SIZE), np.float32), crs=None)
    _expect(
        data.CRSMissingError,
        lambda: _build_with(scene, "red", "nocrs.tif"),
        str(scene / "nocrs.tif"),
        "no coordinate reference system",
    )


def test_raster_whose_crs_does_not_fit_its_coordinates(scene: Path) -> None:
    # UTM metres declared as degrees: the extent cannot be reprojected onto the grid
    write_tif(scene / "degrees.tif", np.ones((SIZE, SIZE), np.float32), crs="EPSG:4326")
    _expect(
        data.NoOverlapError,
        lambda: _build_with(scene, "dem", "degrees.tif"),
        str(scene / "degrees.tif"),
        "does not fit its CRS EPSG:4326",
    )


def test_raster_in_another_crs_off_the_grid(scene: Path) -> None:
    write_tif(scene / "mercator.tif", np.ones((SIZE, SIZE), np.float32), crs="EPSG:3857")
    _expect(
        data.NoOverlapError,
        lambda: _build_with(scene, "dem", "mercator.tif"),
        str(scene / "mercator.tif"),
        "does not overlap the target grid",
    )


@pytest.mark.parametrize("source", ["red", "dem"])
def test_gigantic_header_is_refused_before_allocating(scene: Path, source: str) -> None:
    # "red" is the first optical raster, so it would define the grid (and the cube's size)
    _gigantic_header(scene / "huge.tif")
    _expect(
        RasterTooLargeError,
        lambda: _build_with(scene, source, "huge.tif"),
        str(scene / "huge.tif"),
        "1000000 x 1000000 pixels",
    )


def test_gigantic_target_grid_is_refused(scene: Path) -> None:
    section = scene_section()
    section["grid"] = {
        "crs": "EPSG:32643",
        "resolution": 0.001,
        "bounds": [ORIGIN[0], ORIGIN[1] - 10_000, ORIGIN[0] + 10_000, ORIGIN[1]],
    }
    _expect(
        RasterTooLargeError,
        lambda: data.build_cube(section, base_dir=scene),
        "[data.grid]",
        "10000000 x 10000000 pixels",
    )


def test_non_finite_grid_bounds(scene: Path) -> None:
    section = scene_section()
    section["grid"] = {
        "crs": "EPSG:32643",
        "resolution": RES,
        "bounds": [ORIGIN[0], -float("inf"), ORIGIN[0] + 10 * RES, ORIGIN[1]],
    }
    _expect(
        data.SceneSpecError,
        lambda: data.build_cube(section, base_dir=scene),
        "[data.grid]",
        "not finite",
    )


# ============================================================================ vectors


def _frame(geometries: list[Any], crs: str | None = "EPSG:32643", **fields: list[Any]) -> Any:
    import geopandas as gpd

    return gpd.GeoDataFrame(
        fields or {"id": list(range(len(geometries)))}, geometry=geometries, crs=crs
    )


def _square(x0: float = 60, size: float = 120) -> Any:
    from shapely.geometry import box

    return box(ORIGIN[0] + x0, ORIGIN[1] - x0 - size, ORIGIN[0] + x0 + size, ORIGIN[1] - x0)


def _fault() -> Any:
    from shapely.geometry import LineString

    return LineString([(ORIGIN[0] + 200, ORIGIN[1] + 30), (ORIGIN[0] + 200, ORIGIN[1] - 600)])


def _build_vector(scene: Path, role: str, frame: Any, date_field: str | None = None) -> None:
    """Build the scene with ``frame`` as its label inventory or as a fault layer."""
    frame.to_file(scene / "layer.gpkg", engine="pyogrio")
    section = scene_section()
    if role == "labels":
        section["labels"] = {"vector": "layer.gpkg"}
        if date_field:
            section["labels"]["date_field"] = date_field
    else:
        section["sources"].append(
            {"name": "fault_distance", "kind": "factor", "vector": "layer.gpkg"}
        )
    data.build_cube(section, base_dir=scene)


def test_invalid_geometry_in_an_inventory(scene: Path) -> None:
    from shapely.geometry import Polygon

    x, y = ORIGIN[0] + 60, ORIGIN[1] - 60
    bowtie = Polygon([(x, y), (x + 200, y - 200), (x + 200, y), (x, y - 200)])
    _expect(
        InvalidGeometryError,
        lambda: _build_vector(scene, "labels", _frame([_square(), bowtie])),
        str(scene / "layer.gpkg"),
        "1 invalid geometry, the first at feature 1",
        "Self-intersection",
    )


@pytest.mark.parametrize("role", ["labels", "faults"])
def test_empty_layer(scene: Path, role: str) -> None:
    _expect(
        EmptyLayerError,
        lambda: _build_vector(scene, role, _frame([])),
        str(scene / "layer.gpkg"),
        "no feature with a geometry",
    )


def test_missing_date_field(scene: Path) -> None:
    frame = _frame([_square()], year=["2008"])
    _expect(
        data.SceneSpecError,
        lambda: _build_vector(scene, "labels", frame, "observed"),
        str(scene / "layer.gpkg"),
        "[date_field]",
        "'observed'",
        "available fields",
    )


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([1, 2], "1 is not a date"),
        ([2008.5, 2008.0], "2008.5 is not a date"),
        ([None, "2008"], "is not a date"),
    ],
    ids=["integer codes", "fractional year", "null"],
)
def test_wrongly_typed_date_field(scene: Path, values: list[Any], shown: str) -> None:
    frame = _frame([_square(), _square(200, 60)], year=values)
    _expect(
        data.DateParseError,
        lambda: _build_vector(scene, "labels", frame, "year"),
        str(scene / "layer.gpkg"),
        "[year]",
        shown,
    )


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("role", ["labels", "faults"])
def test_vector_without_crs(scene: Path, role: str) -> None:
    geometry = _square() if role == "labels" else _fault()
    _expect(
        data.CRSMissingError,
        lambda: _build_vector(scene, role, _frame([geometry], None)),
        str(scene / "layer.gpkg"),
        "no coordinate reference system",
    )


@pytest.mark.parametrize("role", ["labels", "faults"])
def test_vector_whose_crs_does_not_fit_its_coordinates(scene: Path, role: str) -> None:
    geometry = _square() if role == "labels" else _fault()
    frame = _frame([geometry], "EPSG:4326")  # UTM metres declared as degrees
    _expect(
        data.NoOverlapError,
        lambda: _build_vector(scene, role, frame),
        str(scene / "layer.gpkg"),
        "do not fit its CRS EPSG:4326",
    )


def test_inventory_in_another_crs_off_the_grid(scene: Path) -> None:
    from shapely.geometry import box

    frame = _frame([box(8.0, 46.0, 8.1, 46.1)], "EPSG:4326")  # the Alps, not Kashmir
    _expect(
        data.NoOverlapError,
        lambda: _build_vector(scene, "labels", frame),
        str(scene / "layer.gpkg"),
        "[labels]",
        "no landslide polygon lies on the grid",
    )


def test_vector_file_that_is_garbage(scene: Path) -> None:
    (scene / "layer.gpkg").write_bytes(os.urandom(512))
    section = scene_section()
    section["labels"] = {"vector": "layer.gpkg"}
    _expect(
        data.UnreadableFileError,
        lambda: data.build_cube(section, base_dir=scene),
        str(scene / "layer.gpkg"),
        "cannot read as a vector layer",
    )


# ============================================================================ checkpoints

SOURCES = ["red", "dem", "lithology"]


class _RunsCode:
    """A pickled object whose unpickling would create ``marker`` (os.mkdir)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid SegNet checkpoint (3 sources, 1 date)."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    model = build_model("segnet", len(SOURCES), 1)
    return save_checkpoint(
        path, model, model_name="segnet", config=ModelConfig(), source_names=SOURCES
    )


def _tampered(checkpoint: Path, tmp_path: Path, **changes: Any) -> Path:
    """The checkpoint with top-level entries replaced (as a damaged or foreign file would)."""
    import torch

    content = torch.load(checkpoint, weights_only=True)
    content.update(changes)
    path = tmp_path / "tampered.pt"
    torch.save(content, path)
    return path


def test_truncated_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    full = checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(full[: len(full) // 3])
    _expect(
        CheckpointError,
        lambda: load_checkpoint(tmp_path / "cut.pt"),
        str(tmp_path / "cut.pt"),
        "not a checkpoint",
    )


def test_zero_byte_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "zero.pt").write_bytes(b"")
    _expect(
        CheckpointError,
        lambda: load_checkpoint(tmp_path / "zero.pt"),
        str(tmp_path / "zero.pt"),
        "not a checkpoint",
    )


def test_checkpoint_of_another_model(checkpoint: Path, tmp_path: Path) -> None:
    path = _tampered(checkpoint, tmp_path, model_name="pspnet")  # SegNet weights, PSPNet label
    _expect(
        CheckpointError,
        lambda: load_checkpoint(path),
        str(path),
        "do not fit model 'pspnet'",
        "missing",
        "unexpected",
    )


def test_checkpoint_with_other_input_sizes(checkpoint: Path, tmp_path: Path) -> None:
    path = _tampered(checkpoint, tmp_path, source_names=["a", "b"])  # shape mismatch
    _expect(
        CheckpointError,
        lambda: load_checkpoint(path),
        str(path),
        "differ in shape",
        "[32, 3, 3, 3] stored, [32, 2, 3, 3] expected",
    )


def test_checkpoint_claiming_a_gigantic_model_is_refused_before_allocating(
    checkpoint: Path, tmp_path: Path
) -> None:
    path = _tampered(checkpoint, tmp_path, n_times=1_000_000)  # SegNet: 3M input channels
    _expect(
        CheckpointError,
        lambda: load_checkpoint(path),
        str(path),
        "1000000 dates would have",
        "but the file holds",
    )


@pytest.mark.parametrize(
    ("version", "shown"),
    [(99, "format 99 is newer"), ("2", "format_version '2'")],
    ids=["newer", "not an integer"],
)
def test_checkpoint_from_another_version(
    checkpoint: Path, tmp_path: Path, version: Any, shown: str
) -> None:
    path = _tampered(checkpoint, tmp_path, format_version=version)
    _expect(CheckpointError, lambda: load_checkpoint(path), str(path), shown)


def test_checkpoint_that_is_a_plain_dict(tmp_path: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "dict.pt")
    _expect(
        CheckpointError,
        lambda: load_checkpoint(tmp_path / "dict.pt"),
        str(tmp_path / "dict.pt"),
        "not a landslide-hpo checkpoint",
    )


def test_checkpoint_with_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "code_ran"
    torch.save({"format": _RunsCode(marker), "state_dict": {}}, tmp_path / "evil.pt")
    _expect(
        CheckpointError,
        lambda: load_checkpoint(tmp_path / "evil.pt"),
        str(tmp_path / "evil.pt"),
        "refused to load",
        "posix.mkdir",
    )
    assert not marker.exists()


def test_raw_pickle_with_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    _expect(
        CheckpointError, lambda: load_checkpoint(tmp_path / "evil.pt"), str(tmp_path / "evil.pt")
    )
    assert not marker.exists()


# ============================================================================ command line


def test_cli_bad_study_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write_study(tmp_path, _edit("low = 1e-4", "low = nan"))
    status, _, err = run_cli("tune", str(path), "--dry-run")
    line = assert_one_line_error(status, err, str(path), '[stages.optim.params."optim.lr".low]')
    assert status == 2 and "hint:" in line


def test_cli_missing_input_file_is_one_line(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    (tmp_path / "scene" / "dem.tif").unlink()
    status, _, err = run_cli("tune", str(path), "--dry-run")
    assert_one_line_error(status, err, str(tmp_path / "scene" / "dem.tif"), "input file missing")


def test_cli_broken_raster_while_tuning_is_one_line(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    dem = tmp_path / "scene" / "dem.tif"
    dem.write_bytes(dem.read_bytes()[: dem.stat().st_size // 2])  # header kept, pixels cut
    status, _, err = run_cli("tune", str(path), "--plain")
    assert_one_line_error(status, err, str(dem), "truncated or damaged")
    assert status == 1


def test_cli_checkpoint_with_code_is_one_line(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "code_ran"
    torch.save({"format": _RunsCode(marker)}, tmp_path / "evil.pt")
    status, _, err = run_cli("predict", str(tmp_path / "evil.pt"), "--scene", str(tmp_path))
    assert_one_line_error(status, err, str(tmp_path / "evil.pt"), "refused to load")
    assert not marker.exists()


def test_cli_export_file_with_yaml_code_is_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    (tmp_path / "best.yaml").write_text(f'!!python/object/apply:os.mkdir ["{marker}"]\n')
    status, _, err = run_cli("train", str(tmp_path / "best.yaml"))
    assert_one_line_error(status, err, str(tmp_path / "best.yaml"), "not valid YAML")
    assert not marker.exists()


def test_cli_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write_study(
        tmp_path, _edit('sampler = "random"', 'sampler = "random"\n[runner]\ncpu = inf')
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "tune", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, str(path), "[runner.cpu]")
    assert proc.returncode == 2


def test_cli_library_warnings_do_not_precede_the_one_line_error(tmp_path: Path) -> None:
    # Regression (issue 21): a library's warning (rasterio's NotGeoreferencedWarning here;
    # torch's pickle-protocol notice, numpy's on NaN) came before the one-line error.
    import subprocess
    import sys

    import rasterio

    path = write_study(tmp_path)
    with rasterio.open(tmp_path / "scene" / "dem.tif", "w", driver="GTiff", width=SIZE,
                       height=SIZE, count=1, dtype="float32") as dst:  # no grid at all
        dst.write(np.ones((1, SIZE, SIZE), np.float32))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "tune", str(path), "--plain"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert_one_line_error(proc.returncode, proc.stderr, str(tmp_path / "scene" / "dem.tif"),
                          "no coordinate reference system")
