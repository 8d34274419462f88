"""Adapt to this scan: self-supervised fine-tuning of a copy of the denoiser on the user's own CT.

numpy and torch only (it runs in Slicer's worker process). `adapt_model` is the entry point; the noise
model, the pairs, the loop, the safeguard and the report are one module each.
"""

from .adapt import adapt_model
from .files import adapt_file
from .finetune import TrainSettings
from .metadata import adaptation_metadata, save_adapted_model
from .report import AdaptationReport

__all__ = ["adapt_model", "adapt_file", "AdaptationReport", "TrainSettings", "adaptation_metadata", "save_adapted_model"]
