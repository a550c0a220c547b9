"""The paper's fusion network, its baselines and the per-pixel gradient-boosting floor.

Everything a caller needs is re-exported here: configs, ``build_model``, ``train``,
losses, metrics and checkpoints. Models take ``(B, S, T, H, W)`` float cubes and return
``(B, 2, H, W)`` logits over {background, landslide}.
"""

from networks.base import CubeModel
from networks.baselines import DeepLabV3, PSPNet, SegNet, UNet
from networks.boosting import BoostingModel
from networks.checkpoint import Checkpoint, load_checkpoint, package_versions, save_checkpoint
from networks.config import (
    BackboneConfig,
    BoostConfig,
    DBNConfig,
    DCNNConfig,
    HeadConfig,
    ModelConfig,
    OptimConfig,
    SegNetConfig,
    TemporalConfig,
    UNetConfig,
)
from networks.dbn import DBN, RBM
from networks.dcnn import DCNN
from networks.ensemble import SeedEnsemble
from networks.errors import CheckpointError, ConfigError, NetworksError, TrainingError
from networks.fusion import FusionNet
from networks.history import METRIC_NAMES, History
from networks.losses import FusionLoss, fusion_loss
from networks.metrics import SegmentationMeter, roc_auc, segmentation_metrics
from networks.receptive import ReceptiveField, receptive_field
from networks.registry import BASELINE_GROUPS, MODEL_NAMES, NETWORK_NAMES, build_model
from networks.temporal import TemporalFusion
from networks.train import Callback, evaluate, model_device, train

__all__ = [
    "BASELINE_GROUPS",
    "BackboneConfig",
    "DBN",
    "DCNN",
    "METRIC_NAMES",
    "MODEL_NAMES",
    "NETWORK_NAMES",
    "RBM",
    "BoostConfig",
    "BoostingModel",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "CubeModel",
    "DBNConfig",
    "DCNNConfig",
    "DeepLabV3",
    "FusionLoss",
    "FusionNet",
    "HeadConfig",
    "History",
    "ModelConfig",
    "NetworksError",
    "OptimConfig",
    "PSPNet",
    "ReceptiveField",
    "SeedEnsemble",
    "SegNet",
    "SegNetConfig",
    "SegmentationMeter",
    "TemporalConfig",
    "TemporalFusion",
    "TrainingError",
    "UNet",
    "UNetConfig",
    "build_model",
    "evaluate",
    "fusion_loss",
    "load_checkpoint",
    "model_device",
    "package_versions",
    "receptive_field",
    "roc_auc",
    "save_checkpoint",
    "segmentation_metrics",
    "train",
]
