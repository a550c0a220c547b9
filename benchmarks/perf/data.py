"""Cube build from an on-disk uint16 stack: windowed build against read-everything-then-stack.

For every size N the script writes a synthetic scene of N x N uint16 GeoTIFFs (4 optical
bands x 5 dates + 4 static layers: DEM, slope, lithology codes, land-cover codes) to a
temporary directory, then builds the (S, T, H, W) float32 cube twice, each in a fresh
subprocess so its peak resident memory is its own:

- ``windowed``: ``data.build_cube`` (strips of ``--block-size`` rows, written by offset);
- ``naive``: every raster read whole with rasterio, converted, stacked with numpy and saved
  (skipped when it would need more than half the RAM).

Both write the same .npy files; the script checks they are equal. Reported: input MB/s
(input bytes on disk / build seconds), peak RSS (VmHWM), disk used. The inputs are read right after
being written, so both builds read from a warm page cache.

    python -m benchmarks.perf.data                       # 2048 4096 8192
    python -m benchmarks.perf.data --sizes 2048 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Row, Run, add_common_flags, melt, results_dir

DATASET = "synthetic-uint16-geotiff-stack"
TITLE = "Data: cube build"
DATES = ["2008", "2011", "2014", "2017", "2020"]
BANDS = ["blue", "green", "red", "nir"]
STATIC = {"dem": None, "slope": None, "lithology": [1, 2, 3, 4, 5], "landcover": [1, 2, 3, 4]}
CRS = "EPSG:32643"
RES = 30.0


def write_stack(root: Path, size: int, seed: int = 0) -> dict[str, Any]:
    """Write the uint16 scene strip by strip; return its [data] section."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    transform = Affine(RES, 0, 300_000, 0, -RES, 4_000_000)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "crs": CRS,
        "transform": transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    layers = [(f"optical/{d}_{b}.tif", None) for d in DATES for b in BANDS]
    layers += [(f"{name}.tif", codes) for name, codes in STATIC.items()]
    strip = 256
    noise = rng.integers(1, 4000, (strip, size), dtype=np.uint16)
    root.mkdir(parents=True, exist_ok=True)
    for k, (rel, codes) in enumerate(layers):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            for r0 in range(0, size, strip):
                rows = min(strip, size - r0)
                block = np.roll(noise[:rows], 37 * k + r0, axis=1)
                if codes is not None:
                    block = (block % len(codes) + 1).astype(np.uint16)
                dst.write(block[None], window=((r0, r0 + rows), (0, size)))
    sources: list[dict[str, Any]] = [
        {
            "name": b,
            "kind": "optical",
            "type": "continuous",
            "paths": {d: f"optical/{d}_{b}.tif" for d in DATES},
        }
        for b in BANDS
    ]
    for name, codes in STATIC.items():
        source: dict[str, Any] = {"name": name, "kind": "factor", "path": f"{name}.tif"}
        if codes is None:
            source["type"] = "continuous"
        else:
            source.update(type="categorical", codes=codes, encoding="codes")
        sources.append(source)
    return {"format": "geotiff", "dates": DATES, "sources": sources}


def build_windowed(root: Path, out: Path, block_size: int) -> None:
    """The toolkit's build, written into ``out``."""
    import data

    section = json.loads((root / "section.json").read_text())
    cube = data.build_cube(section, base_dir=root, cache_dir=out, block_size=block_size)
    cube_dir = cube.path
    for name in ("dynamic", "static", "valid"):
        os.replace(cube_dir / f"{name}.npy", out / f"{name}.npy")


def build_naive(root: Path, out: Path) -> None:
    """Read every raster whole, stack in memory, save."""
    import rasterio

    section = json.loads((root / "section.json").read_text())

    def read(rel: str) -> np.ndarray:
        with rasterio.open(root / rel) as src:
            arr = src.read(1).astype(np.float32)
            arr[arr == src.nodata] = np.nan
            return arr

    dynamic, static = [], []
    for s in section["sources"]:
        if "paths" in s:
            dynamic.append(np.stack([read(s["paths"][d]) for d in section["dates"]]))
        else:
            static.append(read(s["path"])[None])
    dyn = np.stack(dynamic)
    sta = np.stack(static)
    valid = np.isfinite(dyn).all(axis=(0, 1)) & np.isfinite(sta).all(axis=(0, 1))
    np.save(out / "dynamic.npy", dyn)
    np.save(out / "static.npy", sta)
    np.save(out / "valid.npy", valid)


def _child(mode: str, root: Path, out: Path, block_size: int) -> None:
    import rasterio  # noqa: F401  (imports are not part of the build time)

    if mode == "windowed":
        import data  # noqa: F401
    start = time.perf_counter()
    if mode == "windowed":
        build_windowed(root, out, block_size)
    else:
        build_naive(root, out)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_kib() / 1024}))


def _peak_rss_kib() -> int:
    """This process's own peak RSS.

    ``getrusage``'s ru_maxrss survives ``execve`` on Linux, so a child would report its
    parent's peak; VmHWM belongs to the current address space only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run(mode: str, root: Path, out: Path, block_size: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.perf.data",
        "--child",
        mode,
        "--root",
        str(root),
        "--build-to",
        str(out),
        "--block-size",
        str(block_size),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} build failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same(a: Path, b: Path) -> bool:
    """Compare two builds one source at a time, memory-mapped."""
    for name in ("dynamic", "static", "valid"):
        x = np.load(a / f"{name}.npy", mmap_mode="r")
        y = np.load(b / f"{name}.npy", mmap_mode="r")
        if x.shape != y.shape:
            return False
        for i in range(x.shape[0]):
            if not np.array_equal(x[i], y[i], equal_nan=True):
                return False
    return True


def _size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def bench_size(size: int, workdir: Path, block_size: int, seed: int = 0) -> dict[str, Any]:
    """Write one stack, build it both ways, measure, clean up."""
    root = workdir / f"stack_{size}"
    t0 = time.perf_counter()
    section = write_stack(root, size, seed)
    (root / "section.json").write_text(json.dumps(section))
    write_s = time.perf_counter() - t0
    input_bytes = sum(p.stat().st_size for p in root.rglob("*.tif"))
    n_layers = len(DATES) * len(BANDS) + len(STATIC)
    output_bytes = n_layers * size * size * 4
    row: dict[str, Any] = {
        "size": size,
        "layers": n_layers,
        "input_mb": input_bytes / 2**20,
        "output_mb": output_bytes / 2**20,
        "write_s": write_s,
    }
    try:
        print(
            f"[{size}] inputs written ({input_bytes / 2**20:.0f} MB, {write_s:.0f} s); "
            "windowed build ...",
            flush=True,
        )
        win = _run("windowed", root, workdir / f"win_{size}", block_size)
        win["mb_per_s"] = row["input_mb"] / win["seconds"]
        row["windowed"] = win
        row["disk_mb"] = (input_bytes + _size_of(workdir / f"win_{size}")) / 2**20
        # the naive build holds the converted layers and their stacked copy at once
        naive_need = 2 * output_bytes + size * size * 4
        if naive_need > _ram_bytes() / 2:
            row["naive"] = {"skipped": f"needs ~{naive_need / 2**30:.1f} GiB, over half the RAM"}
        else:
            print(f"[{size}] naive build ...", flush=True)
            naive = _run("naive", root, workdir / f"naive_{size}", block_size)
            naive["mb_per_s"] = row["input_mb"] / naive["seconds"]
            row["naive"] = naive
            row["disk_mb"] += _size_of(workdir / f"naive_{size}") / 2**20
            row["equal"] = _same(workdir / f"win_{size}", workdir / f"naive_{size}")
            row["throughput_ratio"] = win["mb_per_s"] / naive["mb_per_s"]
            row["rss_ratio"] = win["peak_rss_mb"] / naive["peak_rss_mb"]
    finally:
        for name in (f"stack_{size}", f"win_{size}", f"naive_{size}"):
            shutil.rmtree(workdir / name, ignore_errors=True)
    return row


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| size | input MB | disk MB | windowed s | windowed MB/s | windowed peak RSS MB "
        "| naive s | naive MB/s | naive peak RSS MB | throughput ratio | equal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w, n = r["windowed"], r["naive"]
        if "skipped" in n:
            naive_cells = f"skipped ({n['skipped']}) | – | – | – | –"
        else:
            naive_cells = (
                f"{n['seconds']:.1f} | {n['mb_per_s']:.0f} | {n['peak_rss_mb']:.0f} | "
                f"{r['throughput_ratio']:.2f} | {r['equal']}"
            )
        lines.append(
            f"| {r['size']}² | {r['input_mb']:.0f} | {r['disk_mb']:.0f} | "
            f"{w['seconds']:.1f} | {w['mb_per_s']:.0f} | {w['peak_rss_mb']:.0f} | "
            f"{naive_cells} |"
        )
    return "\n".join(lines)


def to_rows(results: list[dict[str, Any]]) -> list[Row]:
    """Per size: the stack's measures, then each build's (a skipped build says why)."""
    records = []
    for r in results:
        stack = {k: v for k, v in r.items() if k not in ("windowed", "naive")}
        records.append({"model": "stack", **stack})
        records += [{"model": build, "size": r["size"], **r[build]}
                    for build in ("windowed", "naive")]  # fmt: skip
    return melt("data", records, dataset=DATASET, model_key="model",
                setup_keys=("size", "layers"))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)  # --quick: one 1024 x 1024 stack
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="stack sides (default 2048 4096 8192)")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to write the temporary stacks (default: system temp)",
    )
    parser.add_argument("--child", choices=["windowed", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.root, args.build_to, args.block_size)
        return
    sizes = args.sizes or ([1024] if args.quick else [2048, 4096, 8192])
    recorder = Run("data", results_dir(args))
    workdir = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.workdir))
    results = []
    try:
        for size in sizes:
            results.append(bench_size(size, workdir, args.block_size, args.seed))
            print(_table(results[-1:]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {
        "ram_gib": round(_ram_bytes() / 2**30, 1),
        "platform": platform.platform(),
        "block_size": args.block_size,
        "dates": len(DATES),
        "optical_bands": len(BANDS),
        "static_layers": len(STATIC),
        "seed": args.seed,
    }
    md = (
        f"{settings['ram_gib']} GiB RAM, block {args.block_size} rows. "
        f"uint16 GeoTIFF stack, {len(BANDS)} optical bands x {len(DATES)} dates + "
        f"{len(STATIC)} static layers -> float32 cube on disk. MB/s = input MB / build "
        "seconds; peak RSS per build in a fresh subprocess; disk = inputs + outputs.\n\n"
        + _table(results)
        + "\n"
    )
    recorder.write(to_rows(results), settings=settings, markdown=md, title=TITLE)

if __name__ == "__main__":
    main()
