"""Groups, split files, the channel manifest, validation that follows the test, and buffers.

Tiny seeded patch folders and scenes written in code (issues 21 and 23).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

import data
from data.splits import split_tiles
from data.tiles import Region, make_tiles

from .conftest import write_scene

REGIONS = {"north": 4, "south": 3, "east": 3, "west": 2}  # patches per region: 12 in all


def _raster(path: Path, array: np.ndarray, descriptions: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=array.shape[2],
                           height=array.shape[1], count=array.shape[0],
                           dtype=array.dtype) as dst:
            dst.write(array)
            for i, text in enumerate(descriptions or []):
                dst.set_band_description(i + 1, text)


def _folder(root: Path, *, bands: int = 1, descriptions: list[str] | None = None) -> list[str]:
    """8 x 8 patches named REGION_N, each with a landslide pixel; returns the ids."""
    rng = np.random.default_rng(7)
    ids = []
    for region, n in REGIONS.items():
        for k in range(n):
            pid = f"{region}_{k}"
            _raster(root / "img" / f"{pid}.tif",
                    rng.random((bands, 8, 8)).astype(np.float32), descriptions)
            mask = np.zeros((1, 8, 8), np.uint8)
            mask[0, k % 8, 3] = 1
            _raster(root / "mask" / f"{pid}.tif", mask)
            ids.append(pid)
    return ids


def _section(root: Path, **options: Any) -> dict[str, Any]:
    return {"format": "patches", "path": str(root), "images": "img/*.tif",
            "masks": "mask/{stem}.tif", "channels": [{"name": "v", "kind": "optical"}],
            "patch_size": 4, **options}


def _cube(root: Path, **options: Any) -> data.Cube:
    return data.build_cube(_section(root, **options), base_dir=root)


def _ids(cube: data.Cube, tiles) -> set[str]:
    return {cube.meta["patch_ids"][cube.patch_index(t)] for t in tiles}


def _regions(cube: data.Cube, tiles) -> set[str]:
    return {pid.split("_")[0] for pid in _ids(cube, tiles)}


REGEX = {"regex": r"^(?P<group>[a-z]+)_"}


# ----------------------------------------------------------------------------- groups
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grouped_folds_never_put_a_group_on_both_sides(tmp_path, seed):
    _folder(tmp_path)
    cube = _cube(tmp_path, group=REGEX, fractions=[0.5, 0.25, 0.25], seed=seed)
    folds = cube.fold_splits(3)
    test = _regions(cube, folds[0].test)
    assert len(test) == 1  # round(0.25 * 4 groups)
    vals = []
    for s in folds:
        train, val = _regions(cube, s.train), _regions(cube, s.val)
        assert _regions(cube, s.test) == test
        assert train and val and not train & val and not (train | val) & test
        assert s.info["validation"] == "grouped" and s.info["test_by"] == "groups"
        assert s.info["groups"]["val"] == sorted(val)
        vals.append(val)
    assert set().union(*vals) == set(REGIONS) - test  # every non-test group validates once
    assert sum(len(v) for v in vals) == 3
    # the lead's call for fold i is the same
    assert cube.splits(folds=3, fold=2).val == folds[2].val


@pytest.mark.parametrize("options", [
    {"group": REGEX}, {"group": REGEX, "validation": "random"}, {"test": ["west_0", "east_1"]},
    {}])
def test_folds_keep_the_test_split_of_the_plain_split(tmp_path, options):
    # tuning's folds and `hpo train`'s plain split must test on the same patches
    _folder(tmp_path)
    cube = _cube(tmp_path, fractions=[0.5, 0.25, 0.25], **options)
    for seed in range(3):
        plain = set(cube.splits(seed=seed).test)
        assert all(set(s.test) == plain for s in cube.fold_splits(2, seed=seed))


@pytest.mark.parametrize("options", [
    {}, {"group": REGEX}, {"group": REGEX, "validation": "random"}, {"stratify": True}])
def test_nested_folds_stay_inside_the_outer_training_folds(tmp_path, options):
    # tuning folds inside an outer test fold: every non-test patch validates once, no
    # inner fold reaches the outer test, and the outer test is the plain outer split's
    _folder(tmp_path)
    cube = _cube(tmp_path, folds=2, fold_role="test", **options)
    for outer in range(2):
        plain = cube.splits(fold=outer)
        inner = cube.fold_splits(2, fold=outer)
        assert len(inner) == 2 and all(s.info["inner_folds"] == 2 for s in inner)
        vals = [set(s.val) for s in inner]
        assert not vals[0] & vals[1]
        assert vals[0] | vals[1] == set(plain.train) | set(plain.val)
        for s in inner:
            assert set(s.test) == set(plain.test) and s.info["folds"] == 2
            assert not set(s.train) & set(s.val) and not (set(s.train) | set(s.val)) & set(
                s.test)
            if "group" in options and "validation" not in options:
                assert not _regions(cube, s.val) & _regions(cube, s.train)


def test_inner_folds_need_an_outer_test_fold(tmp_path):
    _folder(tmp_path)
    cube = _cube(tmp_path, folds=2)
    with pytest.raises(data.SceneSpecError, match="outer test fold") as err:
        cube.splits(inner_folds=2)
    assert err.value.key == "inner_folds"


def test_leave_one_group_out(tmp_path):
    _folder(tmp_path)
    cube = _cube(tmp_path, group=REGEX, test_groups=["west"], folds="groups")
    folds = cube.fold_splits()
    assert len(folds) == 3 and all(s.info["folds"] == 3 for s in folds)
    assert [_regions(cube, s.test) for s in folds] == [{"west"}] * 3
    assert sorted(r for s in folds for r in _regions(cube, s.val)) == ["east", "north", "south"]
    for s in folds:
        assert len(_regions(cube, s.val)) == 1
        assert not _regions(cube, s.val) & _regions(cube, s.train)


def test_outer_leave_one_group_out_tests_every_group_once(tmp_path):
    _folder(tmp_path)
    cube = _cube(tmp_path, group=REGEX, folds="groups", fold_role="test")
    tests = [_regions(cube, cube.splits(fold=i).test) for i in range(4)]
    assert sorted(r for t in tests for r in t) == sorted(REGIONS)
    with pytest.raises(data.SceneSpecError, match=r"fold must be an integer in \[0, 4\)"):
        cube.splits(fold=4)


def test_test_groups_make_the_test_split(tmp_path):
    _folder(tmp_path)
    cube = _cube(tmp_path, group=REGEX, test_groups=["north", "west"])
    s = cube.splits()
    assert _ids(cube, s.test) == {f"north_{k}" for k in range(4)} | {"west_0", "west_1"}
    assert len(_regions(cube, s.val)) == 1  # one of the two remaining groups
    assert not _regions(cube, s.val) & _regions(cube, s.train)
    assert s.info["group_from"].startswith("regex")


def test_random_validation_under_a_grouped_test_is_asked_for_and_flagged(tmp_path):
    _folder(tmp_path)
    cube = _cube(tmp_path, group=REGEX, test_groups=["west"], validation="random",
                 fractions=[0.5, 0.5, 0.0])
    s = cube.splits()
    assert _regions(cube, s.test) == {"west"}
    # patches of one region on both sides: what random validation means
    assert _regions(cube, s.val) & _regions(cube, s.train)
    assert s.info["validation"] == "random" and "holds out groups" in s.info["warning"]
    assert cube.splits(validation="auto").info.get("warning") is None
    # with the test a fraction of the groups, both validations face the same test split
    free = _cube(tmp_path, group=REGEX, fractions=[0.5, 0.25, 0.25])
    for seed in range(4):
        a, b = free.splits(seed=seed), free.splits(seed=seed, validation="random")
        assert set(a.test) == set(b.test) and _regions(free, a.test) == _regions(free, b.test)


@pytest.mark.parametrize("how", ["csv", "json_lists", "json_map", "manifest"])
def test_groups_from_a_table_a_file_or_the_manifest(tmp_path, how):
    ids = _folder(tmp_path)
    region = {pid: pid.split("_")[0].upper() for pid in ids}
    if how == "csv":
        rows = "\n".join(f"{pid},{g},x" for pid, g in region.items())
        (tmp_path / "groups.csv").write_text("name,area,other\n" + rows + "\nextra_9,X,x\n")
        group = {"file": "groups.csv", "column": "area", "id_column": "name"}
    elif how == "json_lists":
        lists: dict[str, list[str]] = {}
        for pid, g in region.items():
            lists.setdefault(g, []).append(pid)
        (tmp_path / "groups.json").write_text(json.dumps(lists))
        group = {"file": "groups.json"}
    elif how == "json_map":
        (tmp_path / "groups.json").write_text(json.dumps(region))
        group = {"file": "groups.json"}
    else:
        (tmp_path / "manifest.json").write_text(json.dumps(
            {"channels": [{"name": "v", "kind": "optical"}], "groups": region}))
        group = None
    options = {"group": group} if group else {"channels": None}
    section = _section(tmp_path, **options)
    if group is None:
        del section["channels"]
    cube = data.build_cube(section, base_dir=tmp_path)
    s = cube.splits(seed=3)
    assert s.info["validation"] == "grouped"
    train, val, test = (_regions(cube, x) for x in (s.train, s.val, s.test))
    assert train and val and test and not (train & val or train & test or val & test)


@pytest.mark.parametrize(("group", "match"), [
    ({"regex": r"^(?P<group>[a-z]+)_2$"}, "does not match"),
    ({"file": "groups.csv"}, "needs the column"),
    ({"file": "groups.csv", "column": "zone"}, "no column 'zone'"),
    ({"file": "partial.json"}, "no group for patches"),
    ({"regex": "x", "file": "groups.csv"}, "expected a table with regex or file"),
])
def test_bad_groups_are_named(tmp_path, group, match):
    ids = _folder(tmp_path)
    (tmp_path / "groups.csv").write_text("id,area\n" + "\n".join(f"{i},a" for i in ids))
    (tmp_path / "partial.json").write_text(json.dumps({"a": ids[:3]}))
    with pytest.raises(data.SplitFileError, match=match) as info:
        _cube(tmp_path, group=group)
    assert info.value.key.startswith("data.group") and info.value.hint


# ----------------------------------------------------------------------------- split files
def test_split_file_fixes_every_split(tmp_path):
    ids = _folder(tmp_path)
    lists = {"train": ids[:6], "val": ids[6:8], "test": ids[8:11]}  # ids[11] in none
    (tmp_path / "splits.json").write_text(json.dumps(lists))
    cube = _cube(tmp_path, splits="splits.json")
    s = cube.splits()
    assert (_ids(cube, s.train), _ids(cube, s.val), _ids(cube, s.test)) == tuple(
        set(v) for v in lists.values())
    assert s.info["test_by"] == "split file" and s.info["lists_from"]["test"].endswith(
        "splits.json")
    assert cube.splits(seed=9).train == s.train  # fixed: no seed changes them
    with pytest.raises(data.SceneSpecError, match="fix validation"):
        cube.splits(folds=2)


def test_a_test_list_alone_and_validation_from_the_rest(tmp_path):
    ids = _folder(tmp_path)
    (tmp_path / "test.txt").write_text("# official test\n" + "\n".join(ids[:3]) + "\n\n")
    cube = _cube(tmp_path, test="test.txt")
    s = cube.splits()
    assert _ids(cube, s.test) == set(ids[:3])
    assert s.val and _ids(cube, s.train) | _ids(cube, s.val) == set(ids[3:])
    # no groups: validation is random, and that is said, since the test is held out by a list
    assert s.info["validation"] == "random" and "no groups" in s.info["warning"]
    grouped = _cube(tmp_path, splits={"test": ids[:4]}, group=REGEX)  # north is the test
    g = grouped.splits(folds=2, fold=1)
    assert _ids(grouped, g.test) == set(ids[:4]) and g.info["validation"] == "grouped"
    assert not _regions(grouped, g.val) & _regions(grouped, g.train)


def test_a_train_list_makes_everything_else_test(tmp_path):
    ids = _folder(tmp_path)
    cube = _cube(tmp_path, train=ids[:8])
    s = cube.splits()
    assert _ids(cube, s.test) == set(ids[8:])
    assert _ids(cube, s.train) | _ids(cube, s.val) == set(ids[:8]) and s.val


@pytest.mark.parametrize(("splits", "key", "file", "match"), [
    ({"train": "a.txt", "test": "b.txt"}, "test", "b.txt", r"in both train and test: \['north_1'"),
    ({"test": "missing_ids.txt"}, "test", "missing_ids.txt", r"not in the patch folder: \['nowher"),
    ({"val": "twice.txt"}, "val", "twice.txt", "listed twice"),
    ({"tset": "b.txt"}, "tset", None, "unknown or repeated list"),
])
def test_split_file_errors_are_named(tmp_path, splits, key, file, match):
    _folder(tmp_path)
    (tmp_path / "a.txt").write_text("north_0\nnorth_1\nsouth_0\n")
    (tmp_path / "b.txt").write_text("north_1\neast_0\n")
    (tmp_path / "missing_ids.txt").write_text("east_1\nnowhere_1\n")
    (tmp_path / "twice.txt").write_text("east_1\neast_1\n")
    with pytest.raises(data.SplitFileError, match=match) as info:
        _cube(tmp_path, splits=splits)
    assert info.value.key == f"data.splits.{key}" and info.value.hint
    assert info.value.file == (str(tmp_path / file) if file else None)


def test_split_lists_given_twice_or_on_a_scene_are_refused(tmp_path):
    ids = _folder(tmp_path)
    with pytest.raises(data.SplitFileError, match="given twice"):
        _cube(tmp_path, splits={"test": ids[:2]}, test=ids[:2])
    with pytest.raises(data.SceneSpecError, match="test_groups needs groups"):
        _cube(tmp_path, test_groups=["north"])
    with pytest.raises(data.SplitFileError, match=r"unknown group\(s\) \['up'\]"):
        _cube(tmp_path, group=REGEX, test_groups=["up"])
    scene = write_scene(tmp_path / "scene")
    with pytest.raises(data.SceneSpecError, match="apply to patch collections"):
        data.build_cube({**scene, "test": ["a"]}, base_dir=tmp_path / "scene")


# ----------------------------------------------------------------------------- manifest
def test_manifest_channels_read_and_overridden(tmp_path):
    _folder(tmp_path, bands=3)
    manifest = {"channels": [{"name": "red", "kind": "optical", "nodata": 0},
                             {"name": "nir", "kind": "optical"},
                             {"name": "dem", "kind": "factor", "nodata": -9999}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    section = _section(tmp_path)
    del section["channels"]
    cube = data.build_cube(section, base_dir=tmp_path)
    assert cube.source_names == ["red", "nir", "dem"]
    assert cube.source_kinds == ["optical", "optical", "factor"]
    overridden = data.build_cube({**section, "channels": {"nir": {"kind": "factor"}}},
                                 base_dir=tmp_path)
    assert overridden.source_kinds == ["optical", "factor", "factor"]
    replaced = data.build_cube({**section, "channels": [
        {"name": n, "kind": "factor"} for n in ("a", "b", "c")]}, base_dir=tmp_path)
    assert replaced.source_names == ["a", "b", "c"]
    with pytest.raises(data.SceneSpecError, match="no channel named 'swir'"):
        data.build_cube({**section, "channels": {"swir": {"kind": "factor"}}},
                        base_dir=tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"chanels": []}))
    with pytest.raises(data.SceneSpecError, match="unexpected manifest content"):
        data.build_cube(section, base_dir=tmp_path)


def test_band_descriptions_name_the_channels(tmp_path):
    _folder(tmp_path, bands=2, descriptions=["B4", "slope"])
    section = _section(tmp_path)
    del section["channels"]
    cube = data.build_cube({**section, "channels": {"slope": {"kind": "factor"}}},
                           base_dir=tmp_path)
    assert cube.source_names == ["B4", "slope"]
    assert cube.source_kinds == ["optical", "factor"]
    (tmp_path / "own.toml").write_text('channels = [{ kind = "optical" }, '
                                       '{ name = "dem", kind = "factor" }]\n')
    named = data.build_cube({**section, "manifest": "own.toml"}, base_dir=tmp_path)
    assert named.source_names == ["B4", "dem"]  # a manifest entry without name: the band's


def test_no_channels_anywhere_is_a_named_error(tmp_path):
    _folder(tmp_path)
    section = _section(tmp_path)
    del section["channels"]
    with pytest.raises(data.SceneSpecError, match="no channel is declared") as info:
        data.build_cube(section, base_dir=tmp_path)
    assert "manifest.json" in info.value.hint


# ----------------------------------------------------------------------------- scenes
def _distance(a, b) -> int:
    """Chebyshev gap in pixels between two tiles' pixel rectangles (0 when they touch)."""
    rows = max(a.row - (b.row + b.height), b.row - (a.row + a.height)) + 1
    cols = max(a.col - (b.col + b.width), b.col - (a.col + a.width)) + 1
    return max(rows, cols, 0)


@pytest.mark.parametrize("overlap", [0, 2])
@pytest.mark.parametrize("buffer", [0, 5, 12])
def test_blocked_splits_keep_the_buffer(overlap, buffer):
    tiles = make_tiles([Region(0, 0, 120, 100)], 8, overlap)
    result = split_tiles(tiles, method="blocked", fractions=(0.6, 0.2, 0.2), block_size=2,
                         seed=1, by_region=False, stride=8 - overlap, buffer=buffer)
    train, val, test = result.train, result.val, result.test
    assert train and val and test
    for held in (val, test):
        gap = min(_distance(a, b) for a in train for b in held)
        assert gap >= max(buffer, 1)  # pixels apart (touching at 0 gives no shared pixel)
    assert min(_distance(a, b) for a in val for b in test) >= max(buffer, 1)
    assert result.info["buffer"] == buffer and result.info["validation"] == "blocked"
    cut = result.info["buffer_dropped"] + result.info["buffer_clipped"]
    assert (cut > 0) == (buffer > 0)
    if buffer:  # tiles are cut back to the part outside the buffer, not only dropped
        assert result.info["buffer_clipped"] > 0
        assert any(t.height < 8 - overlap or t.width < 8 - overlap for t in train)
    if buffer == 0 and overlap == 0:
        assert len(train) + len(val) + len(test) == len(tiles)


def test_the_context_is_the_least_buffer_of_a_blocked_scene(cube):
    blocked = dict(patch_size=4, method="blocked", block_size=4, seed=0)
    plain = cube.splits(**blocked)
    assert plain.info["buffer"] == 0
    cube = cube.with_target(cube.target)  # a copy: the fixture is shared
    cube.options["context"] = 4
    wide = cube.splits(**blocked)
    assert wide.info["buffer"] == 4 and wide.info["buffer_dropped"] > 0
    assert cube.splits(**blocked, buffer=6).info["buffer"] == 6
    assert cube.splits(**blocked, buffer=1).info["buffer"] == 4  # never below the context
    for held in (wide.val, wide.test):
        assert min(_distance(a, b) for a in wide.train for b in held) >= 4


def test_nested_block_folds_keep_the_outer_test_blocks(cube):
    options = dict(patch_size=8, method="blocked", block_size=2, seed=0, fold=1)
    cube = cube.with_target(cube.target)  # a copy: the fixture is shared
    cube.options.update(folds=3, fold_role="test")  # the study file's outer folds
    folds = cube.fold_splits(2, **options)
    test = set(cube.splits(**options).test)
    assert all(set(s.test) == test for s in folds)
    blocks = [{(t.row // 16, t.col // 16) for t in s.val} for s in folds]
    test_blocks = {(t.row // 16, t.col // 16) for t in test}
    assert blocks[0] and blocks[1] and not blocks[0] & blocks[1]
    assert not (blocks[0] | blocks[1]) & test_blocks


def test_blocked_folds_deal_blocks_and_random_validation_is_flagged(cube):
    options = dict(patch_size=8, method="blocked", block_size=2, seed=0)
    folds = cube.fold_splits(2, **options)
    assert all(set(s.test) == set(cube.splits(**options).test) for s in folds)
    blocks = [{(t.row // 16, t.col // 16) for t in s.val} for s in folds]
    assert blocks[0] and blocks[1] and not blocks[0] & blocks[1]
    for s, val_blocks in zip(folds, blocks, strict=True):
        assert not val_blocks & {(t.row // 16, t.col // 16) for t in s.train}
        assert s.info["validation"] == "blocked" and "warning" not in s.info
    rand = cube.splits(**options, validation="random")
    assert rand.info["validation"] == "random" and "holds out blocks" in rand.info["warning"]
    assert set(rand.test) == set(cube.splits(**options).test)  # the test blocks stay
    assert {(t.row // 16, t.col // 16) for t in rand.val} & {
        (t.row // 16, t.col // 16) for t in rand.train}  # validation among training blocks


@pytest.mark.parametrize(("options", "expected"), [
    ({"split": "random"}, ("random", "tiles")),
    ({"split": "blocked"}, ("blocked", "blocks")),
    ({"split": "blocked", "validation": "random"}, ("random", "blocks")),
])
def test_the_default_validation_follows_the_test_split(tmp_path, options, expected):
    scene = write_scene(tmp_path)
    plan = data.validation_summary({**scene, **options}, tmp_path)
    assert (plan["validation"], plan["test"]) == expected
    assert plan["explicit"] == ("validation" in options)
    assert bool(plan["warning"]) == (options.get("validation") == "random")


def test_the_default_validation_of_patch_sets(tmp_path):
    ids = _folder(tmp_path)
    plain = data.validation_summary(_section(tmp_path), tmp_path)
    assert (plain["validation"], plain["test"], plain["warning"]) == ("random", "patches", None)
    grouped = data.validation_summary(_section(tmp_path, group=REGEX), tmp_path)
    assert (grouped["validation"], grouped["test"]) == ("grouped", "groups")
    # four regions, one of them the test's: validation draws on three
    assert "only 3 groups are not in the test" in grouped["warning"]
    assert "[tuning] folds = 3" in grouped["warning"]
    fine = data.validation_summary(  # every patch its own group: 11 beside the test
        _section(tmp_path, group={"regex": r"^(?P<group>[a-z]+_[0-9]+)$"}), tmp_path)
    assert fine["validation"] == "grouped" and fine["warning"] is None
    listed = data.validation_summary(_section(tmp_path, test=ids[:2]), tmp_path)
    assert listed["test"] == "split file" and "no groups" in listed["warning"]
    with pytest.raises(data.SceneSpecError, match="needs groups"):
        data.validation_summary(_section(tmp_path, validation="grouped"), tmp_path)
    with pytest.raises(data.SceneSpecError, match="validation must be one of"):
        data.validation_summary(_section(tmp_path, validation="spatial"), tmp_path)


def test_units_of_a_split_are_what_its_test_holds_out(tmp_path, cube):
    # blocks: the resolved block size (the default, 4, when the study names none)
    split = cube.splits(patch_size=4, method="blocked", seed=0)
    tiles = [*split.train, *split.test]
    units = cube.units_of(tiles, split.info)
    step = 4 * split.info["block_size"]
    assert split.info["block_size"] == 4 and len(set(units)) < len(units)
    for a, ua in zip(tiles, units, strict=True):
        for b, ub in zip(tiles, units, strict=True):
            assert ((a.row // step, a.col // step) == (b.row // step, b.col // step)) == (ua == ub)
    # groups: every patch of one group is one unit
    _folder(tmp_path)
    grouped = _cube(tmp_path, group=REGEX)
    split = grouped.splits()
    tiles = [*split.train, *split.val]
    units = grouped.units_of(tiles, split.info)
    regions = [_regions(grouped, [t]).pop() for t in tiles]
    assert len(set(units)) == len(set(regions))
    assert all((ra == rb) == (ua == ub) for ra, ua in zip(regions, units, strict=True)
               for rb, ub in zip(regions, units, strict=True))
    # a random split of a scene draws tiles
    split = cube.splits(patch_size=4, method="random", seed=0)
    assert cube.units_of(split.test, split.info) == list(range(len(split.test)))
