"""Build any model of the package by name."""

from __future__ import annotations

import difflib
import numbers

from networks.base import CubeModel
from networks.baselines import DeepLabV3, PSPNet, SegNet, UNet
from networks.boosting import BoostingModel
from networks.config import ModelConfig
from networks.errors import ConfigError
from networks.fusion import FusionNet

NETWORK_NAMES: tuple[str, ...] = ("fusion", "segnet", "deeplabv3", "pspnet", "unet")
"""The models trained by back-propagation: the fusion network first, then the baselines."""
MODEL_NAMES: tuple[str, ...] = (*NETWORK_NAMES, "hgb")
"""Names :func:`build_model` accepts: the networks, then the per-pixel gradient-boosting
floor ``hgb`` (fitted, not back-propagated; see :mod:`networks.boosting`)."""

BASELINE_GROUPS: dict[str, tuple[str, ...]] = {
    "segnet": ("segnet",), "deeplabv3": ("backbone",), "pspnet": ("backbone",),
    "unet": ("unet",), "hgb": ("boost",),
}
"""The config groups each baseline reads besides ``optim`` and ``head`` (the fusion
network reads the rest)."""

_BASELINES = {"deeplabv3": DeepLabV3, "pspnet": PSPNet}


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
        config: Hyperparameters (default: all defaults). The baselines read
            ``head.dropout``; DeepLabV3 and PSPNet read ``backbone``, SegNet
            ``segnet``, the U-Net ``unet``. ``hgb`` reads ``boost``.

    Returns:
        A model mapping ``(B, S, T, H, W)`` floats to ``(B, 2, H, W)`` logits; ``hgb``
        unfitted (no trees: probability 0.5 everywhere) until :func:`networks.train`.

    Raises:
        ConfigError: On an unknown name (naming the nearest) or a non-positive size.
    """
    n_sources = _positive_int(n_sources, "n_sources")
    n_times = _positive_int(n_times, "n_times")
    config = config if config is not None else ModelConfig()
    key = str(name).lower()
    if key == "fusion":
        return FusionNet(n_sources, n_times, config)
    if key == "segnet":
        return SegNet(n_sources, n_times, dropout=config.head.dropout, stages=config.segnet.levels)
    if key in _BASELINES:
        return _BASELINES[key](n_sources, n_times, dropout=config.head.dropout,
                               stride=config.backbone.stride)
    if key == "unet":
        return UNet(
            n_sources,
            n_times,
            channels=config.unet.channels,
            levels=config.unet.levels,
            dropout=config.head.dropout,
        )
    if key == "hgb":
        return BoostingModel(n_sources, n_times, config.boost)
    near = difflib.get_close_matches(key, MODEL_NAMES, n=1)
    raise ConfigError(
        f"unknown model {name!r}",
        key="model",
        hint=(f"did you mean {near[0]!r}? " if near else "")
        + "choose from "
        + ", ".join(MODEL_NAMES),
    )
