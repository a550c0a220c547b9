"""Compact baselines, in plain torch: the paper's comparison and a U-Net."""

from networks.baselines.deeplabv3 import DeepLabV3
from networks.baselines.pspnet import PSPNet
from networks.baselines.segnet import SegNet
from networks.baselines.unet import UNet

__all__ = ["DeepLabV3", "PSPNet", "SegNet", "UNet"]
