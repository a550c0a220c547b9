"""The generic patch-folder source (``format = "patches"``) on tiny folders written in code."""

from __future__ import annotations

import tomllib
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

import data
from networks.metrics import segmentation_metrics

from .conftest import shared_data_dir, write_tif

ROOT = Path(__file__).parents[2]
SIZES = [(12, 10), (8, 8), (10, 14)]  # the PNG set: slot 12 x 14
MULTI_CODES = {"landslide": [1, 2], "background": [0], "ignore": [255]}


def _raster(path: Path, array: np.ndarray, *, driver: str = "GTiff",
            nodata: float | None = None) -> Path:
    """Write (bands, rows, cols) or (rows, cols) without georeferencing (PNG, plain TIFF)."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=array.shape[2], height=array.shape[1],
                           count=array.shape[0], dtype=array.dtype, nodata=nodata) as dst:
            dst.write(array)
    return path


def _h5(path: Path, **datasets: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def _png_set(root: Path) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """Three RGB uint8 PNG patches of different sizes, masks with codes 0, 1, 2 and 255."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i, (h, w) in enumerate(SIZES):
        image = rng.integers(0, 250, (3, h, w)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[1:4, 1:4] = 1
        mask[4:6, 2:5] = 2
        mask[0, :] = 255
        _raster(root / "img" / f"p{i}.png", image, driver="PNG")
        _raster(root / "mask" / f"p{i}.png", mask, driver="PNG")
        images.append(image)
        masks.append(mask)
    section = {"format": "patches", "path": str(root), "images": "img/*.png",
               "masks": "mask/{stem}.png", "mask_codes": MULTI_CODES,
               "channels": [{"name": n, "kind": "optical"} for n in ("red", "green", "blue")]}
    return section, images, masks


def test_png_patches_keep_their_size_and_padding_never_counts(tmp_path):
    section, images, masks = _png_set(tmp_path)
    cube = data.build_cube(section, base_dir=tmp_path)
    # packed into shelves 14 px wide, tallest first: 12 + 10 + 8 rows, not 3 slots of 12 x 14
    assert cube.shape == (3, 1, 30, 14) and cube.patch_shape == (12, 14)
    assert cube.crs is None and cube.meta["patch_ids"] == ["p0", "p1", "p2"]
    assert [p["size"] for p in cube.meta["patches"]] == [list(s) for s in SIZES]
    assert all(p["offset"] == [0, 0] for p in cube.meta["patches"])
    assert [tuple(r) for r in cube.regions] == [(0, 0, 12, 10), (22, 0, 8, 8), (12, 0, 10, 14)]
    values = np.asarray(cube.values)
    covered = np.zeros(cube.valid.shape, bool)
    for region, image, mask in zip(cube.regions, images, masks, strict=True):
        cells = np.s_[region.row: region.row + region.height,
                      region.col: region.col + region.width]
        covered[cells] = True
        assert np.array_equal(values[:, 0][(slice(None), *cells)], image.astype(np.float32))
        assert np.array_equal(cube.valid[cells], mask != 255)  # ignore code -> invalid
        assert np.array_equal(cube.labels[cells], np.isin(mask, [1, 2]))
    assert np.isnan(values[:, 0][:, ~covered]).all() and not cube.valid[~covered].any()
    tiles = cube.tiles(patch_size=16)
    assert len(tiles) == 3  # one tile per patch, padded to 16 x 16 in the samples
    ds = cube.dataset(tiles, norm=cube.norm_stats(tiles))
    samples = [ds[i] for i in range(len(ds))]
    y = torch.stack([s[1] for s in samples])
    valid = torch.stack([s[2] for s in samples])
    assert int(valid.sum()) == sum(int((m != 255).sum()) for m in masks)
    # right on every valid pixel, wrong on every padded or ignored one
    prob = torch.where(valid, y.float(), 1.0 - y.float())
    assert segmentation_metrics(prob, y, valid)["f1"] == 1.0
    assert segmentation_metrics(prob, y)["f1"] < 0.5  # what counting the padding would cost


def test_declared_patch_shape_crops_around_the_centre(tmp_path):
    section, images, _ = _png_set(tmp_path)
    cube = data.build_cube({**section, "patch_shape": [8, 8]}, base_dir=tmp_path)
    assert cube.patch_shape == (8, 8) and cube.shape[2:] == (24, 8)
    offsets = [p["offset"] for p in cube.meta["patches"]]
    assert offsets == [[2, 1], [0, 0], [1, 3]]
    values = np.asarray(cube.values)
    for k, (image, (r0, c0)) in enumerate(zip(images, offsets, strict=True)):
        assert np.array_equal(values[:, 0, 8 * k: 8 * (k + 1)],
                              image[:, r0: r0 + 8, c0: c0 + 8].astype(np.float32))


def test_geotiff_nodata_lists_file_nodata_and_categorical_channels(tmp_path):
    rng = np.random.default_rng(1)
    stacks = []
    for i in range(2):
        refl = rng.uniform(0, 0.4, (6, 6)).astype(np.float32)
        refl[0, 0] = -9999  # the file's nodata: used, as refl declares none
        dem = rng.uniform(100, 900, (6, 6)).astype(np.float32)
        dem[1, 1], dem[2, 2] = -9999, -32768  # both declared
        geology = rng.integers(1, 4, (6, 6)).astype(np.float32)
        geology[3, 3] = 0
        stacks.append(np.stack([refl, dem, geology]))
        write_tif(tmp_path / "img" / f"tile_{i}.tif", stacks[-1], nodata=-9999)
        write_tif(tmp_path / "mask" / f"tile_{i}.tif", (dem > 500).astype(np.uint8))
    section = {"format": "patches", "path": str(tmp_path), "images": "img/tile_*.tif",
               "masks": "mask/{stem}.tif", "channels": [
                   {"name": "refl", "kind": "optical"},
                   {"name": "dem", "kind": "factor", "nodata": [-9999, -32768]},
                   {"name": "geology", "kind": "factor", "type": "categorical",
                    "codes": [1, 2, 3], "nodata": 0}]}
    cube = data.build_cube(section, base_dir=tmp_path)
    assert cube.source_names == ["refl", "dem", "geology_1", "geology_2", "geology_3"]
    assert [s["store"] for s in cube.meta["sources"]] == ["dynamic"] + ["static"] * 4
    assert cube.source_types == ["continuous"] * 2 + ["categorical"] * 3
    invalid = np.zeros((6, 6), bool)
    invalid[0, 0] = invalid[1, 1] = invalid[2, 2] = invalid[3, 3] = True
    assert np.array_equal(cube.valid, np.vstack([~invalid, ~invalid]))
    onehot = np.asarray(cube.values[2:, 0, :6])
    geology = stacks[0][2]
    for j, code in enumerate((1, 2, 3)):
        assert np.array_equal(onehot[j][~invalid], (geology == code)[~invalid])
    ds = cube.dataset(cube.tiles(patch_size=6), norm=cube.norm_stats(cube.tiles(patch_size=6)))
    x, _, valid = ds[0]
    assert torch.equal(x[2:, 0][:, valid], torch.from_numpy(onehot[:, valid.numpy()]))
    assert x[1, 0][valid].abs().max() < 3  # metres were scaled, one-hot left as it is


@pytest.mark.parametrize("n", [1, 15])
def test_any_channel_count_unlabelled_tiff(tmp_path, n):
    rng = np.random.default_rng(n)
    stacks = [_raster(tmp_path / "img" / f"{i}.tif", rng.random((n, 5, 7)).astype(np.float32))
              for i in range(2)]
    channels = [{"name": f"b{c}", "kind": ("optical", "factor")[c % 2]} for c in range(n)]
    section = {"format": "patches", "path": str(tmp_path), "images": "img/*.tif",
               "channels": channels}
    cube = data.build_cube(section, base_dir=tmp_path)
    assert cube.shape == (n, 1, 10, 7) and cube.labels is None and cube.label_dates == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(stacks[1]) as src:
            assert np.array_equal(np.asarray(cube.values)[:, 0, 5:], src.read())


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_hdf5_channels_first_or_last(tmp_path, layout):
    rng = np.random.default_rng(2)
    arrays = [rng.random((4, 6, 5)) for _ in range(2)]
    for i, chw in enumerate(arrays, start=1):
        stored = chw if layout == "chw" else np.moveaxis(chw, 0, -1)
        _h5(tmp_path / "img" / f"image_{i}.h5", img=stored, extra=np.zeros(3))
        _h5(tmp_path / "mask" / f"mask_{i}.h5", mask=(chw[0] > 0.5).astype(np.uint8))
    section = {"format": "patches", "path": str(tmp_path), "images": "img/image_*.h5",
               "id": r"image_(?P<id>\d+)", "masks": "mask/mask_{id}.h5", "image_key": "img",
               "channels": [{"name": f"c{c}", "kind": "optical"} for c in range(4)]}
    for given in ("auto", layout):
        cube = data.build_cube({**section, "layout": given}, base_dir=tmp_path)
        expected = np.concatenate(arrays, axis=1).astype(np.float32)
        assert np.array_equal(np.asarray(cube.values)[:, 0], expected)
        assert np.array_equal(cube.labels, expected[0] > 0.5)
    unkeyed = {k: v for k, v in section.items() if k != "image_key"}
    with pytest.raises(data.UnreadableFileError, match=r"image_1.h5 \[data.image_key\].*'extra'"):
        data.build_cube(unkeyed, base_dir=tmp_path)
    _h5(tmp_path / "sq" / "a.h5", img=rng.random((4, 6, 4)))  # 4 rows, 6 cols or 4 channels?
    square = {k: v for k, v in section.items() if k not in ("masks", "id")}
    square["images"] = "sq/*.h5"
    with pytest.raises(data.SceneSpecError, match=r"a.h5 \[data.layout\].*both"):
        data.build_cube(square, base_dir=tmp_path)
    (tmp_path / "img" / "image_2.h5").write_bytes(b"not hdf5")
    with pytest.raises(data.UnreadableFileError, match="image_2.h5.*cannot read as HDF5"):
        data.build_cube(section, base_dir=tmp_path)


def _remove_a_mask(root: Path, section: dict[str, Any]) -> None:
    (root / "mask" / "p1.png").unlink()


def _mask_of_another_size(root: Path, section: dict[str, Any]) -> None:
    _raster(root / "mask" / "p1.png", np.zeros((5, 5), np.uint8), driver="PNG")


def _undeclared_mask_code(root: Path, section: dict[str, Any]) -> None:
    mask = np.zeros((10, 14), np.uint8)
    mask[2, 2], mask[3, 3], mask[4, 4] = 7, 1, 255
    _raster(root / "mask" / "p2.png", mask, driver="PNG")


def _declare_two_channels(root: Path, section: dict[str, Any]) -> None:
    section["channels"] = section["channels"][:2]


def _pattern_matching_nothing(root: Path, section: dict[str, Any]) -> None:
    section["images"] = "img/*.jpg"


def _corrupt_image(root: Path, section: dict[str, Any]) -> None:
    (root / "img" / "p1.png").write_bytes(b"not a png")


@pytest.mark.parametrize(("spoil", "error", "match"), [
    (_remove_a_mask, data.MissingMaskError, r"mask/p1.png \[data.masks\]: image p1.png has no"),
    (_mask_of_another_size, data.SizeMismatchError, r"mask/p1.png.*5 x 5 px.*p1.png 8 x 8 px"),
    (_undeclared_mask_code, data.UnknownCodeError,
     r"mask/p2.png \[data.mask_codes\]: mask code\(s\) \[7\].*holds \[0, 1, 7, 255\]"),
    (_declare_two_channels, data.BandCountMismatchError, r"p0.png.*\(3, 12, 10\).*2 declared"),
    (_pattern_matching_nothing, data.NoFilesMatchedError, r"\[data.images\]: no file matches"),
    (_corrupt_image, data.UnreadableFileError, r"img/p1.png: cannot read"),
], ids=["missing-mask", "size-mismatch", "unknown-code", "channel-count", "no-match",
        "unreadable"])
def test_named_errors(tmp_path, spoil: Callable[..., None], error: type, match: str):
    section, _, _ = _png_set(tmp_path)
    spoil(tmp_path, section)
    with pytest.raises(error, match=match) as info:
        data.build_cube(section, base_dir=tmp_path)
    assert isinstance(info.value, data.DataError) and info.value.hint


def test_a_truncated_tiff_is_unreadable(tmp_path):
    path = _raster(tmp_path / "img" / "a.tif", np.ones((3, 64, 64), np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # opens, fails to read
    section = {"format": "patches", "path": str(tmp_path), "images": "img/*.tif",
               "channels": [{"name": n, "kind": "optical"} for n in "abc"]}
    with pytest.raises(data.UnreadableFileError, match=r"a.tif: cannot read its pixels"):
        data.build_cube(section, base_dir=tmp_path)


@pytest.mark.parametrize(("change", "key"), [
    ({"layout": "whc"}, "data.layout"),
    ({"mask_codes": {"landslide": [1], "background": [1]}}, "data.mask_codes"),
    ({"mask_codes": {"landslide": [1], "water": [3]}}, "data.mask_codes"),
    ({"id": "p[0-9]"}, "data.id"),
    ({"masks": "mask/{name}.png"}, "data.masks"),
    ({"channels": [{"name": "a", "kind": "optic"}]}, "data.channels[0] (a)"),
    ({"channels": [{"name": "a", "kind": "factor", "nodata": "none"}]},
     "data.channels[0] (a).nodata"),
    ({"patch_shape": [0, 4]}, "data.patch_shape"),
    ({"grid": {"crs": "EPSG:4326"}}, "data"),
])
def test_bad_settings_name_their_key(tmp_path, change: dict[str, Any], key: str):
    section, _, _ = _png_set(tmp_path)
    with pytest.raises(data.SceneSpecError) as info:
        data.build_cube({**section, **change}, base_dir=tmp_path)
    assert info.value.key == key and info.value.hint


def _patch_cube(root: Path, n: int = 7, **options: Any) -> data.Cube:
    """``n`` 8 x 8 single-channel patches, each with a landslide pixel."""
    rng = np.random.default_rng(3)
    for i in range(n):
        _raster(root / "img" / f"{i}.tif", rng.random((1, 8, 8)).astype(np.float32))
        mask = np.zeros((8, 8), np.uint8)
        mask[i % 8, 2] = 1
        _raster(root / "mask" / f"{i}.tif", mask)
    section = {"format": "patches", "path": str(root), "images": "img/*.tif",
               "masks": "mask/{stem}.tif", "channels": [{"name": "v", "kind": "optical"}],
               **options}
    return data.build_cube(section, base_dir=root)


def _patches(tiles) -> set[int]:
    return {t.row // 8 for t in tiles}


def test_k_fold_splits_are_disjoint_grouped_by_patch_and_cover_every_patch(tmp_path):
    cube = _patch_cube(tmp_path, folds=3, fold=1, seed=5, patch_size=4)
    runs = [cube.splits(fold=f) for f in range(3)]
    test = _patches(runs[0].test)
    assert len(test) == 2 and all(_patches(s.test) == test for s in runs)  # round(0.3 * 7)
    vals = [_patches(s.val) for s in runs]
    assert sorted(len(v) for v in vals) == [1, 2, 2]
    assert sum(len(v) for v in vals) + len(test) == 7  # disjoint ...
    assert test | set().union(*vals) == set(range(7))  # ... and covering every patch
    for s, val in zip(runs, vals, strict=True):
        assert _patches(s.train) == set(range(7)) - test - val
        for part in (s.train, s.val, s.test):  # a patch's 4 tiles stay together
            assert len(part) == 4 * len(_patches(part))
    by_option = cube.splits()
    assert by_option.val == runs[1].val and by_option.info["folds"] == 3
    assert by_option.info["fold"] == 1
    assert cube.splits(fold=1).train == runs[1].train  # deterministic with the seed
    others = [_patches(cube.splits(fold=0, seed=s).val) for s in range(6)]
    assert len({frozenset(v) for v in others}) > 1


def test_test_rotating_folds_test_every_patch_once(tmp_path):
    cube = _patch_cube(tmp_path, folds=3, fold_role="test", seed=5, patch_size=4,
                       fractions=[0.6, 0.2, 0.2])
    runs = [cube.splits(fold=f) for f in range(3)]
    tests = [_patches(s.test) for s in runs]
    assert sorted(len(t) for t in tests) == [2, 2, 3]
    assert set().union(*tests) == set(range(7))  # each patch is tested in exactly one fold
    for s, test in zip(runs, tests, strict=True):
        val, train = _patches(s.val), _patches(s.train)
        assert len(val) == 1 and not (val & test) and train == set(range(7)) - test - val
    assert runs[0].info["fold_role"] == "test"
    with pytest.raises(data.SceneSpecError, match="fold_role must be one of"):
        cube.splits(fold_role="train")


def _skewed_cube(root: Path, **options: Any) -> data.Cube:
    """12 8 x 8 patches: the even ones with one landslide pixel, the odd ones with 24."""
    for i in range(12):
        _raster(root / "img" / f"{i}.tif", np.full((1, 8, 8), i, np.float32))
        mask = np.zeros((8, 8), np.uint8)
        mask[: 3 if i % 2 else 1, : 8 if i % 2 else 1] = 1
        _raster(root / "mask" / f"{i}.tif", mask)
    section = {"format": "patches", "path": str(root), "images": "img/*.tif",
               "masks": "mask/{stem}.tif", "channels": [{"name": "v", "kind": "optical"}],
               "patch_size": 8, **options}
    return data.build_cube(section, base_dir=root)


def _heavy(tiles) -> int:
    return sum(t.row // 8 % 2 for t in tiles)


def test_stratified_splits_spread_every_split_over_the_landslide_shares(tmp_path):
    cube = _skewed_cube(tmp_path, fractions=[0.5, 1 / 6, 1 / 3])
    plain = [cube.splits(seed=s) for s in range(20)]
    stratified = [cube.splits(seed=s, stratify=True) for s in range(20)]
    for p, s in zip(plain, stratified, strict=True):
        assert [len(x) for x in (s.train, s.val, s.test)] == [len(x) for x in (p.train, p.val,
                                                                                 p.test)]
        assert (_heavy(s.train), _heavy(s.val), _heavy(s.test)) == (3, 1, 2)
    assert s.info["stratify"] is True and "stratify" not in plain[0].info
    # a plain shuffle of 12 patches often leaves a split all heavy or all light
    assert any((_heavy(p.val), _heavy(p.test)) != (1, 2) for p in plain)
    assert len({tuple(s.test) for s in stratified}) > 1  # still shuffled by the seed


@pytest.mark.parametrize("fold_role", ["test", "validation"])
def test_stratified_folds_each_draw_from_every_share(tmp_path, fold_role):
    cube = _skewed_cube(tmp_path, folds=3, fold_role=fold_role, stratify=True,
                        fractions=[0.5, 0.25, 0.25])
    for seed in range(10):
        runs = [cube.splits(fold=f, seed=seed) for f in range(3)]
        held = [r.test if fold_role == "test" else r.val for r in runs]
        assert set().union(*(_patches(h) for h in held)) == set(range(12)) - (
            set() if fold_role == "test" else _patches(runs[0].test))
        heavy = [_heavy(h) for h in held]  # as many heavy patches in each fold, give or take one
        assert max(heavy) - min(heavy) <= (0 if fold_role == "test" else 1)


def test_context_never_reads_a_neighbouring_patch(tmp_path):
    cube = _skewed_cube(tmp_path, patch_size=4)
    tiles = [t for t in cube.tiles() if t.row // 8 == 2]  # patch 2 (value 2): 4 tiles
    for tile, (x, _, valid) in zip(tiles, cube.dataset(tiles, context=2), strict=True):
        top, left = tile.row % 8 == 0, tile.col == 0
        rows = slice(2, 8) if top else slice(0, 6)  # inside the patch: the tile + its context
        cols = slice(2, 8) if left else slice(0, 6)
        assert (x[0, 0, rows, cols] == 2).all()
        assert (x[0, 0][valid] == 2).all() and valid.sum() == 16
        outside = torch.ones(8, 8, dtype=torch.bool)
        outside[rows, cols] = False
        assert (x[0, 0][outside] == 0).all()  # padding where patches 1 and 3 lie in the cube


def test_stratify_needs_a_boolean(tmp_path):
    cube = _skewed_cube(tmp_path)
    with pytest.raises(data.SceneSpecError, match="stratify must be true or false"):
        cube.splits(stratify="yes")


@pytest.mark.parametrize(("folds", "fold", "match"), [
    (1, 0, "folds must be an integer >= 2"),
    (3, 3, r"fold must be an integer in \[0, 3\)"),
    (None, 1, "needs folds"),
    (6, 0, "5 patches outside the test split cannot make 6 folds"),
])
def test_bad_fold_settings(tmp_path, folds, fold, match):
    cube = _patch_cube(tmp_path, patch_size=4)
    with pytest.raises(data.SceneSpecError, match=match):
        cube.splits(folds=folds, fold=fold)


def test_l4s_sample_through_the_generic_source_equals_the_l4s_source(tmp_path):
    root = shared_data_dir() / "l4s-sample"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (set LANDSLIDE_SHARED_DATA to the shared data folder)")
    study = tomllib.loads((ROOT / "studies" / "l4s-patches.toml").read_text(encoding="utf-8"))
    section = {**study["data"], "path": str(root)}
    generic = data.build_cube(section, base_dir=tmp_path)
    dedicated = data.build_cube({"format": "l4s", "path": str(root)}, base_dir=tmp_path)
    assert generic.source_names == dedicated.source_names
    assert generic.source_kinds == dedicated.source_kinds
    assert generic.meta["patch_ids"] == [str(i) for i in dedicated.meta["patch_ids"]]
    assert np.array_equal(np.asarray(generic.values), np.asarray(dedicated.values))
    assert np.array_equal(generic.labels, dedicated.labels)
    assert np.array_equal(generic.valid, dedicated.valid)


def test_patches_of_many_sizes_are_packed_not_padded(tmp_path):
    # one 64-px patch and eight 16-px ones: slots of 64 x 64 would hold 9 x 4096 pixels
    rng = np.random.default_rng(4)
    sizes = [(64, 64)] + [(16, 16)] * 8
    for k, (h, w) in enumerate(sizes):
        _raster(tmp_path / "img" / f"{k}.tif", np.full((1, h, w), k + 1, np.float32))
        mask = np.zeros((h, w), np.uint8)
        mask[rng.integers(h), rng.integers(w)] = 1
        _raster(tmp_path / "mask" / f"{k}.tif", mask)
    section = {"format": "patches", "path": str(tmp_path), "images": "img/*.tif",
               "masks": "mask/{stem}.tif", "channels": [{"name": "v", "kind": "optical"}],
               "patch_size": 16}
    cube = data.build_cube(section, base_dir=tmp_path)
    assert cube.shape[2:] == (64 + 2 * 16, 64)  # the big patch, then two shelves of four
    tiles = cube.tiles()
    assert len(tiles) == 16 + 8
    assert sorted(cube.patch_index(t) for t in tiles) == [0] * 16 + list(range(1, 9))
    # the context stays inside the patch: a small patch's sample holds only its own value
    small = [t for t in tiles if cube.patch_index(t) == 5]
    x, _, valid = cube.dataset(small, context=8)[0]
    assert x.shape[-2:] == (32, 32) and int(valid.sum()) == 16 * 16
    assert set(np.unique(x[0, 0].numpy())) == {0.0, 6.0}
    splits = cube.splits(seed=1, fractions=[0.5, 0.2, 0.3])
    parts = (splits.train, splits.val, splits.test)
    assert sum(len(part) for part in parts) == 24
    for part in parts:  # every patch whole in one split
        seen = Counter(cube.patch_index(t) for t in part)
        assert all(n == (16 if k == 0 else 1) for k, n in seen.items())
