from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point

from data import (
    DateParseError,
    Grid,
    antecedent_precipitation,
    distance_to_lines,
    inventory_masks,
    one_hot,
    parse_date,
    subpixel_points,
)
from data.errors import UnknownCodeError
from data.factors import check_codes

from .conftest import CRS, ORIGIN, RES


def test_distance_to_lines_matches_exact_distance():
    grid = Grid.from_bounds(CRS, RES, (ORIGIN[0], ORIGIN[1] - 900, ORIGIN[0] + 600, ORIGIN[1]))
    lines = [LineString([(ORIGIN[0] + 100, ORIGIN[1] - 50), (ORIGIN[0] + 500, ORIGIN[1] - 700)])]
    got = distance_to_lines(lines, grid, 10, 20)
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(10, 20) + 0.5)
    xs, ys = grid.transform @ (cols, rows)
    exact = shapely.distance(shapely.points(xs, ys), lines[0])
    assert np.abs(got - exact).max() <= RES / 4
    assert np.isnan(distance_to_lines([], grid, 0, 2)).all()


def test_one_hot_and_code_check():
    block = np.array([[1, 2, np.nan], [3, 1, 2]], np.float32)
    enc = one_hot(block, [1, 2, 3])
    assert enc.shape == (3, 2, 3)
    assert np.array_equal(np.nansum(enc, axis=0)[np.isfinite(block)], np.ones(5))
    assert np.isnan(enc[:, 0, 2]).all()
    check_codes(block, [1, 2, 3], file="x.tif", name="lith")
    with pytest.raises(UnknownCodeError, match=r"x.tif \[lith\].*\[3\]"):
        check_codes(block, [1, 2], file="x.tif", name="lith")


def test_antecedent_precipitation_index():
    rain = np.array([10.0, 0.0, 5.0], np.float32)[:, None]
    assert antecedent_precipitation(rain, 0.5)[:, 0] == pytest.approx([10, 5, 7.5])


@pytest.mark.parametrize(("value", "end", "expected"), [
    ("2008", True, dt.date(2008, 12, 31)), ("2008", False, dt.date(2008, 1, 1)),
    (2005, False, dt.date(2005, 1, 1)), ("2013-05", False, dt.date(2013, 5, 1)),
    ("2012-02", True, dt.date(2012, 2, 29)), ("2018-09-06", True, dt.date(2018, 9, 6)),
    (2010.0, True, dt.date(2010, 12, 31)), (dt.datetime(2001, 3, 4, 5), False, dt.date(2001, 3, 4)),
])
def test_parse_date(value, end, expected):
    assert parse_date(value, end=end) == expected


@pytest.mark.parametrize("bad", ["pre-event", "2008-13", "", None, "20O8"])
def test_parse_date_rejects(bad):
    with pytest.raises(DateParseError, match=r"inv.gpkg \[year\].*hint"):
        parse_date(bad, end=False, file="inv.gpkg", key="year")


def test_inventory_masks_are_cumulative():
    grid = Grid.from_bounds(CRS, RES, (0, 0, 600, 600))
    polys = [Point(150, 450).buffer(100), Point(450, 150).buffer(100)]
    observed = [dt.date(2008, 1, 1), dt.date(2013, 5, 1)]
    dates = [dt.date(2008, 12, 31), dt.date(2011, 12, 31), dt.date(2014, 12, 31)]
    masks = inventory_masks(polys, observed, dates, grid, 0, grid.height)
    areas = masks.reshape(3, -1).sum(1)
    assert areas[0] == areas[1] > 0 and areas[2] > areas[1]
    assert (masks[2] >= masks[0]).all()
    half = inventory_masks(polys, None, dates[:1], grid, 5, 10)
    assert np.array_equal(half[0], inventory_masks(polys, None, dates[:1], grid, 0, 20)[0, 5:10])


def test_polygons_below_a_pixel_are_burnt_once_at_their_point_and_never_lost():
    grid = Grid.from_bounds(CRS, RES, (0, 0, 10 * RES, 10 * RES))
    big = shapely.box(RES, RES, 4 * RES, 4 * RES)  # covers 9 pixel centres
    tiny = shapely.box(6.1 * RES, 2.1 * RES, 6.4 * RES, 2.4 * RES)  # no centre: row 7, col 6
    sliver = shapely.box(8.05 * RES, 0, 8.3 * RES, 10 * RES)  # between centres, col 8
    off = shapely.box(-3 * RES, -3 * RES, -2.5 * RES, -2.5 * RES)  # off the grid
    polys = [big, tiny, sliver, off]
    points = subpixel_points(polys, grid)
    assert points[0].tolist() == [-1, -1] and points[3].tolist() == [-1, -1]
    assert points[1].tolist() == [7, 6] and points[2, 1] == 8
    dates = [dt.date(2014, 12, 31)]
    plain = inventory_masks(polys, None, dates, grid, 0, grid.height)[0]
    kept = inventory_masks(polys, None, dates, grid, 0, grid.height, points)[0]
    assert plain.sum() == 9 and kept.sum() == 11  # one pixel more for each small polygon
    assert kept[7, 6] == 1 and kept[points[2, 0], 8] == 1
    # strips agree with the whole grid
    strips = np.concatenate([inventory_masks(polys, None, dates, grid, r, r + 3, points)[0]
                             for r in range(0, 10, 3)])
    assert np.array_equal(strips[:10], kept)
