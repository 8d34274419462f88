"""Networks: TSC-Net (teacher and student share it), its building blocks, and the RED-CNN baseline."""

from .attention import AttentionBlock, ChannelAttention, PixelAttention
from .deform_conv import ModulatedDeformConv2d, deform_conv2d, deform_conv2d_torch, resolve_backend
from .dem import DynamicEnhancementModule
from .redcnn import REDCNN
from .tscnet import ENCODER_FEATURE_NAMES, FEATURE_NAMES, AdaptiveMixup, TSCNet

__all__ = [
    "AdaptiveMixup",
    "AttentionBlock",
    "ChannelAttention",
    "DynamicEnhancementModule",
    "ENCODER_FEATURE_NAMES",
    "FEATURE_NAMES",
    "ModulatedDeformConv2d",
    "NETWORKS",
    "PixelAttention",
    "REDCNN",
    "TSCNet",
    "deform_conv2d",
    "deform_conv2d_torch",
    "resolve_backend",
]


NETWORKS = {"TSCNet": TSCNet, "REDCNN": REDCNN}  # checkpoint "network" name -> class
