import importlib

import pytest
import torch

import networks.registry
from networks import METRIC_NAMES, FusionNet, TrainingError, evaluate, train
from networks.train import _augment, _balanced_sampler, _init_prior
from tests.networks.conftest import BlobScenes, tiny_config


def test_two_seeded_runs_give_identical_histories(scenes):
    train_set, val_set = scenes
    config = tiny_config(**{"optim.epochs": 2})
    first = train(config, train_set, val_set, seed=7)
    second = train(config, train_set, val_set, seed=7)
    assert first.epochs == second.epochs
    assert first.pretrain_errors == second.pretrain_errors
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other = train(config, train_set, val_set, seed=8)
    assert other.epochs != first.epochs


def test_learns_a_tiny_learnable_data_set():
    train_set, val_set = BlobScenes(32, seed=1), BlobScenes(8, seed=2)
    history = train(tiny_config(**{"optim.epochs": 6}), train_set, val_set, seed=0)
    assert history.best("f1") >= 0.6
    assert history.last("f1") >= 0.6
    assert history.last("train_loss") < history.epochs[0]["train_loss"]
    assert not history.stopped_early
    assert isinstance(history.model, FusionNet) and not history.model.training


def test_dbn_is_pretrained_after_warm_up(scenes, monkeypatch):
    train_set, val_set = scenes
    built = []

    def spy_build(*args, **kwargs):
        built.append(networks.registry.build_model(*args, **kwargs))
        return built[-1]

    # The package's `train` function shadows its `train` module as an attribute.
    monkeypatch.setattr(importlib.import_module("networks.train"), "build_model", spy_build)
    dbn_used = []
    config = tiny_config(**{"optim.epochs": 3, "dbn.warmup_epochs": 2})
    history = train(
        config,
        train_set,
        val_set,
        seed=0,
        callbacks=[lambda epoch, metrics: dbn_used.append(built[0].dbn_active)],
    )
    assert dbn_used == [False, False, True]
    assert [len(e) for e in history.pretrain_errors] == [2, 2]


def test_without_pretraining_the_dbn_is_used_from_the_start(scenes):
    train_set, val_set = scenes
    config = tiny_config(**{"optim.epochs": 1, "dbn.pretrain": False})
    history = train(config, train_set, val_set, seed=0)
    assert history.pretrain_errors == []
    assert history.model.dbn_active


def test_callbacks_see_metrics_and_can_stop(scenes):
    train_set, val_set = scenes
    calls = []

    def report(epoch, metrics):
        calls.append((epoch, sorted(metrics)))

    def stop_after_two(epoch, metrics):
        return epoch >= 2

    history = train(
        tiny_config(**{"optim.epochs": 5, "temporal.enabled": False}),
        train_set,
        val_set,
        seed=0,
        callbacks=[stop_after_two, report],
    )
    assert calls == [(1, sorted(METRIC_NAMES)), (2, sorted(METRIC_NAMES))]
    assert history.stopped_early
    assert [e["epoch"] for e in history.epochs] == [1, 2]
    assert history.best("val_loss") == min(e["val_loss"] for e in history.epochs)
    with pytest.raises(KeyError, match="'miou'"):
        history.last("mIoU")


def test_baselines_train_through_the_same_entry_point(scenes):
    train_set, val_set = scenes
    history = train(tiny_config(**{"optim.epochs": 1}), train_set, val_set, seed=0, model="segnet")
    assert set(history.epochs[0]) == {"epoch", *METRIC_NAMES}


def test_global_rng_state_is_left_alone(scenes):
    train_set, val_set = scenes
    before = torch.get_rng_state()
    train(tiny_config(**{"optim.epochs": 1, "dbn.enabled": False}), train_set, val_set, seed=0)
    assert torch.equal(before, torch.get_rng_state())


def test_unusable_data_sets_raise_training_error(scenes):
    train_set, val_set = scenes
    with pytest.raises(TrainingError, match="empty"):
        train(tiny_config(), [], val_set, seed=0)
    with pytest.raises(TrainingError, match=r"\(x, y, valid\)"):
        train(tiny_config(), [(torch.zeros(3, 1, 4, 4), torch.zeros(4, 4))], val_set, seed=0)
    no_valid = BlobScenes(2, seed=3)
    no_valid.valid[:] = False
    with pytest.raises(TrainingError, match="no valid pixel"):
        train(tiny_config(**{"optim.epochs": 1}), train_set, no_valid, seed=0)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"dbn.enabled": False}, "training loss became nan"),
        ({}, "DBN pretraining got NaN"),
    ],
)
def test_nan_inputs_raise_training_error(scenes, params, match):
    train_set, val_set = scenes
    train_set.x[0, 0, 0, 0, 0] = float("nan")
    config = tiny_config(**{"optim.epochs": 1, "optim.batch_size": 24, **params})
    with pytest.raises(TrainingError, match=match):
        train(config, train_set, val_set, seed=0)


def test_threshold_is_chosen_on_validation_and_kept(scenes):
    train_set, val_set = scenes
    history = train(tiny_config(**{"optim.epochs": 2}), train_set, val_set, seed=0)
    last = history.epochs[-1]
    assert 0.0 <= last["threshold"] <= 1.0 and last["f1_best"] >= last["f1"]
    assert history.threshold == last["threshold"] == history.last("threshold")
    again = evaluate(history.model, val_set, threshold=history.threshold)
    assert again["f1_at_threshold"] == pytest.approx(last["f1_best"], abs=1e-6)
    assert again["f1"] == pytest.approx(last["f1"], abs=1e-6)
    with pytest.raises(KeyError, match="threshold"):
        history.best("threshold")


def test_classifier_starts_at_the_weighted_class_prior(scenes):
    train_set, _ = scenes
    net = FusionNet(3, 5, tiny_config())
    _init_prior(net, train_set, tiny_config().head, torch.Generator().manual_seed(0))
    y = torch.stack([train_set[i][1] for i in range(len(train_set))])
    valid = torch.stack([train_set[i][2] for i in range(len(train_set))])
    share = float(y[valid].float().mean())
    prior = 3.0 * share / (3.0 * share + 1 - share)
    bias = net.classifier.bias.detach()
    assert torch.softmax(bias, 0)[1].item() == pytest.approx(prior, rel=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        {"optim.schedule": "cosine", "optim.augment": False, "optim.grad_clip": 0.0},
        {"optim.schedule": "constant", "head.positive_tiles": 0.5, "head.dice_weight": 0.5},
    ],
)
def test_training_options_run_and_are_deterministic(scenes, params):
    train_set, val_set = scenes
    config = tiny_config(**{"optim.epochs": 2, **params})
    first = train(config, train_set, val_set, seed=3)
    assert first.epochs == train(config, train_set, val_set, seed=3).epochs


def test_augmentation_moves_inputs_labels_and_mask_together():
    x = torch.arange(2 * 3 * 2 * 4 * 4, dtype=torch.float32).view(2, 3, 2, 4, 4)
    y = (x[:, 0, 0] % 3 == 0).long()
    valid = x[:, 1, 1] % 2 == 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        ax, ay, av = _augment(x, y, valid, generator)
        assert torch.equal(ay, (ax[:, 0, 0] % 3 == 0).long())
        assert torch.equal(av, ax[:, 1, 1] % 2 == 0)
    wide = torch.zeros(1, 1, 1, 2, 5)
    assert _augment(wide, wide[:, 0, 0], wide[:, 0, 0] > 0, generator)[0].shape == wide.shape


def test_balanced_sampling_draws_landslide_tiles_at_the_requested_share():
    scenes = BlobScenes(10, seed=4)
    # Tiles 0-7 lose their landslide: 2 of 10 positive, a 20 % share by plain shuffling.
    items = [(x, y if i >= 8 else torch.zeros_like(y), v) for i, (x, y, v) in enumerate(scenes)]
    sampler = _balanced_sampler(items, 0.6, torch.Generator().manual_seed(0))
    drawn = [i for _ in range(400) for i in sampler]
    assert len(drawn) == 4000 and set(drawn) == set(range(10))
    assert sum(i >= 8 for i in drawn) / len(drawn) == pytest.approx(0.6, abs=0.03)
    assert _balanced_sampler(items, 0.0, torch.Generator()) is None
    assert _balanced_sampler(list(scenes), 0.6, torch.Generator()) is None  # all positive


class _Confident(torch.nn.Module):
    """Logits (0, 500 * x[channel 0]): float32 probabilities all round to 0 or 1."""

    def forward(self, x):
        score = 500.0 * x[:, 0, -1]
        return torch.stack((torch.zeros_like(score), score), dim=1)


def test_evaluate_ranks_log_odds_that_saturate_as_probabilities():
    from networks import evaluate, roc_auc

    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        x = torch.randn(2, 1, 8, 8, generator=g)
        y = ((x[0, -1] + 0.5 * torch.randn(8, 8, generator=g)) > 0.5).long()
        items.append((x, y, torch.ones(8, 8, dtype=torch.bool)))
    got = evaluate(_Confident(), items, device="cpu")
    scores = torch.cat([500.0 * x[0, -1].ravel() for x, _, _ in items]).numpy()
    labels = torch.cat([y.ravel() for _, y, _ in items]).numpy()
    assert torch.sigmoid(torch.from_numpy(scores)).eq(1).float().mean() > 0.2
    assert got["auc"] == pytest.approx(roc_auc(scores, labels), abs=1e-9)
    assert 0 < got["threshold"] < 1


def test_cpu_training_does_not_depend_on_the_thread_count():
    # Large enough tiles and channels that torch's CPU kernels split work across threads:
    # without the one-thread rule of `train`, four threads give other weights than one.
    train_set = BlobScenes(16, seed=3, size=(48, 48))
    val_set = BlobScenes(4, seed=4, size=(48, 48))
    config = tiny_config(**{"optim.epochs": 2, "dcnn.width": 32, "temporal.conv_channels": 16})
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 4):
            torch.set_num_threads(threads)
            runs.append(train(config, train_set, val_set, seed=5))
            assert torch.get_num_threads() == threads  # restored after training
    finally:
        torch.set_num_threads(before)
    first, second = runs
    assert first.epochs == second.epochs
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
