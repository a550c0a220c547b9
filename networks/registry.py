"""Build any model of the package by name."""

from __future__ import annotations

import difflib
import numbers

from networks.base import CubeModel
from networks.baselines import DeepLabV3, PSPNet, SegNet
from networks.config import ModelConfig
from networks.errors import ConfigError
from networks.fusion import FusionNet

MODEL_NAMES: tuple[str, ...] = ("fusion", "segnet", "deeplabv3", "pspnet")
"""Names :func:`build_model` accepts: the fusion network first, then the baselines."""

_BASELINES = {"segnet": SegNet, "deeplabv3": DeepLabV3, "pspnet": PSPNet}


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}", key=name)
    return int(value)


def build_model(
    name: str, n_sources: int, n_times: int, config: ModelConfig | None = None
) -> CubeModel:
    """Build a freshly initialised model.

    Args:
        name: One of :data:`MODEL_NAMES`.
        n_sources: Input sources ``S``.
        n_times: Input dates ``T``.
        config: Hyperparameters (default: all defaults). The baselines only read
            ``head.dropout``; their architecture is fixed.

    Returns:
        A model mapping ``(B, S, T, H, W)`` floats to ``(B, 2, H, W)`` logits.

    Raises:
        ConfigError: On an unknown name (naming the nearest) or a non-positive size.
    """
    n_sources = _positive_int(n_sources, "n_sources")
    n_times = _positive_int(n_times, "n_times")
    config = config if config is not None else ModelConfig()
    key = str(name).lower()
    if key == "fusion":
        return FusionNet(n_sources, n_times, config)
    if key in _BASELINES:
        return _BASELINES[key](n_sources, n_times, dropout=config.head.dropout)
    near = difflib.get_close_matches(key, MODEL_NAMES, n=1)
    raise ConfigError(
        f"unknown model {name!r}",
        key="model",
        hint=(f"did you mean {near[0]!r}? " if near else "")
        + "choose from "
        + ", ".join(MODEL_NAMES),
    )
