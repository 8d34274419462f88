"""The scan's own noise, measured from the scan alone: its texture and amplitude (`scan_model`), and the
denoising strength that texture calls for (`strength`). numpy and torch only (it runs in Slicer's worker)."""

from .scan_model import NoiseTexture, ScanNoiseModel, estimate_noise_model, estimate_noise_texture
from .strength import StrengthChoice, choose_strength

__all__ = ["NoiseTexture", "ScanNoiseModel", "StrengthChoice", "choose_strength", "estimate_noise_model",
           "estimate_noise_texture"]
