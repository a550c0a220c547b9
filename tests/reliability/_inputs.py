"""Tiny valid inputs made in code, which the reliability tests then break one way at a time."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from hpo.cli.main import main

CRS = "EPSG:32643"
ORIGIN = (340_000.0, 3_820_000.0)  # top-left corner, UTM 43N
RES = 30.0
SIZE = 16

STUDY = """\
name = "hostile"
seed = 0
sampler = "random"

[data]
scene = "scene/scene.toml"

[model.fixed]
"optim.epochs" = 1

[[stages]]
name = "optim"
n_random = 2
n_bayes = 1
[stages.params]
"optim.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true, default = 1e-3 }

[[stages]]
name = "temporal"
n_random = 2
n_bayes = 1
[stages.params]
"temporal.lstm_hidden" = { type = "int", low = 8, high = 64, step = 8, default = 32 }
"temporal.conv_layers" = { type = "categorical", choices = [1, 2], default = 1 }
"""
"""A valid study file whose scene is written by :func:`write_scene` beside it."""

SCENE_TOML = """\
[data]
format = "geotiff"
dates = ["2008"]

[[data.sources]]
name = "red"
kind = "optical"
paths = { "2008" = "red.tif" }

[[data.sources]]
name = "dem"
kind = "factor"
path = "dem.tif"

[data.labels]
paths = { "2008" = "label.tif" }
"""


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    crs: str | None = CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
) -> Path:
    """Write a (rows, cols) array as a one-band GeoTIFF on the test grid (or ``transform``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=crs,
        nodata=nodata,
        transform=transform or Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]),
    ) as dst:
        dst.write(array[None])
    return path


def scene_section() -> dict[str, Any]:
    """The ``[data]`` section of :data:`SCENE_TOML` (paths relative to the scene folder)."""
    return {
        "format": "geotiff",
        "dates": ["2008"],
        "sources": [
            {"name": "red", "kind": "optical", "paths": {"2008": "red.tif"}},
            {"name": "dem", "kind": "factor", "path": "dem.tif"},
        ],
        "labels": {"paths": {"2008": "label.tif"}},
    }


def write_scene(folder: Path) -> Path:
    """A 16 x 16 px scene: one optical date, a DEM and a label raster; returns scene.toml."""
    rng = np.random.default_rng(0)
    write_tif(folder / "red.tif", rng.uniform(100, 200, (SIZE, SIZE)).astype(np.float32))
    write_tif(folder / "dem.tif", rng.uniform(500, 900, (SIZE, SIZE)).astype(np.float32))
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[4:9, 4:9] = 1
    write_tif(folder / "label.tif", label)
    (folder / "scene.toml").write_text(SCENE_TOML, encoding="utf-8")
    return folder / "scene.toml"


def write_study(folder: Path, text: str = STUDY, name: str = "hostile.toml") -> Path:
    """Write a study file (and its scene, once) into ``folder``."""
    if not (folder / "scene" / "scene.toml").exists():
        write_scene(folder / "scene")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``hpo ARGV`` in this process: (exit status, stdout, stderr).

    The command's consoles write to whatever ``sys.stdout``/``sys.stderr`` are when they
    print, so redirecting them captures everything, also inside hypothesis examples where
    pytest's function-scoped ``capsys`` cannot be used.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status: int, err: str, *needles: str) -> str:
    """A user error: non-zero exit, one ``hpo: error:`` line naming ``needles``, no traceback."""
    lines = err.strip().splitlines()
    assert status != 0, err
    assert len(lines) == 1, err
    assert lines[0].startswith("hpo: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------ TOML writing (fuzzing)


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (the stdlib reads TOML but does not write it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_key(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_key(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML also escapes DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_document(doc: dict[str, Any]) -> str:
    """A whole study as ``key = inline value`` lines (arrays of tables as inline arrays)."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())
