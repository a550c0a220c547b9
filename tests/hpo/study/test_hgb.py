"""The gradient-boosting floor ``hgb`` in the toolkit: objective, export, train, predict."""

from __future__ import annotations

import json
import math

import pytest
import rasterio
import yaml
from optuna.distributions import FloatDistribution, IntDistribution

import networks
from hpo import LayerwiseSearch, NetworkObjective, Stage
from hpo.cli.main import main
from hpo.study.export import EXPORT_FORMAT, export_best
from tests.hpo.study.test_objective import tensors


def test_objective_fits_hgb_per_trial_and_the_export_keeps_its_threshold(name, tmp_path):
    objective = NetworkObjective(
        tensors(6, 0), tensors(3, 1), model="hgb", metric="auc",
        base_config=networks.ModelConfig.from_params({"boost.max_iter": 5}),
    )  # fmt: skip
    stages = [
        Stage("boost", {"boost.learning_rate": FloatDistribution(0.05, 0.5, log=True)},
              defaults={"boost.learning_rate": 0.1}, n_random=2, n_bayes=0),
        # The incumbent alone: this stage's best is a copy, with no history of its own.
        Stage("leaves", {"boost.max_leaf_nodes": IntDistribution(4, 31)},
              defaults={"boost.max_leaf_nodes": 31}, n_random=1, n_bayes=0),
    ]  # fmt: skip
    result = LayerwiseSearch(stages, objective, study_name=name).run()
    assert math.isfinite(result.best_value) and result.best_value > 0.8
    first = result.stages[0]
    (row,) = first.best_trial.user_attrs["hpo:history"]  # one fit, reported as epoch 1
    assert row["epoch"] == 1 and 0 < row["threshold"] < 1
    assert row["auc"] == first.best_trial.value == result.best_value

    doc = export_best(result, tmp_path / "best.json")
    assert doc["validation_threshold"] == row["threshold"]


def test_hpo_train_and_predict_run_hgb_and_reuse_the_validation_threshold(tmp_path, capsys):
    config = networks.ModelConfig.from_params({"boost.max_iter": 10, "boost.max_pixels": 3000})
    export = {
        "format": EXPORT_FORMAT,
        "search": "floor",
        "seed": 0,
        "model": {"name": "hgb", "config": config.to_dict()},
        "data": {
            "scene": "scene/scene.toml",
            "patch_size": 16,
            "fractions": [0.6, 0.2, 0.2],
            "cache_dir": "cubes",
            "synthetic": {"size": 64, "n_dates": 2, "seed": 0},
        },
    }
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(export))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "best.yaml"), "-o", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    threshold = metrics["threshold"]
    assert metrics["model"] == "hgb" and 0 < threshold < 1
    test = metrics["test"]
    assert test["at_threshold"]["threshold"] == threshold
    for at in ("at_0.5", "at_threshold"):
        assert 0 <= test[at]["f1"] <= 1 and 0 <= test[at]["miou"] <= 1
    checkpoint = networks.load_checkpoint(run / "model.pt")
    assert checkpoint.model_name == "hgb" and checkpoint.extra["threshold"] == threshold

    capsys.readouterr()
    out = tmp_path / "map.tif"
    scene = str(tmp_path / "scene")
    assert main(["predict", str(run / "model.pt"), "--scene", scene, "-o", str(out)]) == 0
    assert f"validation threshold {threshold:.3f}" in capsys.readouterr().out
    with rasterio.open(out) as src:
        assert src.tags()["MODEL"] == "hgb"
        assert float(src.tags()["THRESHOLD"]) == pytest.approx(threshold, rel=1e-5)
        values = src.read(1, masked=True)
    assert values.count() == 64 * 64 and 0 <= values.min() and values.max() <= 1
