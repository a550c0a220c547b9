"""A region-shift data set: train and validate in one synthetic region, test in another.

The synthetic scene generator (``data.synthetic``) is run twice, side by side: region ``a``
at its frozen defaults and region ``b`` with other terrain (higher, steeper, rougher), other
geology and other imagery (more bare outcrops, fewer fields, other light, clouds and
noise). Both are cut into square patches written as a ``format = "patches"`` folder with a
channel manifest (band descriptions name the channels), a group table (``region`` and a
``block`` of tiles within it) and a test list holding every patch of region ``b``. Three
study files share everything, search space included, except validation: ``grouped.toml``
validates on held-out blocks of the training regions (the default, since the test is a
split list and the patches have groups), ``region.toml`` on held-out whole regions (groups
by the ``region`` column), ``random.toml`` on random patches (``validation = "random"``,
flagged by the dry run). ``--shift drawn --regions N`` generates N regions whose settings
are all drawn from one family (``b`` is the test, the others train), so that a held-out
training region is shifted from the rest as the test region is: the case where a user has
mapped several valleys and maps one more. ``benchmarks/experiments/tuning_gain.py`` runs
the tuning comparison on these; this script only builds them and checks them with
``hpo tune --dry-run``.

    python -m benchmarks.experiments.region_shift OUT_DIR            # size 256, 32-px patches
    python -m benchmarks.experiments.region_shift OUT_DIR --size 192 --tile 32 --block 2
    python -m benchmarks.experiments.region_shift OUT_DIR --shift drawn --regions 4 --size 192
    python -m benchmarks.experiments.region_shift OUT_DIR --shift drawn --regions 6 --draw 29
    hpo tune OUT_DIR/grouped.toml ; hpo tune OUT_DIR/random.toml    # the comparison

It writes ``OUT_DIR/region_shift.json`` and ``.md`` (the benchmarks' result schema; ``--out``
puts them elsewhere): per region the input statistics that differ (to show the shift is
real), and per study the validation the dry run reports and the split sizes.
``--quick`` builds 128-px regions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Row, Run, add_common_flags, rows_of

# region b: the same physics with other settings, so that what fits region a misfits b
REGION_B: dict[str, Any] = {
    "base_elevation_m": 3200.0,
    "median_slope_deg": 31.0,
    "hurst": 0.65,
    "lithology_weakness": (0.2, 0.3, 1.0, 0.6),
    "strata_width_m": 300.0,
    "slope_peak_deg": 40.0,
    "storm_level_mean": 0.3,
    "outcrop_fraction": 0.15,
    "field_fraction": 0.02,
    "cloud_cover_max": 0.1,
    "texture_sigma": 0.07,
    "diffuse_light": 0.4,
    "revegetation_years": 5.0,
    "sensor_noise": 0.008,
}
# A milder region b: the same elevation band (the DEM stays inside the training range),
# other slopes, geology, storms and imagery. With the strong settings above, every
# configuration scored test F1 0 at the validation threshold (benchmarks/results/
# region_shift_tuning.md): nothing transferred, so validation could not rank anything.
REGION_B_MILD: dict[str, Any] = {
    "median_slope_deg": 28.0,
    "hurst": 0.75,
    "lithology_weakness": (0.1, 0.45, 0.9, 0.8),
    "strata_width_m": 450.0,
    "slope_peak_deg": 37.0,
    "storm_level_mean": 0.15,
    "outcrop_fraction": 0.09,
    "field_fraction": 0.05,
    "cloud_cover_max": 0.2,
    "texture_sigma": 0.05,
    "diffuse_light": 0.3,
    "revegetation_years": 9.0,
    "sensor_noise": 0.006,
}
SHIFTS = {"strong": REGION_B, "mild": REGION_B_MILD}
SEEDS = {"a": 11, "b": 12}
# ``drawn``: every region, the test region included, draws its settings from one family
# (each key of REGION_B_MILD somewhere between -0.5x and 1.5x of the way from the default
# to the mild value), so the test region is one more draw like the training regions and
# validation on a held-out *region* is shifted the way the test is.
DRAWN_SPREAD = (-0.5, 1.5)
DRAWN_SEED = 23
# another ``--draw`` moves every region's scene seed by this much a step, so a second draw
# differs in terrain and slides as well as in settings (the default draw keeps its seeds)
DRAW_SEED_STRIDE = 16
TEST_REGION = "b"
N_DATES = 2
BANDS = ("blue", "green", "red", "nir")
CHANNELS = [*({"kind": "optical", "nodata": 0} for _ in BANDS),
            {"kind": "factor"},
            {"kind": "factor", "type": "categorical", "codes": [1, 2, 3, 4]},
            {"kind": "factor"}]
NAMES = [*BANDS, "dem", "lithology", "precipitation"]

STUDY = """\
# Region-shift benchmark ({variant} validation): train and validate in region a, test in b.
name = "region-shift-{variant}"
storage = "sqlite:///region-shift-{variant}.db"
artifacts = "artifacts/region-shift-{variant}"
seed = 0
metric = "f1_best"                # ~3 % landslide pixels: F1 at the validation threshold
sampler = "tpe"

[runner]
kind = "local"
cpu = 1

[data]
format = "patches"
path = "patches"
images = "img/*.tif"
masks = "mask/{{stem}}.tif"
patch_size = {tile}
context = 8
group = {{ file = "groups.csv", column = "{column}" }}
test = "test.txt"                 # every patch of region b
fractions = [0.7, 0.3, 0.0]       # validation: 30 % of the training regions ({how})
cache_dir = ".cache/cubes"
{validation}
[model]
name = "fusion"

[model.fixed]
"optim.epochs" = 20
"temporal.enabled" = false        # one date per patch

[[stages]]
name = "dcnn"
n_random = 6
n_bayes = 10

[stages.params]
"dcnn.depth" = {{ type = "int", low = 3, high = 10, default = 3 }}
"dcnn.dilation" = {{ type = "int", low = 1, high = 6, default = 2 }}
"""


def _read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _write(path: Path, array: np.ndarray, names: list[str] | None = None) -> None:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=array.shape[2],
                           height=array.shape[1], count=array.shape[0],
                           dtype=array.dtype) as dst:
            dst.write(array)
            for i, name in enumerate(names or []):
                dst.set_band_description(i + 1, name)


def _drawn(rng: np.random.Generator) -> dict[str, Any]:
    """One region's settings, drawn from the family between the defaults and the mild shift."""
    from data.synthetic import DEFAULTS

    def draw(default: float, mild: float) -> float:
        value = default + rng.uniform(*DRAWN_SPREAD) * (mild - default)
        # fractions, weaknesses and noise stay where the generator means them to be
        return round(max(value, 0.0) if default >= 0 and mild >= 0 else value, 4)

    return {key: (tuple(min(1.0, draw(d, m)) for d, m in zip(DEFAULTS[key], mild, strict=True))
                  if isinstance(mild, tuple) else draw(DEFAULTS[key], mild))
            for key, mild in REGION_B_MILD.items()}


def regions_of(shift: str, n_regions: int = 2,
               draw: int = DRAWN_SEED) -> dict[str, tuple[int, dict[str, Any] | None]]:
    """Each region's generator seed and overrides; region ``b`` is the test region.

    Args:
        shift: ``strong`` or ``mild`` (region ``a`` at the defaults, ``b`` shifted), or
            ``drawn`` (``n_regions`` regions, every one drawn from one family).
        n_regions: Regions for ``drawn``: ``b`` and the training regions ``a``, ``c``, ...
        draw: Seed of the ``drawn`` family's draw (settings and scene seeds).
    """
    if shift != "drawn":
        return {"a": (SEEDS["a"], None), TEST_REGION: (SEEDS["b"], SHIFTS[shift])}
    if n_regions < 3:
        raise ValueError("shift = 'drawn' needs 3 regions at least (2 to train, 1 to test)")
    rng = np.random.default_rng(draw)
    names = [TEST_REGION, *(c for c in "acdefghijk" if c != TEST_REGION)][:n_regions]
    first = SEEDS["a"] + DRAW_SEED_STRIDE * (draw - DRAWN_SEED)
    return {name: (first + k, _drawn(rng)) for k, name in enumerate(names)}


def build(out: Path, *, size: int = 256, tile: int = 32, block: int = 2,
          shift: str = "strong", n_regions: int = 2, draw: int = DRAWN_SEED) -> dict[str, Any]:
    """Generate the regions, cut them into patches and write the folder and studies.

    Args:
        out: Folder to write into.
        size: Side of each region's scene in pixels.
        tile: Patch side in pixels.
        block: Patches per side of a validation group (a block of ``block x block``).
        shift: ``strong`` (:data:`REGION_B`), ``mild`` (:data:`REGION_B_MILD`) or ``drawn``
            (see :func:`regions_of`).
        n_regions: Regions for ``drawn``.
        draw: Seed of the ``drawn`` family's draw.

    Returns:
        Per region: patches, landslide share, the mean of every continuous channel and the
        generator's overrides.
    """
    from data.synthetic import generate_scene

    patches = out / "patches"
    rows: list[tuple[str, str, str]] = []
    stats: dict[str, Any] = {}
    for region, (seed, overrides) in regions_of(shift, n_regions, draw).items():
        scene = generate_scene(out / "regions" / region, size=size, n_dates=N_DATES, seed=seed,
                               overrides=overrides)
        last = scene.dates[-1]
        stack = np.stack(
            [_read(scene.paths[b][last]).astype(np.float32) for b in BANDS]
            + [_read(scene.paths["dem"]).astype(np.float32),
               _read(scene.paths["lithology"]).astype(np.float32),
               _read(scene.paths["precipitation"][last]).astype(np.float32)])
        labels = _read(scene.paths["labels"][last]).astype(np.uint8)
        n = size // tile
        for i in range(n):
            for j in range(n):
                pid = f"{region}_{i:02d}_{j:02d}"
                window = np.s_[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]
                _write(patches / "img" / f"{pid}.tif", stack[(slice(None), *window)], NAMES)
                _write(patches / "mask" / f"{pid}.tif", labels[window][None])
                rows.append((pid, region, f"{region}{i // block}{j // block}"))
        valid = stack[0] > 0
        stats[region] = {
            "patches": n * n, "landslide_share": round(float(labels.mean()), 4),
            "means": {name: round(float(stack[k][valid].mean()), 2)
                      for k, name in enumerate(NAMES) if name != "lithology"},
            "overrides": overrides,
        }
    # the manifest names no channel: the band descriptions do
    (patches / "manifest.json").write_text(json.dumps({"channels": CHANNELS}, indent=1))
    (patches / "groups.csv").write_text(
        "id,region,block\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    (patches / "test.txt").write_text("".join(f"{pid}\n" for pid, region, _ in rows
                                              if region == TEST_REGION))
    for variant, column, validation, how in STUDIES:
        (out / f"{variant}.toml").write_text(STUDY.format(
            variant=variant, tile=tile, column=column, validation=validation, how=how))
    return stats


# The study files: (name, group column, validation line, what validation holds out).
STUDIES = (
    ("grouped", "block", "", "whole blocks, the default"),
    ("region", "region", "", "whole training regions"),
    ("random", "block", 'validation = "random"      # asked for: flagged by --dry-run\n',
     "random patches"),
)


def check(out: Path) -> dict[str, Any]:
    """Dry-run both studies and make their splits (no training).

    Returns:
        Per study: the validation lines the dry run printed, and the split sizes in patches.
    """
    import data
    from hpo import study as st
    from hpo.cli.main import main

    report: dict[str, Any] = {}
    for variant, *_ in STUDIES:
        path = out / f"{variant}.toml"
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            status = main(["tune", str(path), "--dry-run"])
        lines = [line for line in buffer.getvalue().splitlines()
                 if line.startswith(("validation:", "warning:"))]
        if status != 0:
            raise SystemExit(f"dry run of {path} failed ({status}): {buffer.getvalue()}")
        spec = st.load_study(path)
        cube = data.prepare(st.data_section(spec), spec.base_dir)
        splits = cube.splits(seed=spec.seed)
        ids = cube.meta["patch_ids"]

        def regions(tiles: Any, ids: list[str] = ids, cube: Any = cube) -> dict[str, int]:
            found = {ids[cube.patch_index(t)] for t in tiles}
            names = sorted({p.split("_")[0] for p in ids})
            return {r: sum(1 for p in found if p.startswith(f"{r}_")) for r in names}

        report[variant] = {"dry_run": lines, "validation": splits.info["validation"],
                           "warning": splits.info.get("warning"),
                           "patches": {"train": regions(splits.train),
                                       "val": regions(splits.val),
                                       "test": regions(splits.test)}}
    return report


def to_rows(summary: dict[str, Any]) -> list[Row]:
    """Per region its patches, landslide share and input means; per study its split sizes."""
    dataset = f"region-shift-{summary['shift']}"
    rows = []
    for region, r in summary["regions"].items():
        values = {"patches": r["patches"], "landslide_share": r["landslide_share"],
                  **{f"mean_{k}": v for k, v in r["means"].items()}}
        rows += rows_of("region_shift", dataset, f"region {region}", values)
    for variant, r in summary["studies"].items():
        for split, counts in r["patches"].items():
            rows += [Row("region_shift", dataset, f"{variant}.toml", f"{split}_patches", n, "",
                         {"region": region, "validation": r["validation"]})
                     for region, n in counts.items()]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Build the region-shift data set and dry-run its two studies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, metavar="OUT_DIR",
                        help="folder to write the data set and studies into")
    add_common_flags(parser, seed=None)
    parser.add_argument("--size", type=int, default=None,
                        help="scene side per region (px; default 256, --quick 128)")
    parser.add_argument("--tile", type=int, default=32, help="patch side (px)")
    parser.add_argument("--block", type=int, default=2, help="patches per validation block side")
    parser.add_argument("--shift", choices=[*sorted(SHIFTS), "drawn"], default="strong",
                        help="how far region b departs from region a; drawn: every region "
                             "drawn from one family")
    parser.add_argument("--regions", type=int, default=4,
                        help="regions for --shift drawn (one of them, b, is the test)")
    parser.add_argument("--draw", type=int, default=DRAWN_SEED,
                        help="seed of the --shift drawn family's draw: another value, "
                             "other regions")
    args = parser.parse_args(argv)
    size = args.size or (128 if args.quick else 256)
    recorder = Run("region_shift", args.out or args.folder)
    args.folder.mkdir(parents=True, exist_ok=True)
    summary = {"dataset": "synthetic multi-region patches", "size": size, "tile": args.tile,
               "block": args.block, "shift": args.shift, "draw": args.draw,
               "region_b_overrides": SHIFTS.get(args.shift),
               "regions": build(args.folder, size=size, tile=args.tile, block=args.block,
                                shift=args.shift, n_regions=args.regions, draw=args.draw)}
    summary["studies"] = check(args.folder)
    for region, s in summary["regions"].items():
        print(f"region {region}: {s['patches']} patches, landslides {s['landslide_share']:.2%}, "
              + ", ".join(f"{k} {v}" for k, v in s["means"].items()))
    for variant, s in summary["studies"].items():
        print(f"{variant}: " + " | ".join(s["dry_run"]))
        print(f"  patches {s['patches']}")
    recorder.write(
        to_rows(summary),
        settings={k: summary[k] for k in ("dataset", "size", "tile", "block", "shift",
                                          "region_b_overrides")},
        details={"dry_run": {v: s["dry_run"] for v, s in summary["studies"].items()}},
        title="region shift: the two-region data set and its studies",
    )
    print(f"tune with: hpo tune {args.folder / 'grouped.toml'}")


if __name__ == "__main__":
    main()
