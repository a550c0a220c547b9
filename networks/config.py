"""Every tunable hyperparameter of the networks, grouped by the tuning stage that owns it.

Each group is a frozen pydantic dataclass: its fields' types, bounds and literals are the
one check of a value, whether it comes from a study file, an Optuna trial, an export or a
checkpoint; a bad value raises :class:`~networks.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as typed_dataclass

from networks.errors import ConfigError, explain, invalid

VisibleUnits = Literal["gaussian", "bernoulli"]
Schedule = Literal["constant", "cosine", "onecycle"]


def parse_sizes(value: Any) -> Any:
    """Read a sequence of sizes in any of its written forms: the one converter of them.

    Lists are how study files and exports write sizes (``[64, 32]``); ``"64,32"`` is how
    an Optuna trial holds one (its categorical choices must be plain values, see
    :func:`sizes_text`) and how study files, searches and exports of earlier versions
    wrote them; a single integer is one size.

    Args:
        value: ``[64, 32]``, ``(64, 32)``, ``"64,32"`` (also ``"64 32"``, ``"64x32"``) or ``64``.

    Returns:
        The sizes as a list (each one still to be checked as a size).

    Raises:
        PydanticCustomError: The value is no sequence of sizes (read by
            :func:`~networks.errors.explain`).
    """
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\sx\-]+", value.strip()) if p]
        if not all(p.isdigit() for p in parts):
            raise invalid(f"expected integers, got {value!r}", _SIZES_HINT)
        return [int(p) for p in parts]
    if _is_integer(value):
        return [int(value)]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        # numpy arrays and their integer scalars read as plain integers
        return [int(v) if _is_integer(v) else v for v in value]
    raise invalid(f"expected a sequence of integers, got {value!r}", _SIZES_HINT)


def sizes_text(sizes: Sequence[int]) -> str:
    """A sequence of sizes as one plain value (``(64, 32)`` -> ``"64,32"``).

    Optuna's categorical choices must be ``None``, booleans, numbers or strings, so a
    search holds a choice of sizes in this form; :func:`parse_sizes` reads it back.
    """
    return ",".join(str(int(s)) for s in sizes)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value: Any) -> Any:
    """Refuse booleans as numbers (``True`` as a layer count is surely a mistake)."""
    if isinstance(value, bool):
        raise invalid(f"expected a number, got {value!r}", "write a number, not true or false")
    if _is_integer(value):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, float):
        return float(value)
    return value


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise invalid(
            f"must be odd, got {value}", "odd kernels keep the map size with symmetric padding"
        )
    return value


_SIZES_HINT = 'e.g. [64, 32] (or "64,32")'
Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]
Positive = Annotated[Int, Field(ge=1)]
Odd = Annotated[Int, Field(ge=1), AfterValidator(_odd)]
Sizes = Annotated[tuple[Positive, ...], BeforeValidator(parse_sizes), Field(min_length=1)]
OddSizes = Annotated[tuple[Odd, ...], BeforeValidator(parse_sizes), Field(min_length=1)]

_G = TypeVar("_G", bound=type)


def _group(cls: _G) -> _G:
    """``cls`` as a frozen, typed config group whose invalid values raise ConfigError."""
    typed = typed_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
    kind = typed(cls)
    validate = kind.__init__

    @functools.wraps(validate)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as exc:
            issue = explain(exc, kind)
            key = f"{kind.GROUP}.{issue.loc[0]}" if issue.loc else kind.GROUP
            raise ConfigError(issue.message, key=key, hint=issue.hint) from exc

    kind.__init__ = __init__
    return kind


def _nearest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return found[0] if found else None


def _did_you_mean(word: str, choices: list[str]) -> str:
    near = _nearest(word, choices)
    return f"did you mean {near!r}?" if near is not None else "valid names: " + ", ".join(choices)


class _Group:
    """Shared behaviour of the config groups."""

    GROUP: ClassVar[str]

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of this group's fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


@_group
class TemporalConfig(_Group):
    """CNN-LSTM temporal fusion module (tuning stage ``temporal``).

    Attributes:
        enabled: Use the temporal module. False is the paper's "DCNN-DBN without temporal
            module" ablation: the DBN and DCNN then see the raw ``S*T`` channels.
        conv_channels: Channels of every 3-D convolution block.
        conv_layers: 3-D convolution blocks over (T, h, w) on the downsampled grid (one more
            block always runs at full resolution before downsampling).
        kernel_size: Kernel size of the 3-D convolutions, over time and space (odd).
        downsample: Spatial downsampling factor before the LSTM (1 = none). Any integer;
            sizes that are not multiples are padded.
        lstm_hidden: Hidden units of the many-to-one LSTM; also the module's output channels.
        lstm_layers: Stacked LSTM layers.
    """

    GROUP: ClassVar[str] = "temporal"

    enabled: bool = True
    conv_channels: Positive = 16
    conv_layers: Positive = 1
    kernel_size: Odd = 3
    downsample: Positive = 4
    lstm_hidden: Positive = 32
    lstm_layers: Positive = 1


@_group
class DBNConfig(_Group):
    """Deep Belief Network branch of the spatial fusion module (tuning stage ``dbn``).

    Attributes:
        enabled: Use the DBN branch (False: the DCNN branch alone feeds the classifier).
        pretrain: Greedy layer-wise CD-k pretraining before fine-tuning. False is the
            "DBN without pretraining" ablation (random initialisation, backprop only).
        hidden: Hidden units of each stacked RBM, first layer first (``[32, 16]``; any
            form :func:`parse_sizes` reads, such as a trial's ``"32,16"``).
        visible: Visible units of the first RBM, ``"gaussian"`` (real-valued, standardised
            features) or ``"bernoulli"`` (features squashed to (0, 1)). Deeper RBMs always
            have Bernoulli visible units, since they see hidden probabilities.
        cd_k: Gibbs steps of contrastive divergence (CD-k).
        pretrain_epochs: Pretraining passes over the sampled pixels, per RBM.
        pretrain_lr: Learning rate of the CD updates.
        pretrain_batch_size: Pixel vectors per CD update.
        max_pixels: At most this many valid pixels are sampled from the training set for
            pretraining.
        warmup_epochs: Supervised epochs of the network without the DBN before pretraining,
            so the DBN is pretrained on trained temporal features. They count towards
            ``optim.epochs``; capped at ``optim.epochs - 1``; skipped when the temporal
            module is off (raw features do not change).
    """

    GROUP: ClassVar[str] = "dbn"

    enabled: bool = True
    pretrain: bool = True
    hidden: Sizes = (32, 16)
    visible: VisibleUnits = "gaussian"
    cd_k: Positive = 1
    pretrain_epochs: Positive = 3
    pretrain_lr: Annotated[Float, Field(gt=0.0)] = 0.01
    pretrain_batch_size: Positive = 64
    max_pixels: Positive = 20_000
    warmup_epochs: Annotated[Int, Field(ge=0)] = 1


@_group
class DCNNConfig(_Group):
    """Deep 2-D CNN branch of the spatial fusion module (tuning stage ``dcnn``).

    The branch sees its surroundings through a dilation pyramid, optionally on a grid
    downsampled by a strided encoder whose decoder restores full resolution through skip
    connections (see :class:`networks.dcnn.DCNN`). Landslides are recognised by their
    shape, scarp and runout, tens of pixels across: the defaults give the fusion network
    an empirical receptive field of about 90 px (34 px before); ``levels = 0`` with
    ``max_dilation = dilation`` is the narrow layout of earlier versions (13 px).

    Attributes:
        depth: Convolution blocks of the dilated body (on the coarsest grid).
        width: Channels of every block; also the branch's output channels.
        kernel_size: Kernel size (odd).
        dilation: Growth factor of the dilation pyramid: block ``i`` of the body is
            dilated by ``dilation ** k``, ``k`` counting up from 0 while the dilation stays
            within ``max_dilation`` and then starting over (1, 2, 4, 8, 1, 2, ...). Powers
            of a factor fill each other's gaps, so no input pixel falls through.
        max_dilation: Largest dilation of the pyramid. Equal to ``dilation``, it gives the
            earlier layout 1, d, 1, d, ...; 1 switches dilation off.
        levels: Stride-2 downsampling steps before the body (0 = full resolution). Each
            doubles the reach of the body at a quarter of its cost; the decoder up-samples
            and fuses the encoder's feature map of every level (skip connections), so
            small landslides keep their outline. Any input size works. At most 8.

    A stored configuration written before ``max_dilation`` and ``levels`` existed (a
    checkpoint or an export whose ``dcnn`` group names ``dilation`` but neither of them)
    is read with ``max_dilation = dilation`` and ``levels = 0``: the layout it was
    trained with (see :meth:`ModelConfig.from_dict`).
    """

    GROUP: ClassVar[str] = "dcnn"

    depth: Positive = 4
    width: Positive = 32
    kernel_size: Odd = 3
    dilation: Positive = 2
    max_dilation: Positive = 8
    levels: Annotated[Int, Field(ge=0, le=8)] = 1

    def dilations(self) -> tuple[int, ...]:
        """The dilation of every block of the body, first block first.

        Returns:
            ``depth`` dilations, e.g. ``(1, 2, 4, 8)`` at the defaults.
        """
        cycle = [1]
        while self.dilation > 1 and cycle[-1] * self.dilation <= self.max_dilation:
            cycle.append(cycle[-1] * self.dilation)
        return tuple(cycle[i % len(cycle)] for i in range(self.depth))


@_group
class HeadConfig(_Group):
    """Feature reconstruction, classifier and loss (tuning stage ``head``).

    Attributes:
        dropout: Dropout on the reconstructed feature matrix before the classifier.
        mse_weight: Weight of the mean-squared-error term of eq. 8 (the paper adds the two
            terms, i.e. 1.0).
        pos_weight: Weight of the cross-entropy on landslide pixels, which are only 1-5 %
            of pixels (the paper has none, i.e. 1.0).
        dice_weight: Weight of a soft Dice term on the landslide class beside eq. 8
            (0 = eq. 8 alone). Dice is F1 made differentiable, so it rewards recall of rare
            landslide pixels that the pixel-averaged eq. 8 drowns in background.
        positive_tiles: Share of the training tiles drawn per epoch that hold a landslide
            (balanced sampling, with replacement); 0 keeps plain shuffling, where the share
            is whatever the split holds.
        focal_gamma: Focusing exponent of the cross-entropy term (Lin et al. 2017): each
            pixel's term is scaled by ``(1 - p_t)^gamma``, ``p_t`` the probability of its
            true class, so the many easy background pixels weigh less than the hard ones
            (0 = the plain cross-entropy of eq. 8).
    """

    GROUP: ClassVar[str] = "head"

    dropout: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.1
    mse_weight: Annotated[Float, Field(ge=0.0)] = 1.0
    pos_weight: Annotated[Float, Field(gt=0.0)] = 3.0
    dice_weight: Annotated[Float, Field(ge=0.0)] = 0.0
    positive_tiles: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.0
    focal_gamma: Annotated[Float, Field(ge=0.0)] = 0.0


@_group
class OptimConfig(_Group):
    """Adam optimiser and training length (tuning stage ``optim``).

    Attributes:
        lr: Adam learning rate, the peak of the ``onecycle`` schedule (paper: 1e-4, slow
            for a few epochs on a small data set).
        weight_decay: Adam weight decay (L2).
        batch_size: Samples per batch (paper: 68 at 512 x 512, too big for a CPU; small
            batches give short runs on a few dozen tiles more steps).
        epochs: Training epochs, DBN warm-up epochs included.
        schedule: Learning-rate schedule over all training steps: ``"constant"``,
            ``"cosine"`` (decay from ``lr`` to 0) or ``"onecycle"`` (warm up to ``lr`` over
            the first 30 % of steps, then cosine decay; fast convergence for short runs).
        grad_clip: Clip the gradients' global norm to this value (0 = no clipping).
        augment: Random flips and quarter turns of every training batch (the same for
            inputs, labels and valid mask). Landslide maps have no preferred orientation
            on a tile, and a few dozen tiles are memorized quickly without it.
    """

    GROUP: ClassVar[str] = "optim"

    lr: Annotated[Float, Field(gt=0.0)] = 3e-3
    weight_decay: Annotated[Float, Field(ge=0.0)] = 0.0
    batch_size: Positive = 4
    epochs: Positive = 10
    schedule: Schedule = "onecycle"
    grad_clip: Annotated[Float, Field(ge=0.0)] = 1.0
    augment: bool = True


@_group
class BoostConfig(_Group):
    """Per-pixel gradient boosting, the classical floor ``hgb`` (tuning stage ``boost``).

    The networks ignore this group; ``hgb`` reads only this group, ``head`` (for the eq. 8
    losses it reports) and ``optim.batch_size`` (validation batches).

    Attributes:
        learning_rate: Shrinkage of every tree's contribution.
        max_iter: Boosting iterations, i.e. trees.
        max_leaf_nodes: Leaves per tree.
        min_samples_leaf: Fewest training pixels in a leaf.
        l2_regularization: L2 penalty on the leaf values.
        max_pixels: At most this many valid training pixels are sampled, each class in
            proportion to its share (class-stratified), so the sample keeps the prior.
        windows: Sides of the square windows over which the mean and standard deviation
            of every input channel are added as pixel features (odd; ``1`` adds nothing,
            so ``[1]`` means the raw channels only); any form :func:`parse_sizes` reads.
        pos_weight: Sample weight of landslide pixels in the boosting loss (1 = none).
    """

    GROUP: ClassVar[str] = "boost"

    learning_rate: Annotated[Float, Field(gt=0.0)] = 0.1
    max_iter: Positive = 100
    max_leaf_nodes: Annotated[Int, Field(ge=2)] = 31
    min_samples_leaf: Positive = 20
    l2_regularization: Annotated[Float, Field(ge=0.0)] = 0.0
    max_pixels: Annotated[Int, Field(ge=2)] = 200_000
    windows: OddSizes = (3, 7)
    pos_weight: Annotated[Float, Field(gt=0.0)] = 1.0


@_group
class UNetConfig(_Group):
    """The U-Net baseline (model ``unet``); the other models ignore this group.

    Named ``channels`` and ``levels`` rather than width and depth, so that the bare
    names ``width`` and ``depth`` keep meaning the DCNN's.

    Attributes:
        channels: Channels of the first encoder level (the U-Net's width), doubling at
            every level below.
        levels: Stride-2 max-pooling steps of the encoder and up-sampling steps of the
            decoder (the U-Net's depth); the receptive field roughly doubles with each.
            At most 8 (inputs are padded to a multiple of ``2 ** levels``).
    """

    GROUP: ClassVar[str] = "unet"

    channels: Positive = 24
    levels: Annotated[Int, Field(ge=1, le=8)] = 3


@_group
class SegNetConfig(_Group):
    """The SegNet baseline (model ``segnet``); the other models ignore this group.

    Attributes:
        levels: Max-pooling steps of the encoder (un-pooling steps of the decoder). Four,
            the paper's, shrink a 32-px tile to 2 x 2 px at the bottleneck, where SegNet
            learned next to nothing on the synthetic scene (test F1 0.1-0.17); two gave
            0.62-0.65. Choose it so that the tile keeps at least ~8 px at the bottom.
    """

    GROUP: ClassVar[str] = "segnet"

    levels: Annotated[Int, Field(ge=1, le=6)] = 4


OutputStride = Literal[4, 8]
"""Output strides the DeepLabV3 / PSPNet backbone builds."""


@_group
class BackboneConfig(_Group):
    """DeepLabV3's and PSPNet's dilated residual backbone; the other models ignore it.

    Attributes:
        stride: Output stride, 8 (the papers') or 4. At 8 a 32-px tile is a 4 x 4 map at
            the head, and a landslide a few pixels across is one map cell or none: on the
            synthetic scene's 32-px tiles DeepLabV3 reached test F1 0.30 and PSPNet 0.40
            where the U-Net reached 0.76. At 4 the third stage dilates instead of striding
            and every dilation after it doubles (ASPP's rates too), so the field of view
            in input pixels stays the same, for about 4x the compute of the last stages.
    """

    GROUP: ClassVar[str] = "backbone"

    stride: OutputStride = 8


_GROUP_TYPES: dict[str, type[_Group]] = {
    "temporal": TemporalConfig,
    "dbn": DBNConfig,
    "dcnn": DCNNConfig,
    "head": HeadConfig,
    "optim": OptimConfig,
    "boost": BoostConfig,
    "unet": UNetConfig,
    "segnet": SegNetConfig,
    "backbone": BackboneConfig,
}


@dataclass(frozen=True)
class ModelConfig:
    """The full, immutable configuration of a model and its training run.

    Attributes:
        temporal: Temporal fusion module.
        dbn: DBN branch.
        dcnn: DCNN branch.
        head: Classifier and loss.
        optim: Optimiser and training length.
        boost: Per-pixel gradient boosting (model ``hgb`` only).
        unet: The U-Net baseline (model ``unet`` only).
        segnet: The SegNet baseline (model ``segnet`` only).
        backbone: DeepLabV3's and PSPNet's backbone (models ``deeplabv3``, ``pspnet``).
    """

    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    dbn: DBNConfig = field(default_factory=DBNConfig)
    dcnn: DCNNConfig = field(default_factory=DCNNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    boost: BoostConfig = field(default_factory=BoostConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    segnet: SegNetConfig = field(default_factory=SegNetConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)

    def __post_init__(self) -> None:
        for name, kind in _GROUP_TYPES.items():
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"expected a {kind.__name__}, got {type(getattr(self, name)).__name__}",
                    key=name,
                    hint="use ModelConfig.from_dict for plain dictionaries",
                )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The configuration as a nested plain dict (JSON- and YAML-safe: tuples become lists).

        Returns:
            ``{group: {field: value}}`` for every group and field.
        """
        return {
            group: {
                name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(getattr(self, group)).items()
            }
            for group in _GROUP_TYPES
        }

    def to_params(self) -> dict[str, Any]:
        """The configuration as flat dotted names, the inverse of :meth:`from_params`.

        Returns:
            ``{"group.field": value}`` for every field; sequences stay tuples.
        """
        return {
            f"{group}.{name}": value
            for group in _GROUP_TYPES
            for name, value in dataclasses.asdict(getattr(self, group)).items()
        }

    @classmethod
    def from_dict(cls, nested: Mapping[str, Any]) -> ModelConfig:
        """Build a configuration from a nested dict such as :meth:`to_dict` returns.

        Missing groups and fields keep their defaults, except that a ``dcnn`` group
        written before ``max_dilation`` and ``levels`` existed keeps its old layout (see
        :meth:`from_params`), so old checkpoints and exports load with their weights.

        Args:
            nested: ``{group: {field: value}}``.

        Returns:
            The configuration.

        Raises:
            ConfigError: On an unknown group or field (naming the nearest valid one) or a
                value of the wrong type or out of range.
        """
        if not isinstance(nested, Mapping):
            raise ConfigError(f"expected a mapping of groups, got {type(nested).__name__}")
        params: dict[str, Any] = {}
        for group, values in nested.items():
            if group not in _GROUP_TYPES:
                raise ConfigError(
                    f"unknown config group {group!r}",
                    key=str(group),
                    hint=_did_you_mean(str(group), list(_GROUP_TYPES)),
                )
            if not isinstance(values, Mapping):
                raise ConfigError(
                    f"expected a mapping of fields, got {type(values).__name__}", key=group
                )
            for name, value in values.items():
                params[f"{group}.{name}"] = value
        return cls.from_params(params)

    @staticmethod
    def _legacy_dcnn(dotted: dict[str, Any], base: ModelConfig) -> None:
        """Read a ``dcnn.dilation`` given without the pyramid's fields as the old layout.

        Before ``dcnn.max_dilation`` and ``dcnn.levels`` existed, ``dilation`` dilated
        every second block at full resolution. Checkpoints, exports and study files of
        that time name ``dilation`` but neither new field; they get ``max_dilation =
        dilation`` and ``levels = 0``, the layout their weights and tuning results belong
        to. Only when ``base`` has the pyramid at its defaults: a base that chose the
        pyramid's fields itself keeps them.
        """
        if "dcnn.dilation" not in dotted:
            return
        if "dcnn.max_dilation" in dotted or "dcnn.levels" in dotted:
            return
        default = DCNNConfig()
        if (base.dcnn.max_dilation, base.dcnn.levels) != (default.max_dilation, default.levels):
            return
        dotted["dcnn.max_dilation"] = dotted["dcnn.dilation"]
        dotted["dcnn.levels"] = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base: ModelConfig | None = None) -> ModelConfig:
        """Build a configuration from flat parameters, as a tuning trial suggests them.

        ``dcnn.dilation`` given without ``dcnn.max_dilation`` and ``dcnn.levels`` (a
        configuration written before they existed) selects the old full-resolution layout
        1, d, 1, d, ... (see :class:`DCNNConfig`); give either field for the pyramid.

        Args:
            params: ``{"group.field": value}``; a bare field name (``"lr"``) is accepted
                when it belongs to one group only. Values are cast to the field's type
                (``16.0`` -> ``16`` for integer fields; ``"64,32"`` or ``[64, 32]`` for
                sequences).
            base: The configuration to start from (default: all defaults).

        Returns:
            ``base`` with the given fields replaced.

        Raises:
            ConfigError: On an unknown or ambiguous name (naming the nearest valid one),
                a parameter given twice, or a value of the wrong type or out of range.
        """
        base = base if base is not None else cls()
        seen: dict[str, str] = {}
        resolved: dict[str, Any] = {}
        for key, value in params.items():
            dotted = cls._resolve(str(key))
            if dotted in seen:
                raise ConfigError(
                    f"given twice, as {seen[dotted]!r} and {key!r}", key=dotted, hint="keep one"
                )
            seen[dotted] = str(key)
            resolved[dotted] = value
        cls._legacy_dcnn(resolved, base)
        updates: dict[str, dict[str, Any]] = {group: {} for group in _GROUP_TYPES}
        for dotted, value in resolved.items():
            group, name = dotted.split(".", 1)
            updates[group][name] = value
        groups = {
            group: dataclasses.replace(getattr(base, group), **changes)
            for group, changes in updates.items()
            if changes
        }
        return dataclasses.replace(base, **groups)

    @classmethod
    def param_names(cls) -> list[str]:
        """All dotted parameter names (``"temporal.enabled"``, ...), in declaration order."""
        return [f"{g}.{n}" for g, kind in _GROUP_TYPES.items() for n in kind.field_names()]

    @classmethod
    def sequence_params(cls) -> frozenset[str]:
        """Dotted names of the fields that hold a sequence of sizes (``"dbn.hidden"``, ...).

        Their values are lists in study files and exports, and ``"64,32"`` in an Optuna
        trial (see :func:`sizes_text`); :func:`parse_sizes` reads every form.
        """
        return frozenset(
            f"{g}.{f.name}"
            for g, kind in _GROUP_TYPES.items()
            for f in dataclasses.fields(kind)  # type: ignore[arg-type]
            if isinstance(f.default, tuple)
        )

    @classmethod
    def _resolve(cls, key: str) -> str:
        """Map a dotted or bare parameter name to its dotted name."""
        dotted = cls.param_names()
        if key in dotted:
            return key
        owners = [name for name in dotted if name.split(".", 1)[1] == key]
        if len(owners) == 1:
            return owners[0]
        if len(owners) > 1:
            raise ConfigError(
                f"{key!r} is ambiguous", key=key, hint="use one of " + ", ".join(owners)
            )
        bare = [n.split(".", 1)[1] for n in dotted]
        unique = [b for b in bare if bare.count(b) == 1]
        near = _nearest(key, dotted + unique)
        hint = f"did you mean {near!r}?" if near else "see ModelConfig.param_names()"
        raise ConfigError(f"unknown parameter {key!r}", key=key, hint=hint)
