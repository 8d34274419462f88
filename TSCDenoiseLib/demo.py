"""The demo: denoise the bundled low-dose sample with the default model and score it against NDCT."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np



def _scores(image: np.ndarray, reference: np.ndarray, flat: np.ndarray) -> dict:
    from .core.metrics import noise_std, psnr, rmse

    body = reference > -900
    return {
        "rmse_hu_in_body": round(rmse(image, reference, body), 2),
        "psnr_db_soft_tissue_window": round(psnr(image, reference), 2),
        "noise_std_hu_flat_tissue": round(noise_std(image, reference, flat), 2),
    }


def run_demo(output: str | Path, model_path: str | Path | None = None, device: str = "auto",
             slab_size: int | str = "auto", overwrite: bool = False, progress=None) -> dict:
    """Denoise the sample's test slab, write it to ``output`` and return timings and scores."""
    from .core.atomic import check_output
    from .core.checkpoint import load_model
    from .core.resources import default_model_path
    from .core.inference import denoise_volume
    from .io import read_ct, write_ct
    from .core.metrics import flat_soft_tissue_mask
    from .core.resources import SAMPLE_NORMAL_DOSE_FILE, sample_path
    from .noise.strength import choose_strength

    sample_ldct, sample_ndct = sample_path(), sample_path(SAMPLE_NORMAL_DOSE_FILE)
    output = check_output(output, overwrite, kind="file")
    ldct, geometry = read_ct(sample_ldct)
    ndct, _ = read_ct(sample_ndct)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model = load_model(model_path, device=device)
    started = time.perf_counter()
    choice = choose_strength(ldct, model)  # what denoise_volume's default, "auto", runs at
    denoised = denoise_volume(ldct, model, slab_size=slab_size, device=device, progress=progress,
                              strength=choice.strength)
    seconds = time.perf_counter() - started
    write_ct(denoised, geometry, output, overwrite=overwrite)
    flat = flat_soft_tissue_mask(ndct)
    return {
        "input": str(sample_ldct),
        "output": str(output),
        "model": str(model_path),
        "recipe": model.checkpoint_metadata.get("recipe", ""),
        "strength": choice.strength,
        "strength_reason": choice.reason,
        "slices": int(ldct.shape[0]),
        "seconds": round(seconds, 2),
        "slices_per_second": round(ldct.shape[0] / seconds, 2),
        "low_dose_input": _scores(ldct, ndct, flat),
        "denoised": _scores(denoised, ndct, flat),
    }
