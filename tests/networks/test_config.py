import dataclasses
import json

import pytest

from networks import ConfigError, DBNConfig, ModelConfig, OptimConfig, TemporalConfig
from networks.config import parse_sizes, sizes_text

TUNED = {
    "temporal": [
        "conv_channels",
        "conv_layers",
        "kernel_size",
        "downsample",
        "lstm_hidden",
        "lstm_layers",
        "enabled",
    ],
    "dbn": [
        "hidden",
        "cd_k",
        "pretrain_epochs",
        "pretrain_lr",
        "max_pixels",
        "warmup_epochs",
        "visible",
        "enabled",
        "pretrain",
    ],
    "dcnn": ["depth", "width", "kernel_size", "dilation", "max_dilation", "levels"],
    "unet": ["channels", "levels"],
    "head": ["dropout", "mse_weight", "pos_weight"],
    "optim": ["lr", "weight_decay", "batch_size", "epochs"],
}


def test_param_names_cover_every_tuned_field():
    names = ModelConfig.param_names()
    for group, fields in TUNED.items():
        for name in fields:
            assert f"{group}.{name}" in names
    assert len(names) == len(set(names))
    assert ModelConfig().temporal.downsample == 4


def test_to_dict_is_json_safe_and_round_trips():
    config = ModelConfig.from_params({"dbn.hidden": (64, 32, 8), "optim.lr": 3e-4})
    nested = json.loads(json.dumps(config.to_dict()))
    assert nested["dbn"]["hidden"] == [64, 32, 8]
    again = ModelConfig.from_dict(nested)
    assert again == config
    assert again.dbn.hidden == (64, 32, 8)


def test_from_dict_keeps_defaults_for_missing_fields():
    config = ModelConfig.from_dict({"optim": {"epochs": 2}})
    assert config.optim.epochs == 2
    assert config.temporal == TemporalConfig()


def test_from_params_dotted_and_bare_names_with_casting():
    config = ModelConfig.from_params(
        {
            "optim.lr": "0.01",
            "lstm_hidden": 16.0,
            "hidden": "64,32",
            "visible": "bernoulli",
            "temporal.enabled": "false",
            "dbn.pretrain": 0,
        }
    )
    assert config.optim.lr == 0.01
    assert config.temporal.lstm_hidden == 16 and type(config.temporal.lstm_hidden) is int
    assert config.dbn.hidden == (64, 32)
    assert config.dbn.visible == "bernoulli"
    assert config.temporal.enabled is False and config.dbn.pretrain is False


def test_from_params_starts_from_base():
    base = ModelConfig.from_params({"optim.epochs": 3})
    config = ModelConfig.from_params({"dcnn.width": 8}, base=base)
    assert config.optim.epochs == 3 and config.dcnn.width == 8
    assert base.dcnn.width == ModelConfig().dcnn.width


def test_to_params_inverts_from_params():
    config = ModelConfig.from_params({"dbn.hidden": [5], "head.dropout": 0.3})
    assert ModelConfig.from_params(config.to_params()) == config


@pytest.mark.parametrize(
    ("params", "near"),
    [
        ({"lstm_hiden": 8}, "lstm_hidden"),
        ({"optim.learning_rat": 1.0}, None),
        ({"temporal.lstm_hiden": 8}, "temporal.lstm_hidden"),
    ],
)
def test_unknown_parameter_names_the_nearest(params, near):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_params(params)
    if near:
        assert repr(near) in str(err.value)


def test_unknown_group_and_field_in_from_dict():
    with pytest.raises(ConfigError, match="'optim'"):
        ModelConfig.from_dict({"optimizer": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="'optim.epochs'"):
        ModelConfig.from_dict({"optim": {"epoch": 1}})


def test_ambiguous_bare_name_lists_candidates():
    with pytest.raises(ConfigError, match="temporal.kernel_size, dcnn.kernel_size"):
        ModelConfig.from_params({"kernel_size": 3})


def test_same_parameter_twice_is_an_error():
    with pytest.raises(ConfigError, match="twice"):
        ModelConfig.from_params({"lr": 0.1, "optim.lr": 0.2})


@pytest.mark.parametrize(
    "params",
    [
        {"optim.lr": 0.0},
        {"optim.epochs": 2.5},
        {"optim.batch_size": True},
        {"temporal.kernel_size": 4},
        {"head.dropout": 1.0},
        {"dbn.hidden": []},
        {"dbn.hidden": "64,0"},
        {"dbn.visible": "gauss"},
        {"temporal.enabled": "maybe"},
        {"optim.lr": float("nan")},
        {"dcnn.width": "wide"},
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(params):
    key = next(iter(params))
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_params(params)
    assert err.value.key == key
    assert isinstance(err.value, ValueError)


def test_groups_validate_on_direct_construction_and_are_frozen():
    assert OptimConfig(epochs=4.0).epochs == 4
    with pytest.raises(ConfigError):
        DBNConfig(cd_k=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError):
        ModelConfig(optim={"lr": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("written", "sizes"),
    [
        ([64, 32], (64, 32)),  # study files and exports
        ((64, 32), (64, 32)),
        ("64,32", (64, 32)),  # an Optuna trial's value; files and searches of older versions
        ("64, 32", (64, 32)),
        ("64x32", (64, 32)),
        (64, (64,)),
        ("64", (64,)),
    ],
)
def test_sizes_load_in_every_written_form(written, sizes):
    assert ModelConfig.from_params({"dbn.hidden": written}).dbn.hidden == sizes
    assert tuple(parse_sizes(written)) == sizes
    assert parse_sizes(sizes_text(sizes)) == list(sizes)  # the one encoding reads back


def test_sizes_from_numpy_and_the_sequence_fields():
    numpy = pytest.importorskip("numpy")
    config = ModelConfig.from_params({"boost.windows": numpy.array([3, 7])})
    assert config.boost.windows == (3, 7) and type(config.boost.windows[0]) is int
    assert ModelConfig.sequence_params() == {"dbn.hidden", "boost.windows"}
    assert sizes_text((32, 16)) == "32,16"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("64,a", "expected integers"), ({"a": 1}, "sequence of integers"), ([64, 0], "1 or more"),
     ([True], "expected a number")],
)
def test_bad_sizes_name_the_key_and_a_hint(value, fragment):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_params({"dbn.hidden": value})
    assert err.value.key == "dbn.hidden" and fragment in str(err.value)
    assert err.value.hint


def test_errors_name_the_bound_or_the_nearest_choice():
    with pytest.raises(ConfigError, match=r"\[optim\.lr\] lr = 0\.0 \(hint: use a number > 0"):
        ModelConfig.from_params({"optim.lr": 0.0})
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        ModelConfig.from_params({"optim.schedule": "cosin"})
    with pytest.raises(ConfigError, match=r"\[dcnn\.levels\] levels = 9 \(hint: use at most 8"):
        ModelConfig.from_params({"dcnn.levels": 9})
