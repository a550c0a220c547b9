"""``hpo tune --dry-run`` and ``hpo status`` say which validation a study uses (issue 23)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from hpo.cli.main import main

STUDY = """\
name = "shift"
storage = "sqlite:///shift.db"
seed = 0
metric = "f1"

[data]
format = "patches"
path = "patches"
images = "img/*.tif"
masks = "mask/{{stem}}.tif"
channels = [{{ name = "v", kind = "optical" }}]
patch_size = 8
group = {{ regex = '^(?P<group>[a-z]+)_' }}
test_groups = ["west"]
{extra}

[[stages]]
name = "optim"
n_random = 2
n_bayes = 1
[stages.params]
"optim.lr" = {{ type = "float", low = 1e-4, high = 1e-2, log = true, default = 1e-3 }}
"""


def _write(root: Path, extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    for region in ("north", "south", "west"):
        for k in range(2):
            for sub, array in (("img", rng.random((1, 8, 8)).astype(np.float32)),
                               ("mask", (rng.random((1, 8, 8)) > 0.8).astype(np.uint8))):
                path = root / "patches" / sub / f"{region}_{k}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1,
                                       dtype=array.dtype) as dst:
                        dst.write(array)
    study = root / "shift.toml"
    study.write_text(STUDY.format(extra=textwrap.dedent(extra)), encoding="utf-8")
    return study


def test_a_grouped_test_validates_by_groups_by_default(tmp_path, capsys):
    study = _write(tmp_path)
    assert main(["tune", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "validation: grouped (whole groups held out; the default)" in out
    assert "the test split holds out groups" in out
    # two regions beside the test's: one held-out region is a noisy validation, said so
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "only 2 groups are not in the test" in warning and "[tuning] folds = 2" in warning
    assert main(["status", str(study)]) == 0
    assert "validation: grouped" in capsys.readouterr().out
    assert not (tmp_path / "shift.db").exists()


def test_random_validation_under_a_grouped_test_is_flagged(tmp_path, capsys):
    study = _write(tmp_path, 'validation = "random"')
    assert main(["tune", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "validation: random (patches drawn at random; asked for)" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "validation is random while the test split holds out groups" in warning


def test_an_impossible_validation_is_a_one_line_error(tmp_path, capsys):
    study = _write(tmp_path, 'validation = "blocked"')
    assert main(["tune", str(study), "--dry-run"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation" in err[0] and "hint:" in err[0]
