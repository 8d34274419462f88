"""Networks: TSC-Net (teacher and student share it) and its building blocks."""

from .attention import AttentionBlock, ChannelAttention, PixelAttention
from .deform_conv import ModulatedDeformConv2d, deform_conv2d, deform_conv2d_torch, resolve_backend
from .dem import DynamicEnhancementModule
from .tscnet import ENCODER_FEATURE_NAMES, FEATURE_NAMES, AdaptiveMixup, TSCNet

__all__ = [
    "AdaptiveMixup",
    "AttentionBlock",
    "ChannelAttention",
    "DynamicEnhancementModule",
    "ENCODER_FEATURE_NAMES",
    "FEATURE_NAMES",
    "ModulatedDeformConv2d",
    "PixelAttention",
    "TSCNet",
    "deform_conv2d",
    "deform_conv2d_torch",
    "resolve_backend",
]
