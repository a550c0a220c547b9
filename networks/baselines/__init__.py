"""Compact baselines from the paper's comparison, in plain torch."""

from networks.baselines.deeplabv3 import DeepLabV3
from networks.baselines.pspnet import PSPNet
from networks.baselines.segnet import SegNet

__all__ = ["DeepLabV3", "PSPNet", "SegNet"]
