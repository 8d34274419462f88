"""Image-quality report: texture figures that tell over-smoothing apart, and the files it writes."""

import json
import struct
import sys

import numpy as np
import pytest

pytest.importorskip("monai")  # SSIM
pytest.importorskip("scipy")  # edge gradient ratio

from TSCDenoiseLib.errors import InvalidInputError, OutputExistsError  # noqa: E402
from TSCDenoiseLib.evaluation.report import (  # noqa: E402
    FILES,
    REFERENCE_NAME,
    MissingDependencyError,
    evaluate_methods,
    write_report,
)

SPACING = (0.8, 0.8, 2.0)  # (x, y, z) mm
LDCT_STD, NDCT_STD = 25.0, 5.0
ROI_SIZE = 24


def disc_phantom(shape=(4, 96, 96)) -> np.ndarray:
    """Water disc in air with a bone and a fat insert in its upper half (HU); its lower half is flat."""
    rows, columns = np.mgrid[0:shape[1], 0:shape[2]]
    centre = (shape[1] - 1) / 2
    image = np.full(shape[1:], -1000.0, np.float32)
    image[np.hypot(rows - centre, columns - centre) <= 44] = 40.0
    image[np.hypot(rows - 24, columns - 34) <= 7] = 700.0
    image[np.hypot(rows - 24, columns - 62) <= 7] = -100.0
    return np.repeat(image[None], shape[0], axis=0)


@pytest.fixture(scope="module")
def volumes():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    clean = disc_phantom()
    reference = clean + rng.normal(0, NDCT_STD, clean.shape).astype(np.float32)
    low_dose = clean + rng.normal(0, LDCT_STD, clean.shape).astype(np.float32)
    blurred = gaussian_filter(low_dose, sigma=(0, 1.5, 1.5))
    return reference, {"LDCT input": low_dose, "blurred": blurred}


@pytest.fixture(scope="module")
def report(volumes):
    reference, methods = volumes
    return evaluate_methods(reference, methods, SPACING, seconds={"blurred": 0.5}, roi_size=ROI_SIZE)


def high_band(report: dict, curve: list) -> float:
    """Mean of a radial NPS over the upper 40 % of frequencies up to the Nyquist frequency."""
    frequencies = np.asarray(report["nps"]["frequencies"])
    return float(np.mean(np.asarray(curve)[frequencies >= 0.6 * frequencies[-1]]))


def test_over_smoothing_shows_as_coarser_noise_lost_texture_and_blurred_edges(report):
    low, blurred = report["methods"]["LDCT input"], report["methods"]["blurred"]
    assert blurred["nps_mean_frequency"] < 0.7 * low["nps_mean_frequency"]
    assert blurred["noise_std_hu"] < 0.5 * low["noise_std_hu"]
    assert blurred["edge_ratio"] < 0.9 < low["edge_ratio"]
    image = report["nps"]["image"]
    assert high_band(report, image["blurred"]) < 0.2 * high_band(report, image[REFERENCE_NAME])
    assert high_band(report, image["LDCT input"]) > 5 * high_band(report, image[REFERENCE_NAME])
    assert blurred["texture_mean_frequency"] < report["reference"]["texture_mean_frequency"]
    assert blurred["seconds"] == 0.5 and "seconds" not in low


def test_white_noise_nps_has_the_noise_variance_and_its_flat_level(report):
    low = report["methods"]["LDCT input"]
    variance = LDCT_STD**2 + NDCT_STD**2  # image - reference holds both noises
    assert low["nps_variance_hu2"] == pytest.approx(low["noise_std_hu"] ** 2, rel=0.03)
    assert low["noise_std_hu"] ** 2 == pytest.approx(variance, rel=0.1)
    # white noise: NPS = variance x pixel area at every frequency
    level = np.median(report["nps"]["noise"]["LDCT input"][1:])
    assert level == pytest.approx(variance * SPACING[0] * SPACING[1], rel=0.15)
    assert abs(low["bias_hu"]) < 2.0


def test_rois_are_flat_and_the_reference_row_has_texture_only(report, volumes):
    reference, _ = volumes
    assert report["rois"] and all(roi["size"] == ROI_SIZE for roi in report["rois"])
    for roi in report["rois"]:
        patch = reference[roi["z"], roi["y"]:roi["y"] + ROI_SIZE, roi["x"]:roi["x"] + ROI_SIZE]
        assert abs(patch.mean() - 40.0) < 3.0 and patch.std() < 2 * NDCT_STD
    assert set(report["nps"]["image"]) == {REFERENCE_NAME, "LDCT input", "blurred"}
    assert set(report["nps"]["noise"]) == {"LDCT input", "blurred"}
    assert "psnr_db" not in report["reference"] and report["reference"]["texture_std_hu"] > 0
    assert report["slice"] in {roi["z"] for roi in report["rois"]}


def png_size(path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_write_report_writes_figures_table_and_round_tripping_json(report, volumes, tmp_path):
    reference, methods = volumes
    paths = write_report(report, reference, methods, tmp_path / "report")
    assert {path.name for path in (tmp_path / "report").iterdir()} == set(FILES.values())
    for kind in ("panel", "differences", "nps", "rois"):
        width, height = png_size(paths[kind])
        assert 300 < width <= 1600 and 200 < height <= 1600 and paths[kind].stat().st_size < 1_000_000
    assert json.loads(paths["metrics"].read_text()) == report
    markdown = paths["markdown"].read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == [REFERENCE_NAME, "LDCT input", "blurred"]
    for name in FILES.values():
        if name.endswith(".png"):
            assert f"]({name})" in markdown


def test_write_report_refuses_to_overwrite_before_writing_anything(report, volumes, tmp_path):
    reference, methods = volumes
    (tmp_path / "nps.png").write_bytes(b"kept")
    with pytest.raises(OutputExistsError, match="exists"):
        write_report(report, reference, methods, tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["nps.png"]
    write_report(report, reference, methods, tmp_path, overwrite=True)
    assert (tmp_path / "nps.png").read_bytes() != b"kept"


def test_mismatched_volumes_are_named(report, volumes, tmp_path):
    reference, methods = volumes
    with pytest.raises(InvalidInputError, match="'blurred' has shape"):
        evaluate_methods(reference, {**methods, "blurred": methods["blurred"][:2]}, SPACING)
    with pytest.raises(InvalidInputError, match="not the ones the report was computed for"):
        write_report(report, reference, {"LDCT input": methods["LDCT input"]}, tmp_path)
    with pytest.raises(InvalidInputError, match="no flat soft-tissue square"):
        evaluate_methods(np.full((2, 16, 16), 500.0, np.float32), {"x": np.zeros((2, 16, 16))}, SPACING, roi_size=8)


def test_missing_matplotlib_names_the_install_command(report, volumes, tmp_path, monkeypatch):
    reference, methods = volumes
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install matplotlib"):
        write_report(report, reference, methods, tmp_path)
    assert not any(tmp_path.iterdir())
