"""Spatial context of the fusion network's DCNN branch and of the U-Net baseline."""

import itertools
import tomllib
from pathlib import Path

import pytest
import torch

from networks import DCNN, DCNNConfig, ModelConfig, build_model, receptive_field
from tests.networks.conftest import tiny_config

STUDIES = Path(__file__).resolve().parents[2] / "studies"
CONTEXT_KEYS = ("dcnn.depth", "dcnn.dilation", "dcnn.max_dilation", "dcnn.levels")


def _values(param: dict) -> list:
    """Every value a study file's parameter table can take."""
    if param["type"] == "categorical":
        return list(param["choices"])
    if param["type"] == "int":
        return list(range(param["low"], param["high"] + 1, param.get("step", 1)))
    raise AssertionError(f"a float DCNN context parameter: {param}")


def _study_spaces() -> dict[str, dict[str, list]]:
    """Per shipped study: the values of the DCNN's context parameters it fixes or tunes."""
    spaces = {}
    for path in sorted(STUDIES.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        space = {
            key: [value]
            for key, value in doc.get("model", {}).get("fixed", {}).items()
            if key in CONTEXT_KEYS
        }
        for stage in doc.get("stages", []):
            for key, param in stage.get("params", {}).items():
                if key in CONTEXT_KEYS:
                    space[key] = _values(param)
        spaces[path.stem] = space
    return spaces


def _layouts() -> list[tuple[tuple[int, ...], int]]:
    """Every distinct (dilations, levels) that a shipped study's search space allows."""
    layouts = set()
    for space in _study_spaces().values():
        keys = list(space)
        for values in itertools.product(*(space[k] for k in keys)):
            dcnn = ModelConfig.from_params(dict(zip(keys, values, strict=True))).dcnn
            layouts.add((dcnn.dilations(), dcnn.levels))
    return sorted(layouts)


LAYOUTS = _layouts()


def test_the_shipped_studies_search_depth_dilation_and_levels():
    spaces = _study_spaces()
    for name in ("quickstart", "compare-synthetic", "l4s", "l4s-patches", "kashmir", "paper"):
        assert {"dcnn.depth", "dcnn.max_dilation", "dcnn.levels"} <= set(spaces[name]), name
        assert max(spaces[name]["dcnn.levels"]) >= 2
    # 2-8 blocks, 1-16 dilation, 0-3 levels: dozens of distinct layouts to check below.
    assert len(LAYOUTS) > 30


@pytest.mark.parametrize(("dilations", "levels"), LAYOUTS, ids=str)
def test_every_layout_of_the_search_spaces_keeps_shapes_and_passes_gradients(dilations, levels):
    config = DCNNConfig(depth=len(dilations), width=4, max_dilation=max(dilations), levels=levels)
    assert config.dilations() == dilations
    torch.manual_seed(0)
    dcnn = DCNN(3, config)
    x = torch.randn(2, 3, 37, 45, requires_grad=True)
    out = dcnn(x)
    assert out.shape == (2, 4, 37, 45)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in dcnn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("levels", [0, 1, 2, 3])
@pytest.mark.parametrize("times", [1, 3])
def test_fusion_with_context_takes_odd_sizes_one_date_or_many(levels, times):
    torch.manual_seed(0)
    config = tiny_config(**{"dcnn.levels": levels, "dcnn.depth": 3, "dcnn.max_dilation": 4})
    model = build_model("fusion", 2, times, config)
    x = torch.randn(2, 2, times, 37, 45)
    logits = model(x)
    assert logits.shape == (2, 2, 37, 45) and torch.isfinite(logits).all()
    labels = torch.randint(0, 2, (2, 37, 45))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    for name, param in model.named_parameters():
        # One date: the LSTM's recurrent weights act on the zero initial state only.
        if param.requires_grad and not (times == 1 and "weight_hh" in name):
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_the_dilation_schedule():
    assert DCNNConfig().dilations() == (1, 2, 4, 8)
    assert DCNNConfig(depth=6).dilations() == (1, 2, 4, 8, 1, 2)
    assert DCNNConfig(depth=4, max_dilation=2).dilations() == (1, 2, 1, 2)  # the old layout
    assert DCNNConfig(depth=5, dilation=3, max_dilation=9).dilations() == (1, 3, 9, 1, 3)
    assert DCNNConfig(depth=3, max_dilation=1).dilations() == (1, 1, 1)
    assert DCNNConfig(depth=3, dilation=1, max_dilation=16).dilations() == (1, 1, 1)
    assert DCNNConfig(depth=3, max_dilation=5).dilations() == (1, 2, 4)


@pytest.mark.parametrize("times", [1, 5])
def test_the_default_fusion_network_sees_at_least_64_px(times):
    torch.manual_seed(0)
    model = build_model("fusion", 3, times)
    field = receptive_field(model, 3, times, size=192)
    assert field.side >= 64
    assert field.size == 192 and field.pixels >= 64 * 64
    assert model.training  # the measurement restores the mode


def test_the_old_default_layout_saw_less_than_64_px():
    torch.manual_seed(0)
    old = build_model("fusion", 3, 5, ModelConfig.from_dict({"dcnn": {"dilation": 2}}))
    assert old.dcnn.levels == 0 and old.dcnn.dilations == (1, 2, 1, 2)
    assert receptive_field(old, 3, 5, size=192).side < 64


@pytest.mark.parametrize(
    ("dilations", "side"), [((1, 1), 5), ((1, 2), 7), ((1, 2, 4), 15), ((1, 2, 4, 8), 31)]
)
def test_a_small_full_resolution_network_sees_exactly_its_dilated_kernels(dilations, side):
    # Without the temporal module the DBN and the classifier are per pixel, so the field
    # is the DCNN's: 1 + 2 * sum(dilations) for 3 x 3 kernels.
    config = tiny_config(
        **{
            "temporal.enabled": False,
            "dcnn.depth": len(dilations),
            "dcnn.max_dilation": max(dilations),
            "dcnn.levels": 0,
        }
    )
    torch.manual_seed(0)
    field = receptive_field(build_model("fusion", 2, 1, config), 2, 1, size=48)
    assert (field.height, field.width, field.pixels) == (side, side, side * side)


def test_the_largest_choices_of_the_quickstart_space_see_128_px_or_more():
    space = _study_spaces()["quickstart"]
    largest = {key: max(values) for key, values in space.items()}
    torch.manual_seed(0)
    model = build_model("fusion", 3, 5, ModelConfig.from_params(largest))
    assert receptive_field(model, 3, 5, size=192).side >= 128


def test_more_levels_see_further():
    sides = []
    for levels in (0, 1, 2):
        torch.manual_seed(0)
        config = tiny_config(**{"temporal.enabled": False, "dcnn.levels": levels})
        sides.append(receptive_field(build_model("fusion", 2, 1, config), 2, 1, size=96).side)
    assert sides[0] < sides[1] < sides[2]


def _params(name: str, **params: object) -> int:
    model = build_model(name, 3, 2, ModelConfig.from_params(params))
    return sum(p.numel() for p in model.parameters())


def test_search_space_parameters_reach_the_network():
    assert _params("fusion", **{"dcnn.depth": 6}) > _params("fusion", **{"dcnn.depth": 4})
    assert _params("fusion", **{"dcnn.levels": 2}) > _params("fusion", **{"dcnn.levels": 1})
    assert _params("fusion", **{"dcnn.width": 16}) < _params("fusion")
    assert _params("unet", **{"unet.levels": 4}) > _params("unet")
    assert _params("unet", **{"unet.channels": 16}) < _params("unet")
    assert _params("segnet", **{"segnet.levels": 2}) < _params("segnet")
    # The dilations change what a block sees, not its weights.
    assert _params("fusion", **{"dcnn.max_dilation": 16}) == _params("fusion")


def test_the_unet_has_half_a_million_to_two_million_parameters_and_context():
    assert 500_000 <= _params("unet") <= 2_000_000
    torch.manual_seed(0)
    sides = [
        receptive_field(
            build_model("unet", 3, 2, ModelConfig.from_params({"unet.levels": n})), 3, 2, size=192
        ).side
        for n in (2, 3)
    ]
    assert 64 <= sides[1] and sides[0] < sides[1]


def test_old_dcnn_configs_keep_their_layout_and_weights():
    # As a checkpoint or an export written before the pyramid stores it.
    stored = {"dcnn": {"depth": 3, "width": 8, "kernel_size": 3, "dilation": 3}}
    config = ModelConfig.from_dict(stored)
    assert (config.dcnn.max_dilation, config.dcnn.levels) == (3, 0)
    assert config.dcnn.dilations() == (1, 3, 1)
    dcnn = build_model("fusion", 2, 1, config).dcnn
    # The state-dict keys of the old full-resolution stack, nothing else.
    assert {k.split(".")[0] for k in dcnn.state_dict()} == {"layers"}
    assert [block[0].dilation for block in dcnn.layers] == [(1, 1), (3, 3), (1, 1)]
    # A study file of that time that tunes dilation alone gets the same.
    assert ModelConfig.from_params({"dcnn.dilation": 3}).dcnn == DCNNConfig(
        dilation=3, max_dilation=3, levels=0
    )


def test_new_configs_are_not_taken_for_old_ones():
    config = ModelConfig.from_params({"dcnn.dilation": 3, "dcnn.max_dilation": 9})
    assert config.dcnn.levels == 1 and config.dcnn.dilations() == (1, 3, 9, 1)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_params(config.to_params()) == config
    # A base that chose the pyramid keeps it when a later mapping names dilation only.
    base = ModelConfig.from_params({"dcnn.levels": 2})
    again = ModelConfig.from_params({"dcnn.dilation": 3}, base=base)
    assert again.dcnn.levels == 2 and again.dcnn.max_dilation == 8
    assert ModelConfig.from_dict({"dcnn": {"depth": 6}}).dcnn.levels == 1


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_segnet_levels_pool_that_often_at_odd_sizes(levels):
    # Issue 19: four poolings leave a 32-px tile 2 x 2 px at SegNet's bottleneck.
    model = build_model("segnet", 3, 2, ModelConfig.from_params({"segnet.levels": levels}))
    assert len(model.encoder) == len(model.decoder) == levels
    x = torch.randn(2, 3, 2, 37, 45, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 2, 37, 45)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("key", ["dcnn.levels", "unet.levels", "segnet.levels"])
def test_levels_out_of_range_are_named_errors(key):
    from networks import ConfigError

    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_params({key: 9})
    with pytest.raises(ConfigError, match="dcnn.max_dilation"):
        ModelConfig.from_params({"dcnn.max_dilation": 0})


@pytest.mark.parametrize("name", ["deeplabv3", "pspnet"])
@pytest.mark.parametrize("stride", [4, 8])
def test_backbone_stride_sets_the_head_map_at_odd_sizes(name, stride):
    # Issue 19: at output stride 8 a 32-px tile is 4 x 4 cells at the head.
    model = build_model(name, 3, 2, ModelConfig.from_params({"backbone.stride": stride}))
    assert model.backbone(torch.randn(1, 6, 32, 32)).shape[-2:] == (32 // stride,) * 2
    x = torch.randn(2, 3, 2, 37, 45, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 2, 37, 45)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_stride_4_keeps_the_weights_and_the_field_of_view():
    # Dilation replaces the third stage's stride: same weights, a map twice as fine, and
    # the rates after it doubled, so the view in input pixels does not shrink.
    coarse, fine = (build_model("deeplabv3", 3, 2, ModelConfig.from_params({"backbone.stride": s}))
                    for s in (8, 4))
    assert _params("deeplabv3", **{"backbone.stride": 4}) == _params("deeplabv3")

    def rates(model):
        blocks = [b.body[0][0] for b in model.backbone.layers[2:]]
        return ([(b.stride[0], b.dilation[0]) for b in blocks],
                [b[0].dilation[0] for b in model.aspp.branches[1:]])

    assert rates(coarse) == ([(2, 1), (2, 1), (1, 2), (1, 4)], [3, 6, 9])
    assert rates(fine) == ([(2, 1), (1, 2), (1, 4), (1, 8)], [6, 12, 18])


def test_an_unknown_output_stride_is_a_named_error():
    from networks import ConfigError

    with pytest.raises(ConfigError, match=r"backbone.stride.*4, 8"):
        ModelConfig.from_params({"backbone.stride": 6})
