"""What an adaptation did: its settings, time, the safeguard's verdict, as a log line and as metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional


@dataclass
class AdaptationReport:
    """The outcome of `adapt_model`; `summary()` is the one line for logs, `as_metadata()` goes in checkpoints."""

    used: str  # "adapted" or "original": the model returned
    strategy: str
    steps: int
    seconds: float
    training_seconds: float
    budget_s: float
    seed: int
    settings: Dict[str, Any]
    held_out_tiles: int
    original_risk: Optional[float] = None  # held-out SURE: estimated squared error vs the clean scan, HU^2
    adapted_risk: Optional[float] = None
    standard_error: Optional[float] = None
    original_rmse_hu: Optional[float] = None  # sqrt of the risks
    adapted_rmse_hu: Optional[float] = None
    gain_db: Optional[float] = None
    conservative_gain: Optional[float] = None  # risk decrease (HU^2) with 0.8 of the estimated noise variance
    conservative_standard_error: Optional[float] = None  # of that decrease, HU^2
    stronger_noise_gain: Optional[float] = None  # risk decrease (HU^2) with 1.45 x the estimated noise variance
    stronger_noise_standard_error: Optional[float] = None  # of that decrease, HU^2
    real_noise_gain: Optional[float] = None  # risk decrease (HU^2) with the divergence of real-noise probes
    real_noise_standard_error: Optional[float] = None  # of that decrease, HU^2
    noise_std_hu: Optional[float] = None  # the scan's median noise std, as the noise model measured it
    noise_rois: int = 0
    strength: float = 1.0  # the noise-map strength it was trained and judged at (the final pass's)
    reason: str = ""
    verdict: str = ""  # the safeguard's choice ("adapted" or "original"), even when the caller turned it off
    extra: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what the held-out criterion gained and which model is used."""
        at = f", at strength {self.strength:.2f}" if self.strength != 1.0 else ""
        head = f"Adaptation ({self.strategy}, {self.steps} steps{at}, {self.seconds:.0f} s of {self.budget_s:.0f} s)"
        if self.original_rmse_hu is None or self.adapted_rmse_hu is None:
            return f"{head}: {self.reason or 'not scored'}; using the original model."
        verdict = "using the adapted model" if self.used == "adapted" else "keeping the original model"
        why = f" ({self.reason})" if self.reason else ""
        return (f"{head}: held-out error {self.original_rmse_hu:.1f} -> {self.adapted_rmse_hu:.1f} HU "
                f"({self.gain_db:+.2f} dB, estimated without reference); {verdict}{why}.")

    def as_metadata(self) -> Dict[str, Any]:
        """The report as plain values (what `torch.load(weights_only=True)` reads back)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
