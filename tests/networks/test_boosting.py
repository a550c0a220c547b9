"""The per-pixel gradient-boosting floor ``hgb``: fit, own traversal, pickle-free checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from networks import (
    METRIC_NAMES,
    BoostingModel,
    ConfigError,
    ModelConfig,
    TrainingError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    train,
)
from networks.boosting import n_features, pixel_features, sample_pixels
from tests.networks.conftest import BlobScenes

# A landslide weight other than 1 takes the path with sample weights.
SMALL = {"boost.max_iter": 15, "boost.max_pixels": 2500, "boost.windows": "3,5",
         "boost.pos_weight": 2}  # fmt: skip


@pytest.fixture(scope="module")
def fitted():
    """One hgb run on the blob scenes, and its data."""
    train_set, val_set = BlobScenes(16, seed=1), BlobScenes(6, seed=2)
    config = ModelConfig.from_params(SMALL)
    history = train(config, train_set, val_set, seed=0, model="hgb")
    return history, config, train_set, val_set


def _items(data_set):
    return (data_set[i] for i in range(len(data_set)))


def test_fits_a_learnable_signal_and_reports_one_epoch_like_a_network(fitted):
    history, config, train_set, val_set = fitted
    assert isinstance(history.model, BoostingModel) and history.model.n_trees == 15
    (epoch,) = history.epochs
    assert set(epoch) == {"epoch", *METRIC_NAMES}
    # ~10 % landslide pixels: chance F1 is ~0.2; the disk is bright in one channel.
    assert epoch["f1"] > 0.8 and epoch["auc"] > 0.95 and epoch["miou"] > 0.8
    assert epoch["f1_best"] >= epoch["f1"] and 0 < history.threshold < 1
    assert epoch["threshold"] == history.threshold
    assert np.isfinite(epoch["train_loss"]) and np.isfinite(epoch["val_loss"])
    again = train(config, train_set, val_set, seed=0, model="hgb")
    assert again.epochs == history.epochs


def test_own_traversal_equals_scikit_learn_with_missing_values():
    features, labels = sample_pixels(_items(BlobScenes(6, seed=3)), (3,), 3000, seed=0)
    features = features.astype(np.float64)
    rng = np.random.default_rng(0)
    features[rng.random(features.shape) < 0.05] = np.nan  # NaN learns a side of each split
    estimator = HistGradientBoostingClassifier(
        max_iter=12, max_leaf_nodes=15, early_stopping=False, random_state=0
    ).fit(features, labels)
    model = BoostingModel(3, 5, ModelConfig.from_params({"boost.windows": "3"}).boost)
    model.load_estimator(estimator)
    probe = features[::3]
    expected = estimator.predict_proba(probe)[:, 1]
    assert np.abs(model.predict_proba(probe) - expected).max() < 1e-6

    # The forward pass: the same probabilities as logits of whole tiles.
    x, _, _ = BlobScenes(2, seed=4)[0]
    rows = pixel_features(x.numpy(), (3,)).reshape(-1, model.n_features)
    prob = torch.softmax(model(x[None]), dim=1)[0, 1].numpy().ravel()
    assert np.abs(prob - estimator.predict_proba(rows.astype(np.float64))[:, 1]).max() < 1e-6


def test_checkpoint_holds_plain_tensors_and_round_trips(fitted, tmp_path):
    history, config, _, val_set = fitted
    path = save_checkpoint(
        tmp_path / "hgb.pt", history.model, model_name="hgb", config=config,
        source_names=["a", "b", "c"], extra={"threshold": history.threshold},
    )  # fmt: skip
    raw = torch.load(path, weights_only=True)  # nothing in the file needs unpickling
    assert raw["model_name"] == "hgb" and raw["state_dict"]["tree_roots"].numel() == 15
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.extra["threshold"] == history.threshold
    x = torch.stack([val_set[i][0] for i in range(3)])
    with torch.no_grad():
        assert torch.equal(loaded.model(x), history.model(x))

    # A damaged link (a child before its parent) could loop the traversal: refused.
    state = history.model.state_dict()
    inner = int(torch.nonzero(~state["tree_leaf"])[1])
    state["tree_left"] = state["tree_left"].clone()
    state["tree_left"][inner] = 0
    with pytest.raises(RuntimeError, match="tree_left links a node before itself"):
        BoostingModel(3, 5, config.boost).load_state_dict(state)


def test_seed_ensemble_of_forests_round_trips(fitted, tmp_path):
    """Forests of other seeds have other node counts; each member loads its own sizes."""
    from networks import SeedEnsemble

    history, config, train_set, val_set = fitted
    other = train(config, train_set, val_set, seed=1, model="hgb").model
    ensemble = SeedEnsemble([history.model, other]).eval()
    path = save_checkpoint(tmp_path / "e.pt", ensemble, model_name="hgb", config=config,
                           source_names=["a", "b", "c"])
    loaded = load_checkpoint(path)
    assert loaded.members == 2
    x = torch.stack([val_set[i][0] for i in range(3)])
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ensemble(x))
        assert not torch.equal(ensemble(x), history.model(x))


def test_pixel_sample_is_class_stratified_seeded_and_valid_only():
    scenes = BlobScenes(8, seed=5)
    valid = torch.stack([scenes[i][2] for i in range(len(scenes))])
    y = torch.stack([scenes[i][1] for i in range(len(scenes))])
    share = float(y[valid].float().mean())
    features, labels = sample_pixels(_items(scenes), (3,), 400, seed=1)
    assert features.shape == (400, n_features(15, (3,))) and features.dtype == np.float32
    assert abs(labels.mean() - share) <= 1 / 400
    same, _ = sample_pixels(_items(scenes), (3,), 400, seed=1)
    other, _ = sample_pixels(_items(scenes), (3,), 400, seed=2)
    assert np.array_equal(features, same) and not np.array_equal(features, other)
    everything, all_labels = sample_pixels(_items(scenes), (1,), 10**6, seed=0)
    assert len(everything) == int(valid.sum()) and all_labels.sum() == int(y[valid].sum())

    background = [(x, torch.zeros_like(y), v) for x, y, v in _items(scenes)]
    with pytest.raises(TrainingError, match="one class only"):
        sample_pixels(background, (3,), 400, seed=0)


def test_boost_parameters_are_stage_tunable_with_dotted_keys():
    config = ModelConfig.from_params(
        {"boost.learning_rate": "0.05", "boost.max_iter": 40.0, "boost.windows": "3,7,11",
         "boost.pos_weight": 4, "head.focal_gamma": 2}
    )  # fmt: skip
    assert config.boost.learning_rate == 0.05 and type(config.boost.max_iter) is int
    assert config.boost.windows == (3, 7, 11) and config.head.focal_gamma == 2.0
    assert ModelConfig.from_params(config.to_params()) == config
    assert build_model("hgb", 2, 3, config).n_features == 6 * (1 + 2 * 3)
    with pytest.raises(ConfigError, match="boost.windows.*odd"):
        ModelConfig.from_params({"boost.windows": "3,4"})
    with pytest.raises(ConfigError, match="did you mean 'boost.learning_rate'"):
        ModelConfig.from_params({"boost.learning_rat": 0.1})
    with pytest.raises(ConfigError, match="ambiguous"):
        ModelConfig.from_params({"pos_weight": 2.0})  # head.pos_weight or boost.pos_weight
