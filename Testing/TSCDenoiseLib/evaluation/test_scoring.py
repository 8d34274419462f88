"""Classical baseline, evaluation report, and the file-to-file pipeline, on the bundled sample data."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai")

from TSCDenoiseLib.evaluation.baselines import anisotropic_diffusion, tune_anisotropic_diffusion  # noqa: E402
from TSCDenoiseLib.errors import InvalidInputError  # noqa: E402
from TSCDenoiseLib.evaluation.scoring import LOW_DOSE_LABEL, evaluate_models, score  # noqa: E402
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct  # noqa: E402
from TSCDenoiseLib.core.metrics import psnr, rmse  # noqa: E402

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[3] / "Resources" / "SampleData"
DATALIST = SAMPLE_DATA_DIR / "datalist.json"


def noisy_water(seed: int = 0):
    rng = np.random.default_rng(seed)
    clean = np.zeros((4, 48, 48), np.float32)
    clean[:, 12:36, 12:36] = 60.0  # a soft-tissue square in water
    return clean + rng.normal(0, 20, clean.shape).astype(np.float32), clean


def test_anisotropic_diffusion_lowers_noise_and_keeps_the_input():
    noisy, clean = noisy_water()
    before = noisy.copy()
    smoothed = anisotropic_diffusion(noisy, (1.0, 1.0, 2.0), conductance=1.0, iterations=5)
    assert np.array_equal(noisy, before)
    assert rmse(smoothed, clean) < 0.6 * rmse(noisy, clean)


def test_tuning_picks_the_best_psnr_setting_of_its_grid():
    noisy, clean = noisy_water()
    tuned = tune_anisotropic_diffusion([(noisy, clean, (1.0, 1.0, 2.0))], conductances=(0.5, 2.0), iterations=(1, 10))
    best = max(tuned["grid"], key=lambda row: row["psnr_db"])
    assert (tuned["conductance"], tuned["iterations"]) == (best["conductance"], best["iterations"])
    assert len(tuned["grid"]) == 4


def test_score_of_the_reference_itself_is_perfect():
    _, clean = noisy_water()
    figures = score(clean, clean)
    assert figures["rmse_hu"] == 0 and figures["ssim"] == pytest.approx(1.0) and figures["bias_hu"] == 0


def test_score_with_spacing_adds_noise_texture_and_edge_figures():
    clean = np.zeros((2, 64, 64), np.float32)
    clean[:, :, :16] = -1000.0  # air beside water: an edge, and room for a flat 32-pixel ROI
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape).astype(np.float32)
    figures = score(noisy, clean, (1.0, 1.0, 2.0))
    assert 0.2 < figures["nps_mean_frequency"] < 0.33  # white noise: flat NPS up to 0.5 cycles/mm
    assert figures["edge_ratio"] == pytest.approx(1.0, abs=0.1)
    perfect = score(clean, clean, (1.0, 1.0, 2.0))
    assert perfect["nps_peak_frequency"] is None and perfect["edge_ratio"] == pytest.approx(1.0)


def test_evaluation_scores_input_filter_and_model_and_writes_reports(tmp_path, tiny_net):
    from TSCDenoiseLib.core.checkpoint import save_model

    model = save_model(tiny_net, tmp_path / "tiny.pt")
    report = evaluate_models(DATALIST, {"tiny": model}, conductances=(1.0,), iterations=(2,),
                             output_dir=tmp_path / "eval", device="cpu")
    assert list(report["results"]) == [LOW_DOSE_LABEL, "anisotropic diffusion", "tiny"]
    low, _ = read_ct(SAMPLE_DATA_DIR / "cranium" / "ldct_test.nii.gz")
    high, _ = read_ct(SAMPLE_DATA_DIR / "cranium" / "ndct_test.nii.gz")
    assert report["results"][LOW_DOSE_LABEL]["psnr_db"] == pytest.approx(psnr(low, high), abs=1e-3)
    assert report["slices"] == low.shape[0]
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["results"] == report["results"]
    table = (tmp_path / "eval" / "evaluation.md").read_text()
    assert table.count("\n| ") == 5 and "| tiny |" in table  # header, rule, 3 methods
    with pytest.raises(Exception, match="exists"):
        evaluate_models(DATALIST, {}, classical=False, output_dir=tmp_path / "eval")


def test_evaluation_names_a_missing_split(tmp_path):
    with pytest.raises(InvalidInputError, match="no 'holdout' split"):
        evaluate_models(DATALIST, {}, split="holdout")


def test_denoise_file_writes_a_new_file_and_keeps_the_input(tmp_path, tiny_net):
    from TSCDenoiseLib.core.checkpoint import save_model
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.io.pipeline import denoise_file

    noisy, _ = noisy_water()
    source = write_ct(noisy, VolumeGeometry(spacing=(0.8, 0.8, 2.0)), tmp_path / "in.nii.gz")
    before = source.read_bytes()
    model = save_model(tiny_net, tmp_path / "tiny.pt")
    output = denoise_file(source, tmp_path / "out.nrrd", model, device="cpu")
    result, geometry = read_ct(output)
    np.testing.assert_allclose(result, denoise_volume(noisy, tiny_net, device="cpu"), atol=1e-4)
    assert geometry.spacing == pytest.approx((0.8, 0.8, 2.0)) and source.read_bytes() == before
    with pytest.raises(InvalidInputError, match="exists already"):
        denoise_file(source, output, model, device="cpu")
    with pytest.raises(InvalidInputError, match="is the input"):
        denoise_file(source, source, model, device="cpu", overwrite=True)
