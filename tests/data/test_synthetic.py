"""The synthetic scene: reproducible, georeferenced, described by scene.toml, and informative.

The AUC check reads the GeoTIFFs itself (rasterio + numpy) rather than through data's own
reader, so it tests the generator alone.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from scipy.ndimage import distance_transform_edt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from data.synthetic import DEFAULTS, OPTICAL_BANDS, SyntheticScene, generate_scene

# Documented range of the landslide share at the last date (DEFAULTS aim at ~2.5 %).
FRACTION_RANGE = (0.01, 0.05)
# How far "all sources" must beat each single group, in AUC.
MARGIN = 0.03


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SyntheticScene]:
    root = tmp_path_factory.mktemp("synthetic")
    return {
        "a": generate_scene(root / "a", size=128, seed=0),
        "a_again": generate_scene(root / "a_again", size=128, seed=0),
        "b": generate_scene(root / "b", size=128, seed=1),
    }


def _tifs(scene: SyntheticScene) -> list[Path]:
    return sorted(p.relative_to(scene.out_dir) for p in scene.out_dir.rglob("*.tif"))


def _read(path: Path) -> np.ma.MaskedArray:
    with rasterio.open(path) as src:
        return src.read(1, masked=True)


def test_same_seed_gives_byte_identical_rasters(scenes: dict[str, SyntheticScene]) -> None:
    a, again = scenes["a"], scenes["a_again"]
    names = _tifs(a)
    # 4 bands + precipitation + label per date, plus DEM and lithology.
    assert len(names) == 6 * len(a.dates) + 2
    assert names == _tifs(again)
    for name in names:
        assert (a.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name
    for layer in ("faults", "landslides"):
        first = gpd.read_file(a.paths[layer])
        second = gpd.read_file(again.paths[layer])
        assert first.geometry.geom_equals_exact(second.geometry, tolerance=0).all()
    assert a.params == again.params


def test_different_seed_gives_different_rasters(scenes: dict[str, SyntheticScene]) -> None:
    a, b = scenes["a"], scenes["b"]
    for name in ("dem.tif", "lithology.tif", f"optical/{a.dates[-1]}_nir.tif"):
        assert (a.out_dir / name).read_bytes() != (b.out_dir / name).read_bytes(), name


def test_scene_toml_parses_and_every_path_exists(scenes: dict[str, SyntheticScene]) -> None:
    scene = scenes["a"]
    doc = tomllib.loads(scene.scene_path.read_text(encoding="utf-8"))
    assert list(doc) == ["data"]
    data = doc["data"]
    assert data["format"] == "geotiff"
    assert data["dates"] == list(scene.dates)
    sources = {s["name"]: s for s in data["sources"]}
    assert set(sources) == {*OPTICAL_BANDS, "dem", "lithology", "fault_distance", "precipitation"}
    base = scene.scene_path.parent
    for source in data["sources"]:
        assert source["kind"] in {"optical", "factor"}
        assert source["type"] in {"continuous", "categorical"}
        given = [k for k in ("path", "paths", "vector") if k in source]
        assert len(given) == 1, source["name"]
        if "paths" in source:
            assert list(source["paths"]) == list(scene.dates)
            files = list(source["paths"].values())
        else:
            files = [source[given[0]]]
        for rel in files:
            assert (base / rel).is_file(), rel
    assert all(sources[b]["kind"] == "optical" and sources[b]["nodata"] == 0 for b in OPTICAL_BANDS)
    assert sources["dem"]["derive"] == ["slope", "aspect"]
    assert sources["lithology"]["codes"] == list(range(1, len(DEFAULTS["lithology_names"]) + 1))
    assert sources["lithology"]["encoding"] == "onehot"
    assert sources["fault_distance"] == {
        "name": "fault_distance",
        "kind": "factor",
        "type": "continuous",
        "vector": "faults.gpkg",
        "derive": ["distance"],
    }
    labels = data["labels"]["paths"]
    assert list(labels) == list(scene.dates)
    assert all("label" in Path(p).name and (base / p).is_file() for p in labels.values())


def test_grid_crs_dtypes_and_codes(tmp_path: Path) -> None:
    scene = generate_scene(tmp_path, size=(96, 128), n_dates=3, seed=3, years=[2015, 2017, 2022])
    assert scene.dates == ("2015", "2017", "2022")
    assert scene.shape == (96, 128)
    expected = rasterio.transform.from_origin(
        DEFAULTS["origin_x"], DEFAULTS["origin_y"], 30.0, 30.0
    )
    for path in scene.out_dir.rglob("*.tif"):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32643, path
            assert src.transform == expected, path
            assert (src.height, src.width) == (96, 128), path
    with rasterio.open(scene.paths["nir"]["2017"]) as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        nir = src.read(1)
    assert nir.max() <= 10_000 and np.mean(nir == 0) < DEFAULTS["cloud_cover_max"] + 0.01
    lithology = _read(scene.paths["lithology"]).filled()
    assert set(np.unique(lithology)) <= set(range(1, len(DEFAULTS["lithology_names"]) + 1))
    label = _read(scene.paths["labels"]["2022"]).filled()
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
    for layer in ("faults", "landslides"):
        assert gpd.read_file(scene.paths[layer]).crs.to_epsg() == 32643


def test_landslides_grow_over_dates_and_match_the_inventory(tmp_path: Path) -> None:
    scene = generate_scene(tmp_path, size=256, seed=0)
    fractions = [scene.landslide_fraction[d] for d in scene.dates]
    assert FRACTION_RANGE[0] <= fractions[-1] <= FRACTION_RANGE[1]
    assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] > fractions[0]
    inventory = gpd.read_file(scene.paths["landslides"])
    assert set(inventory["year"]) <= set(scene.params["years"])
    for date in scene.dates:
        label = _read(scene.paths["labels"][date]).filled()
        visible = inventory[inventory["year"] <= int(date)]
        burnt = (
            rasterize(visible.geometry, out_shape=scene.shape, transform=scene.transform)
            if len(visible)
            else np.zeros(scene.shape, np.uint8)
        )
        # The per-date label rasters are exactly the inventory rasterized by first year.
        np.testing.assert_array_equal(label, burnt)
        assert np.mean(label) == pytest.approx(scene.landslide_fraction[date])
    # Blobs, not speckle: a typical landslide covers many pixels.
    assert np.median(inventory["area_m2"]) / 30.0**2 > 8


def _features(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel optical and factor features, and the last-date labels, from the files."""
    optical = []
    for date in scene.dates:
        for band in OPTICAL_BANDS:
            band_data = _read(scene.paths[band][date]).astype(float)
            # Clouds: fill with the band's median; log makes illumination an additive offset.
            optical.append(np.log(band_data.filled(np.ma.median(band_data))))
    pixel = scene.transform.a
    dem = _read(scene.paths["dem"]).filled().astype(float)
    d_row, d_col = np.gradient(dem, pixel)
    slope = np.degrees(np.arctan(np.hypot(d_row, d_col)))
    lithology = _read(scene.paths["lithology"]).filled()
    onehot = [lithology == code for code in range(1, len(scene.params["lithology_names"]) + 1)]
    faults = gpd.read_file(scene.paths["faults"])
    on_fault = rasterize(
        faults.geometry, out_shape=scene.shape, transform=scene.transform, all_touched=True
    )
    fault_distance = distance_transform_edt(on_fault == 0, sampling=pixel)
    rain = [_read(scene.paths["precipitation"][d]).filled().astype(float) for d in scene.dates]
    # slope**2 lets a linear model express the hump-shaped slope response.
    factors = [dem, slope, slope**2, fault_distance, *onehot, *rain]
    label = _read(scene.paths["labels"][scene.dates[-1]]).filled()
    return np.stack(optical, -1), np.stack(factors, -1).astype(float), label


def _half_split_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Fit on the top half of the scene, AUC on the bottom half (no pixel shared)."""
    half = y.shape[0] // 2
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x[:half].reshape(-1, x.shape[-1]), y[:half].ravel())
    score = model.predict_proba(x[half:].reshape(-1, x.shape[-1]))[:, 1]
    return float(roc_auc_score(y[half:].ravel(), score))


def test_all_sources_beat_optical_only_and_factors_only(tmp_path: Path) -> None:
    # 512 x 512: at 256 x 256 each half holds only ~30 landslides and the AUCs are noise.
    scene = generate_scene(tmp_path, size=512, seed=0)
    optical, factors, label = _features(scene)
    auc = {
        "all": _half_split_auc(np.concatenate([optical, factors], -1), label),
        "optical": _half_split_auc(optical, label),
        "factors": _half_split_auc(factors, label),
    }
    assert auc["all"] > 0.75, auc
    assert auc["optical"] < auc["all"] - MARGIN, auc
    assert auc["factors"] < auc["all"] - MARGIN, auc
    # Each group alone still carries part of the signal.
    assert auc["optical"] > 0.6 and auc["factors"] > 0.6, auc


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        generate_scene(tmp_path, size=4)
    with pytest.raises(ValueError, match="unknown generator setting"):
        generate_scene(tmp_path, size=32, overrides={"landslide_fractoin": 0.02})
    with pytest.raises(ValueError, match="projected"):
        generate_scene(tmp_path, size=32, crs="EPSG:4326")
    with pytest.raises(ValueError, match="years"):
        generate_scene(tmp_path, size=32, n_dates=2, years=[2020, 2010])


def test_defaults_are_frozen_and_recorded(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        DEFAULTS["landslide_fraction"] = 0.5  # type: ignore[index]
    scene = generate_scene(tmp_path, size=64, seed=5, overrides={"cloud_cover_max": 0.0})
    assert scene.params["seed"] == 5 and scene.params["cloud_cover_max"] == 0.0
    assert {k: scene.params[k] for k in DEFAULTS if k != "cloud_cover_max"} == {
        k: v for k, v in DEFAULTS.items() if k != "cloud_cover_max"
    }
    # No clouds asked for, none written.
    assert all((_read(scene.paths["red"][d]).filled() > 0).all() for d in scene.dates)
