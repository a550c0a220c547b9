"""export -> ``hpo train`` -> ``hpo predict`` -> ``hpo report`` on a tiny tuned study.

One tiny study is tuned once per module (in process, a few seconds); every command family
then runs at least once through the real entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

from hpo.cli.main import main
from tests.hpo.cli.test_cli import ROOT, write_study


def hpo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the ``hpo`` command in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hpo: error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    """The tiny study tuned and exported in process, then trained by `hpo train`."""
    folder = tmp_path_factory.mktemp("final")
    study = write_study(folder)
    assert main(["tune", str(study), "--plain"]) == 0
    export = hpo("export", "tiny.toml", "-o", "best.yaml", cwd=folder)
    assert export.returncode == 0, export.stderr
    assert "hpo train best.yaml" in export.stdout
    run = hpo("train", "best.yaml", "-o", "run", cwd=folder)
    assert run.returncode == 0, run.stderr
    return SimpleNamespace(folder=folder, study=study, run=folder / "run", stdout=run.stdout)


def test_status_json_from_the_command_line_parses(trained):
    run = hpo("status", "tiny.toml", "--json", cwd=trained.folder)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["finished"] is True and [s["name"] for s in doc["stages"]] == ["optim", "dcnn"]


def test_train_writes_checkpoint_metrics_and_curves(trained):
    from networks import load_checkpoint

    run = trained.run
    assert "test split" in trained.stdout and "MIoU" in trained.stdout
    assert "hpo predict" in trained.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("miou", "f1", "auc"):
        assert 0.0 <= test["at_0.5"][key] <= 1.0
    c = test["at_0.5"]["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == test["pixels"] > 0
    roc = test["roc"]  # the points behind roc.png, for users' own plots
    assert len(roc["fpr"]) == len(roc["tpr"]) >= 2 and roc["fpr"][0] <= roc["fpr"][-1]
    assert metrics["train_on"] == "train" and metrics["seed"] == 0
    assert metrics["split"]["n_test"] > 0 and len(metrics["history"]) == 1
    shift = metrics["test_outside_training"]  # the test tiles of the training scene: in range
    assert "dem" in shift and max(shift.values()) < 0.01
    assert "far outside the training range" not in trained.stdout
    for png in ("curves.png", "roc.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoint = load_checkpoint(run / "model.pt")
    assert checkpoint.model_name == "fusion"
    assert checkpoint.n_times == 2
    assert set(checkpoint.norm_stats["sources"]) == set(checkpoint.source_names)
    assert checkpoint.extra["patch_size"] == 16
    assert checkpoint.extra["threshold"] == metrics["threshold"]
    if metrics["threshold"] is not None:  # the training run chose one on validation
        assert test["at_threshold"]["threshold"] == metrics["threshold"]
        assert 0.0 <= test["at_threshold"]["f1"] <= 1.0
    # A second run into the same folder would overwrite the model: refused.
    assert main(["train", str(trained.folder / "best.yaml"), "-o", str(run)]) == 1


def test_train_uses_the_tuning_split_and_can_add_validation(trained, capsys):
    """train+val fits on more tiles; the test tiles are the same ones tuning withheld."""
    out = trained.folder / "run-tv"
    code = main(
        ["train", str(trained.folder / "best.yaml"), "-o", str(out), "--train-on", "train+val"]
    )
    assert code == 0, capsys.readouterr().err
    both = json.loads((out / "metrics.json").read_text())
    first = json.loads((trained.run / "metrics.json").read_text())
    assert both["split"] == first["split"]  # same cube, same seed: same tiles
    assert both["test"]["pixels"] == first["test"]["pixels"]
    assert "trained on (train+val)" in capsys.readouterr().out


def test_train_members_saves_a_seed_ensemble_that_predict_uses(trained, capsys):
    """--members 3: three seeds in one checkpoint; its threshold and test scores are the
    averaged members'."""
    from hpo.study import prepare_final_data
    from hpo.study.export import load_export
    from networks import SeedEnsemble, load_checkpoint, roc_auc
    from networks.inference import split_log_odds
    from networks.metrics import best_f1_threshold, log_odds

    out = trained.folder / "run-ens"
    code = main(["train", str(trained.folder / "best.yaml"), "-o", str(out), "--members", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "member 3/3" in printed and "ensemble of 3, seeds 0-2" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1, 2] and len(metrics["members"]) == 3
    checkpoint = load_checkpoint(out / "model.pt")
    assert isinstance(checkpoint.model, SeedEnsemble) and checkpoint.members == 3
    assert checkpoint.extra["threshold"] == metrics["threshold"]
    # Recompute from the members themselves: mean probabilities, threshold, test AUC.
    export = load_export(trained.folder / "best.yaml")
    base = export.get("data_base_dir") or trained.folder
    final = prepare_final_data(export["data"], base, seed=export["seed"])
    val = [split_log_odds(m, final.val_set) for m in checkpoint.model.members]
    test = [split_log_odds(m, final.test_set) for m in checkpoint.model.members]
    assert not np.allclose(test[0][0], test[1][0])  # the seeds differ

    def mean_prob(pairs):
        return np.mean([1 / (1 + np.exp(-s.astype(np.float64))) for s, _ in pairs], axis=0)

    val_mean, test_mean = mean_prob(val), mean_prob(test)
    if val[0][1].any():  # the ensemble's threshold reaches the best F1 of the mean
        best, _ = best_f1_threshold(log_odds(val_mean), val[0][1])
        called = val_mean > metrics["threshold"]
        tp = (called & val[0][1]).sum()
        assert 2 * tp / (called.sum() + val[0][1].sum()) == pytest.approx(best)
    assert metrics["test"]["at_0.5"]["auc"] == pytest.approx(roc_auc(test_mean, test[0][1]),
                                                             abs=1e-6)
    run = hpo("predict", "run-ens/model.pt", "--scene", "tiny.toml", "-o", "maps/ens.tif",
              cwd=trained.folder)
    assert run.returncode == 0, run.stderr
    report = trained.folder / "report-ens.md"
    assert main(["report", str(trained.study), "-o", str(report), "--run", str(out)]) == 0
    assert "a seed ensemble of 3 (seeds 0, 1, 2)" in report.read_text()


def test_train_members_out_of_range_is_one_line(trained, capsys):
    code = main(["train", str(trained.folder / "best.yaml"), "-o",
                 str(trained.folder / "run-bad"), "--members", "0"])
    assert code != 0
    assert "--members 0" in capsys.readouterr().err
    assert not (trained.folder / "run-bad").exists()


def scene_grid(folder: Path) -> tuple:
    with rasterio.open(folder / "scene" / "dem.tif") as src:
        return src.crs, src.transform, src.width, src.height


def test_predict_map_has_the_scene_grid_and_probabilities(trained):
    run = hpo(
        "predict",
        "run/model.pt",
        "--scene",
        "tiny.toml",
        "-o",
        "maps/map.tif",
        "--batch",
        "3",
        cwd=trained.folder,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "Mpx/s" in run.stdout
    path = trained.folder / "maps" / "map.tif"
    crs, transform, width, height = scene_grid(trained.folder)
    with rasterio.open(path) as src:
        assert (src.crs, src.transform, src.width, src.height) == (crs, transform, width, height)
        assert src.dtypes[0] == "float32" and src.nodata == -9999.0
        values = src.read(1, masked=True)
        assert src.tags()["MODEL"] == "fusion"
    assert values.count() > 0
    assert 0.0 <= values.min() and values.max() <= 1.0
    assert (trained.folder / "maps" / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((trained.folder / "maps").glob(".*tmp*"))  # written atomically


def test_predict_names_inputs_far_outside_the_training_range(trained, tmp_path):
    same = hpo("predict", "run/model.pt", "--scene", "tiny.toml", "-o", str(tmp_path / "a.tif"),
               cwd=trained.folder)
    assert same.returncode == 0 and "training range" not in same.stderr, same.stderr
    # The same scene 3 km higher: every DEM value is far above what training saw.
    shifted = shutil.copytree(trained.folder / "scene", tmp_path / "higher")
    dem = next(p for p in shifted.glob("*.tif") if "dem" in p.name.lower())
    with rasterio.open(dem, "r+") as dst:
        dst.write(dst.read(1) + 3000.0, 1)
    run = hpo("predict", "run/model.pt", "--scene", str(shifted / "scene.toml"), "-o",
              str(tmp_path / "b.tif"), cwd=trained.folder)
    assert run.returncode == 0, run.stderr
    named = re.search(r"far outside the training range \((.*?) of valid values", run.stderr)
    assert named and named.group(1).startswith("dem 100.0 %"), run.stderr
    assert "slope" not in named.group(1)  # its derivatives did not move


def test_predict_marks_invalid_pixels_nodata_and_blends_seamlessly(trained, tmp_path):
    from hpo.study import open_scene
    from hpo.study.files import NODATA
    from hpo.study.predict import predict_scene
    from networks import load_checkpoint

    checkpoint = load_checkpoint(trained.run / "model.pt")
    cube = open_scene(trained.study, say=lambda _: None)
    cube.valid = np.array(cube.valid)  # a writable copy of the memory-mapped mask
    cube.valid[:10, :20] = False
    # Tiles larger than the scene: one forward pass, no seam at all.
    whole = predict_scene(
        checkpoint, cube, tmp_path / "whole.tif", tile=64, overlap=0, quicklook=False
    )
    tiled = predict_scene(
        checkpoint, cube, tmp_path / "tiled.tif", tile=16, overlap=8, quicklook=False
    )
    assert tiled.n_tiles > 16 and whole.n_tiles == 1
    with rasterio.open(whole.path) as a, rasterio.open(tiled.path) as b:
        one, many = a.read(1), b.read(1)
    assert (one[:10, :20] == NODATA).all() and (many[:10, :20] == NODATA).all()
    valid = many != NODATA
    assert valid.sum() == 64 * 64 - 200
    # Blending stays a convex combination of tile predictions: probabilities, and close to
    # the seamless map (the network sees less context at tile edges, so not equal).
    assert 0 <= many[valid].min() and many[valid].max() <= 1
    assert np.abs(many[valid] - one[valid]).mean() < 0.2


def test_checkpoint_from_another_model_is_one_line(trained, tmp_path, capsys):
    import torch

    from networks import ModelConfig, build_model, save_checkpoint

    config = ModelConfig.from_params({"dcnn.depth": 1, "dcnn.width": 4})
    other = build_model("segnet", 3, 2, config)
    save_checkpoint(
        tmp_path / "other.pt",
        other,
        model_name="segnet",
        config=config,
        source_names=["red", "green", "swir"],
    )
    scene = str(trained.folder / "scene")
    assert (
        main(
            ["predict", str(tmp_path / "other.pt"), "--scene", scene, "-o", str(tmp_path / "m.tif")]
        )
        == 1
    )
    line = one_error_line(capsys.readouterr().err)
    assert "segnet" in line and "swir" in line and "hint:" in line
    assert not (tmp_path / "m.tif").exists()

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    # a file named on the command line that is missing or of another kind: exit 2 (issue 21)
    assert main(["predict", str(tmp_path / "foreign.pt"), "--scene", scene]) == 2
    assert "not a landslide-hpo checkpoint" in one_error_line(capsys.readouterr().err)

    assert (
        main(["predict", str(trained.run / "model.pt"), "--scene", str(tmp_path / "nowhere")]) == 2
    )
    assert "scene not found" in one_error_line(capsys.readouterr().err)


def test_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in one_error_line(capsys.readouterr().err)
    (tmp_path / "other.yaml").write_text("a: 1\n")
    assert main(["train", str(tmp_path / "other.yaml")]) == 2
    assert "hpo export" in one_error_line(capsys.readouterr().err)


def linked_pngs(md: Path) -> set[str]:
    """The images a markdown report links, each checked to exist beside it as a valid PNG.

    Every PNG in the report's folder must be linked too: a plot written but never shown
    is as much a bug as a link to nothing.
    """
    from PIL import Image

    text = md.read_text()
    links = set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text))
    for name in links:
        path = md.parent / name
        assert path.is_file(), f"{md.name} links {name}, which is missing"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            image.verify()
    prefix = f"{md.stem}-" if md.name != "report.md" else ""
    written = {p.name for p in md.parent.glob(f"{prefix}*.png")}
    assert written <= links, f"plots not linked: {written - links}"
    return links


SEARCH_PLOTS = {"best-so-far.png", "stages.png"}
RUN_PLOTS = {"run-curves.png", "run-roc.png", "run-confusion.png"}


def test_report_tables_plots_and_the_final_run(trained):
    run = hpo("report", "tiny.toml", "-o", "rep", "--run", "run", cwd=trained.folder)
    assert run.returncode == 0, run.stderr
    assert "untuned defaults" in run.stdout
    md = trained.folder / "rep" / "report.md"
    text = md.read_text()
    for needle in (
        "| 1/2 | optim | finished | 3/3",
        "| 2/2 | dcnn | finished | 3/3",
        "Improvement over the untuned defaults",
        "Final model on the test split",
        "![best so far](best-so-far.png)",
        "`dcnn.width`",
        # ROC and confusion matrices on one line: side by side in a markdown viewer.
        "![ROC curve](run-roc.png) ![confusion matrix](run-confusion.png)",
        # The run folder holds no map yet: the report says how to make one.
        "`hpo predict run/model.pt --scene tiny.toml -o run/map.tif`",
    ):
        assert needle in text, needle
    assert SEARCH_PLOTS | RUN_PLOTS <= linked_pngs(md)
    assert "map.png" not in text and "hpo export" not in text
    metrics = json.loads((trained.run / "metrics.json").read_text())
    n_thresholds = 1 + (metrics["test"].get("at_threshold") is not None)
    assert text.count("| validation-chosen (") + text.count("| 0.5 |") == n_thresholds

    # Without --run, one line tells how to get the model sections; a .md target puts the
    # plots beside it with its name as prefix.
    assert main(["report", str(trained.study), "-o", str(trained.folder / "r.md")]) == 0
    md = trained.folder / "r.md"
    links = linked_pngs(md)
    assert {f"r-{name}" for name in SEARCH_PLOTS} <= links
    assert not any("run-" in name or "map" in name for name in links)
    text = md.read_text()
    assert f"`hpo export {trained.study} -o best.yaml` -> `hpo train best.yaml" in text
    assert f"`hpo report {trained.study} --run RUN_DIR`" in text
    assert "confusion matrices and prediction map of the exported model" in text


def test_report_includes_the_prediction_map(trained, tmp_path, capsys):
    """A map inside the run folder is picked up; --map names one, with or without --run."""
    from hpo.study import open_scene
    from hpo.study.predict import predict_scene

    run = tmp_path / "run"
    shutil.copytree(trained.run, run)
    cube = open_scene(trained.study, say=lambda _: None)
    # No quick-look of its own: the report draws one with the same writer.
    pred = predict_scene(run / "model.pt", cube, run / "map.tif", quicklook=False)
    assert pred.quicklook is None

    assert main(["report", str(trained.study), "-o", str(tmp_path / "a"), "--run", str(run)]) == 0
    md = tmp_path / "a" / "report.md"
    assert SEARCH_PLOTS | RUN_PLOTS | {"map.png"} <= linked_pngs(md)
    text = md.read_text()
    with rasterio.open(run / "map.tif") as src:
        values = src.read(1, masked=True).compressed()
        crs, size = src.crs.to_string(), f"{src.width} x {src.height} px"
    cut = pred.threshold if pred.threshold is not None else 0.5
    above = 100 * float((values > cut).mean())
    line = f"{size}, CRS {crs}, 100.0 % valid; {above:.2f} % of valid pixels above"
    assert line in text and f"{cut:.3f}." in text
    assert "Not included" not in text
    assert line in capsys.readouterr().out

    # --map alone: the map section, and the one line on how to get the test results.
    assert (
        main(["report", str(trained.study), "-o", str(tmp_path / "b"), "--map", str(pred.path)])
        == 0
    )
    md = tmp_path / "b" / "report.md"
    links = linked_pngs(md)
    assert "map.png" in links and not links & RUN_PLOTS
    text = md.read_text()
    assert line in text and "`hpo train best.yaml -o RUN_DIR`" in text
    assert "ROC curve and confusion matrices of the exported model" in text

    (tmp_path / "not.tif").write_text("no raster\n")
    assert (
        main(
            [
                "report",
                str(trained.study),
                "-o",
                str(tmp_path / "c"),
                "--map",
                str(tmp_path / "not.tif"),
            ]
        )
        == 1
    )
    assert "cannot read the prediction map" in one_error_line(capsys.readouterr().err)


def test_report_of_a_search_not_run_is_one_line(tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["report", str(study), "-o", str(tmp_path / "rep")]) == 1
    assert "no layer-wise search" in one_error_line(capsys.readouterr().err)


def test_train_warns_when_the_test_split_leaves_the_training_range(tmp_path):
    """Landslide4Sense fold 1: 28 % of its test patches' cirrus band (B10) lie beyond it."""
    from hpo.study.retrain import train_export
    from networks import ModelConfig
    from tests.data.conftest import shared_data_dir

    root = shared_data_dir() / "l4s-sample"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (set LANDSLIDE_SHARED_DATA to the shared data folder)")
    doc = {
        "seed": 0,
        "model": {"name": "fusion", "config": ModelConfig().to_dict()},
        "data": {"format": "l4s", "path": str(root), "patch_size": 64, "stratify": True,
                 "fractions": [0.6, 0.2, 0.2], "folds": 3, "fold": 1, "fold_role": "test",
                 "cache_dir": str(tmp_path / "cubes")},
        "data_base_dir": str(tmp_path),
    }
    said: list[str] = []
    run = train_export(doc, tmp_path / "run", epochs=1, device="cpu", say=said.append)
    shift = run.metrics["test_outside_training"]
    assert shift["B10"] == pytest.approx(0.282, abs=0.01)
    assert [s for s in said if "far outside the training range: B10 28." in s], said
    assert max(v for k, v in shift.items() if k != "B10") < 0.01


def test_members_trained_side_by_side_equal_members_trained_in_turn(trained, monkeypatch):
    """Members train in worker processes when CPUs allow; each on one thread, so the
    models are the very ones a sequential run gives."""
    import torch

    import hpo.study.retrain
    from hpo.study.retrain import train_export
    from networks import load_checkpoint

    states = {}
    for workers in (1, 2):
        monkeypatch.setattr(hpo.study.retrain, "_member_workers",
                            lambda members, device, w=workers: w)
        run = train_export(trained.folder / "best.yaml", trained.folder / f"members-{workers}",
                           members=2, epochs=1, say=lambda text: None)
        members = load_checkpoint(run.checkpoint).model.members
        states[workers] = [m.state_dict() for m in members]
    for a, b in zip(states[1], states[2], strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
