"""The models and ablations ``hpo compare`` sets side by side, each derived from a study.

A variant says which model trains, which configuration and data settings it fixes, and
which of the study's tuned parameters apply to it. The paper's Tables 2-4 are the
comparison of ``fusion`` with the three baselines and the ablations; ``untuned`` shows
what tuning buys and ``hgb`` is the classical per-pixel floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo.study.schema import CategoricalParam, FloatParam, IntParam, ParamSpec, StageSpec


@dataclass(frozen=True)
class Variant:
    """One line of a comparison.

    Attributes:
        name: Its label in tables and study names.
        description: One line for the report.
        model: The ``networks`` model it trains.
        fixed: Configuration keys it fixes, on top of the study's ``[model.fixed]``.
        data: ``[data]`` keys it sets (e.g. ``select = "optical"``).
        keep: Prefixes of the study's tuned parameters that apply (``None``: all).
        drop: Prefixes of tuned parameters that do not apply (the part it removes).
        stages: Its own stages, replacing the study's (models the study does not tune).
        tuned: ``False``: trained at the study's defaults, no search.
        needs: What the data must have: ``"optical+factor"`` (both kinds of source) or
            ``"dates"`` (more than one date).
    """

    name: str
    description: str
    model: str = "fusion"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    stages: tuple[StageSpec, ...] | None = None
    tuned: bool = True
    needs: str | None = None

    def applies(self, name: str) -> bool:
        """Whether the study's tuned parameter ``name`` is tuned in this variant."""
        if self.keep is not None and not name.startswith(self.keep):
            return False
        return not name.startswith(self.drop) if self.drop else True


def _float(low: float, high: float, default: float, log: bool = False) -> ParamSpec:
    return FloatParam(default, low, high, log=log)


def _int(low: int, high: int, default: int, log: bool = False) -> ParamSpec:
    return IntParam(default, low, high, log=log)


def _stage(name: str, **params: ParamSpec) -> StageSpec:
    return StageSpec(name, {f"boost.{p}": spec for p, spec in params.items()})


# The boosting floor's own stages, layer by layer as for the networks: the trees first,
# then what the pixels see and how the classes are weighed.
BOOST_STAGES = (
    _stage(
        "trees",
        learning_rate=_float(0.02, 0.3, 0.1, log=True),
        max_iter=_int(50, 400, 100, log=True),
        max_leaf_nodes=_int(8, 128, 31, log=True),
        min_samples_leaf=_int(5, 200, 20, log=True),
    ),
    _stage(
        "features",
        windows=CategoricalParam(choices=([1], [3], [3, 7], [3, 7, 15]), default=[3, 7]),
        pos_weight=_float(1.0, 30.0, 1.0, log=True),
        l2_regularization=_float(0.0, 5.0, 0.0),
    ),
)

# What every baseline tunes; SegNet and the U-Net add their own group (segnet.*, unet.*).
_BASELINE_KEEP = ("optim.", "head.")
_PRETRAINING = ("dbn.pretrain_lr", "dbn.cd_k", "dbn.pretrain_epochs", "dbn.warmup_epochs",
                "dbn.max_pixels")

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fusion", "the paper's fusion network, every stage tuned"),
        Variant("segnet", "SegNet, optimizer, head and its segnet.* parameters tuned",
                model="segnet", keep=(*_BASELINE_KEEP, "segnet.")),
        Variant("deeplabv3", "DeepLabV3 (ASPP), optimizer and head tuned", model="deeplabv3",
                keep=_BASELINE_KEEP),
        Variant("pspnet", "PSPNet, optimizer and head tuned", model="pspnet",
                keep=_BASELINE_KEEP),
        Variant("unet", "U-Net, optimizer, head and its unet.* parameters tuned",
                model="unet", keep=(*_BASELINE_KEEP, "unet.")),
        Variant("hgb", "per-pixel gradient boosting (channels + window statistics)",
                model="hgb", stages=BOOST_STAGES),
        Variant("no-temporal", "fusion without the temporal module (DCNN-DBN only)",
                fixed={"temporal.enabled": False}, drop=("temporal.",), needs="dates"),
        Variant("optical-only", "fusion on the optical sources only",
                data={"select": "optical"}, needs="optical+factor"),
        Variant("factors-only", "fusion on the environmental factors only",
                data={"select": "factor"}, needs="optical+factor"),
        Variant("no-dbn", "fusion without the DBN branch", fixed={"dbn.enabled": False},
                drop=("dbn.",)),
        Variant("no-pretrain", "fusion with the DBN trained by backprop only (no CD)",
                fixed={"dbn.pretrain": False}, drop=_PRETRAINING),
        Variant("untuned", "the fusion network at the study's defaults, no search",
                tuned=False),
    )
}
"""Every variant, in the order of the report's tables."""

PAPER_VARIANTS = ("fusion", "segnet", "deeplabv3", "pspnet", "unet", "no-temporal",
                  "optical-only", "factors-only", "no-dbn", "no-pretrain", "untuned")
"""What ``hpo compare`` runs by default: the paper's Tables 2-4, the U-Net (the baseline
everyone runs first, not in the paper) and the untuned network."""


__all__ = ["BOOST_STAGES", "PAPER_VARIANTS", "VARIANTS", "Variant"]
