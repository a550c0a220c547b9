import pytest
import torch

from networks import MODEL_NAMES, NETWORK_NAMES, ConfigError, FusionNet, build_model
from tests.networks.conftest import tiny_config

ABLATIONS = {
    "full": {},
    "no_temporal": {"temporal.enabled": False},
    "no_dbn": {"dbn.enabled": False},
    "downsample_3": {"temporal.downsample": 3, "temporal.lstm_layers": 2},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("times", [1, 5])
def test_output_shape_for_odd_sizes(name, times):
    torch.manual_seed(0)
    model = build_model(name, 3, times, tiny_config())
    logits = model(torch.randn(2, 3, times, 17, 19))
    assert logits.shape == (2, 2, 17, 19)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_fusion_ablations_keep_the_contract(ablation):
    model = build_model("fusion", 3, 5, tiny_config(**ABLATIONS[ablation]))
    assert model(torch.randn(1, 3, 5, 13, 10)).shape == (1, 2, 13, 10)
    assert (model.temporal is None) == (ablation == "no_temporal")
    assert (model.dbn is None) == (ablation == "no_dbn")


def _used_parameters_get_gradients(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.train()
    labels = torch.randint(0, 2, (x.shape[0], *x.shape[-2:]))
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name} got no gradient"
            assert param.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 5, tiny_config())
    _used_parameters_get_gradients(model, torch.randn(2, 3, 5, 16, 16))


@pytest.mark.parametrize("ablation", ["no_temporal", "downsample_3"])
def test_gradients_reach_every_parameter_of_ablations(ablation):
    torch.manual_seed(0)
    model = build_model("fusion", 3, 5, tiny_config(**ABLATIONS[ablation]))
    _used_parameters_get_gradients(model, torch.randn(2, 3, 5, 11, 9))


def test_rbm_visible_biases_are_frozen_for_fine_tuning():
    model = build_model("fusion", 3, 5, tiny_config())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"dbn.rbms.{i}.visible_bias" for i in range(2)}


def test_dbn_warm_up_switch_zeroes_its_features():
    torch.manual_seed(0)
    model = build_model("fusion", 3, 1, tiny_config(**{"head.dropout": 0.0})).eval()
    x = torch.randn(1, 3, 1, 8, 8)
    with_dbn = model(x)
    model.dbn_active = False
    without = model(x)
    assert not torch.allclose(with_dbn, without)
    with torch.no_grad():
        model.classifier.weight[:, model.dcnn.out_channels :] = 0
    assert torch.allclose(model(x), without)


def test_wrong_input_shape_is_a_clear_error():
    model = build_model("segnet", 3, 5)
    with pytest.raises(ValueError, match=r"\(B, 3, 5, H, W\)"):
        model(torch.randn(1, 3, 4, 8, 8))


def test_build_model_rejects_unknown_names_and_sizes():
    with pytest.raises(ConfigError, match="'pspnet'"):
        build_model("psp_net", 3, 5)
    with pytest.raises(ConfigError, match="n_times"):
        build_model("fusion", 3, 0)
    assert isinstance(build_model("FUSION", 2, 1), FusionNet)
