import os

import numpy as np
import pytest
import torch

from networks import (
    CheckpointError,
    ModelConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
    train,
)
from tests.networks.conftest import tiny_config

SOURCES = ["optical_red", "dem", "lithology"]


def test_trained_fusion_round_trips_to_identical_outputs(scenes, tmp_path):
    train_set, val_set = scenes
    config = tiny_config(**{"optim.epochs": 1, "dbn.warmup_epochs": 0})
    model = train(config, train_set, val_set, seed=0).model
    norm = {"mean": np.array([0.1, 0.2, 0.3], dtype=np.float32), "method": "zscore"}
    path = save_checkpoint(
        tmp_path / "run" / "best.pt",
        model,
        model_name="fusion",
        config=config,
        source_names=SOURCES,
        norm_stats=norm,
        extra={"seed": np.int64(0), "split": (0.6, 0.1, 0.3), "torch": torch.__version__},
    )
    loaded = load_checkpoint(path)
    assert loaded.model_name == "fusion"
    assert loaded.config == config
    assert loaded.source_names == SOURCES and loaded.n_times == 5 and loaded.n_sources == 3
    assert torch.equal(loaded.norm_stats["mean"], torch.tensor([0.1, 0.2, 0.3]))
    assert loaded.norm_stats["method"] == "zscore"
    assert loaded.extra == {"seed": 0, "split": [0.6, 0.1, 0.3], "torch": torch.__version__}
    assert set(loaded.versions) == {"torch", "numpy", "networks"}
    assert not loaded.model.training
    x = torch.randn(2, 3, 5, 17, 19)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.model(x))
    # The DBN's fitted standardisation is part of the weights.
    assert torch.equal(loaded.model.dbn.input_std, model.dbn.input_std)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]


@pytest.mark.parametrize("name", ["segnet", "deeplabv3", "pspnet", "unet"])
def test_baselines_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 3, 1).eval()
    save_checkpoint(
        tmp_path / "m.pt", model, model_name=name, config=ModelConfig(), source_names=SOURCES
    )
    x = torch.randn(1, 3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), load_checkpoint(tmp_path / "m.pt").model(x))


class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("content", ["text", "random_dict", "pickle_with_code", "missing"])
def test_a_file_that_is_not_a_checkpoint_is_named_in_the_error(content, tmp_path):
    path = tmp_path / "not_a_checkpoint.pt"
    if content == "text":
        path.write_text("hello")
    elif content == "random_dict":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "pickle_with_code":
        torch.save({"format": Malicious(tmp_path / "code_ran")}, path)
    with pytest.raises(CheckpointError, match="not_a_checkpoint.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "code_ran").exists()


def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(tmp_path):
    model = build_model("fusion", 3, 5, tiny_config())
    path = save_checkpoint(
        tmp_path / "m.pt",
        model,
        model_name="fusion",
        config=tiny_config(**{"dcnn.width": 4}),
        source_names=SOURCES,
    )
    with pytest.raises(CheckpointError, match="inconsistent"):
        load_checkpoint(path)


def test_saving_checks_names_and_content(tmp_path):
    model = build_model("segnet", 3, 1)
    with pytest.raises(CheckpointError, match="2 source names"):
        save_checkpoint(
            tmp_path / "m.pt",
            model,
            model_name="segnet",
            config=ModelConfig(),
            source_names=["a", "b"],
        )
    with pytest.raises(CheckpointError, match=r"extra\.when"):
        save_checkpoint(
            tmp_path / "m.pt",
            model,
            model_name="segnet",
            config=ModelConfig(),
            source_names=SOURCES,
            extra={"when": object()},
        )
    assert list(tmp_path.iterdir()) == []


def test_seed_ensemble_round_trips_and_averages_its_members(tmp_path):
    from networks import SeedEnsemble

    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(build_model("segnet", 3, 1).eval())
    ensemble = SeedEnsemble(members).eval()
    x = torch.randn(2, 3, 1, 16, 16)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(dim=0)
        assert torch.allclose(torch.softmax(ensemble(x), dim=1), mean, atol=1e-6)
        assert not torch.allclose(mean, torch.softmax(members[0](x), dim=1))
    path = save_checkpoint(tmp_path / "e.pt", ensemble, model_name="segnet",
                           config=ModelConfig(), source_names=SOURCES)
    loaded = load_checkpoint(path)
    assert loaded.members == 3 and isinstance(loaded.model, SeedEnsemble)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ensemble(x))
    # A single model is still written in the first format, which older readers load.
    single = save_checkpoint(tmp_path / "s.pt", members[0], model_name="segnet",
                             config=ModelConfig(), source_names=SOURCES)
    assert torch.load(single, weights_only=True)["format_version"] == 1
    assert load_checkpoint(single).members == 1


@pytest.mark.parametrize("members", [0, 2, 10**6, "3"])
def test_a_damaged_member_count_is_refused(members, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("segnet", 3, 1), model_name="segnet",
                           config=ModelConfig(), source_names=SOURCES)
    content = torch.load(path, weights_only=True)
    content["members"] = members  # one model's weights: 2 members cannot load them either
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="m.pt"):
        load_checkpoint(path)


def test_an_ensemble_needs_two_members_with_the_same_inputs():
    from networks import ConfigError, SeedEnsemble

    with pytest.raises(ConfigError, match="two members"):
        SeedEnsemble([build_model("segnet", 3, 1)])
    with pytest.raises(ConfigError, match="different inputs"):
        SeedEnsemble([build_model("segnet", 3, 1), build_model("segnet", 4, 1)])
