"""MONAI data path: datalists, paired transforms, cached simulation, datasets on real files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("astra")

from TSCDenoiseLib.training.data import presimulate_pairs, read_datalist, slice_dataset, training_loader
from TSCDenoiseLib.errors import InvalidInputError, InvalidVolumeError
from TSCDenoiseLib.core.intensity import HUWindow
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct
from TSCDenoiseLib.training.simulation import FanBeamGeometry
from TSCDenoiseLib.training.transforms import NormalizeHUd, SimulateLowDosed

SMALL_FAN = FanBeamGeometry(source_to_isocenter_mm=300.0, source_to_detector_mm=500.0, detector_bins=120,
                            detector_spacing_mm=2.0, views=180)
GEOMETRY = VolumeGeometry(spacing=(2.0, 2.0, 3.0))
OFFSET_HU = 8.0
REPO = Path(__file__).resolve().parents[3]


def head_like(shape=(6, 40, 48), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    slab = np.where((yy - y / 2) ** 2 / (0.4 * y) ** 2 + (xx - x / 2) ** 2 / (0.4 * x) ** 2 < 1, 40.0, -1000.0)
    return (slab[None] + rng.normal(0, 30, shape)).astype(np.float32)


@pytest.fixture()
def paired_datalist(tmp_path):
    entries = []
    for index in range(2):
        ndct = head_like(seed=index)
        write_ct(ndct, GEOMETRY, tmp_path / f"ndct{index}.nii.gz")
        write_ct(ndct + OFFSET_HU, GEOMETRY, tmp_path / f"ldct{index}.nii.gz")  # a known, exact pairing
        entries.append({"ndct": f"ndct{index}.nii.gz", "ldct": f"ldct{index}.nii.gz"})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    return path


def test_loader_yields_paired_patches_with_the_same_crop_and_flips(paired_datalist):
    window = HUWindow()
    entries = read_datalist(paired_datalist)["training"]
    _, loader = training_loader(entries, window, patch_size=16, samples_per_volume=4, batch_size=2)
    batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert batch["ldct"].shape == batch["ndct"].shape == (8, 1, 16, 16)
    assert batch["ldct"].dtype == torch.float32
    # ldct = ndct + 8 HU everywhere: any crop, flip or rotation applied to one key only would break this.
    difference = (batch["ldct"] - batch["ndct"]) * window.width
    inside = (batch["ndct"] > 0.01) & (batch["ndct"] < 0.99)
    torch.testing.assert_close(difference[inside], torch.full_like(difference[inside], OFFSET_HU), atol=1e-2, rtol=0)
    assert batch["ndct"].std(dim=(1, 2, 3)).min() > 0, "patches must hold image content"


def test_datalist_paths_are_resolved_and_bad_entries_are_named(tmp_path, paired_datalist):
    datalist = read_datalist(paired_datalist)
    assert Path(datalist["training"][1]["ldct"]) == paired_datalist.parent / "ldct1.nii.gz"
    assert len(datalist["validation"]) == 1

    def write(content) -> Path:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        return path

    good = {"ndct": "ndct0.nii.gz", "ldct": "ldct0.nii.gz"}
    with pytest.raises(InvalidInputError, match=r"training\[1\]: ldct file .*missing.nii.gz does not exist"):
        read_datalist(write({"training": [good, {"ndct": "ndct1.nii.gz", "ldct": "missing.nii.gz"}]}))
    with pytest.raises(InvalidInputError, match=r"validation\[0\]: unpaired entry"):
        read_datalist(write({"training": [good], "validation": [{"ndct": "ndct1.nii.gz"}]}))
    assert "ldct" not in read_datalist(write({"training": [{"ndct": "ndct1.nii.gz"}]}), require_ldct=False)["training"][0]
    with pytest.raises(InvalidInputError, match='"training" list'):
        read_datalist(write({"validation": [good]}))


def test_non_ct_and_mismatched_pairs_are_refused_naming_the_file(tmp_path):
    write_ct(head_like(), GEOMETRY, tmp_path / "ndct.nii.gz")
    write_ct((head_like() + 1000) / 4000, GEOMETRY, tmp_path / "normalized.nii.gz")  # [0, 1]-scaled, not HU
    write_ct(head_like((5, 40, 48)), GEOMETRY, tmp_path / "short.nii.gz")
    ndct = str(tmp_path / "ndct.nii.gz")
    with pytest.raises(InvalidVolumeError, match="normalized.nii.gz"):
        training_loader([{"ndct": ndct, "ldct": str(tmp_path / "normalized.nii.gz")}], patch_size=16)
    with pytest.raises(InvalidInputError, match="short.nii.gz"):
        training_loader([{"ndct": ndct, "ldct": str(tmp_path / "short.nii.gz")}], patch_size=16)


def test_presimulated_pairs_are_cached_and_reused(tmp_path):
    write_ct(head_like((2, 40, 48)), GEOMETRY, tmp_path / "ndct.nii.gz")
    entries = [{"ndct": str(tmp_path / "ndct.nii.gz")}]
    first = presimulate_pairs(entries, tmp_path / "cache", dose=0.25, seed=1, geometry=SMALL_FAN)
    cached = Path(first[0]["ldct"])
    stamp = cached.stat().st_mtime_ns
    again = presimulate_pairs(entries, tmp_path / "cache", dose=0.25, seed=1, geometry=SMALL_FAN)
    assert again == first and cached.stat().st_mtime_ns == stamp, "a cached simulation was recomputed"
    other_dose = presimulate_pairs(entries, tmp_path / "cache", dose=0.1, seed=1, geometry=SMALL_FAN)
    assert other_dose[0]["ldct"] != first[0]["ldct"]
    ldct, _ = read_ct(cached)
    ndct, _ = read_ct(tmp_path / "ndct.nii.gz")
    assert ldct.shape == ndct.shape and 1.0 < np.std(ldct - ndct) < 500.0
    assert entries == [{"ndct": str(tmp_path / "ndct.nii.gz")}], "input entries modified"


def test_simulate_low_dosed_makes_a_seeded_noisy_pair_from_ndct():
    from monai.data import MetaTensor

    slice_hu = MetaTensor(torch.from_numpy(head_like((1, 40, 48))[0].T.copy())[None], affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    before = slice_hu.clone()
    make = lambda: SimulateLowDosed(dose_range=(0.1, 0.5), geometry=SMALL_FAN).set_random_state(seed=3)
    first, second = make()({"ndct": slice_hu}), make()({"ndct": slice_hu})
    torch.testing.assert_close(first["ldct"], second["ldct"], rtol=0, atol=0)
    assert first["ldct"].shape == slice_hu.shape
    assert 1.0 < float((first["ldct"] - slice_hu).std()) < 500.0
    assert torch.equal(slice_hu, before)
    with pytest.raises(InvalidInputError, match="dose_range"):
        SimulateLowDosed(dose_range=(0.5, 0.1))


def test_normalize_inverse_round_trip_and_slice_dataset(paired_datalist):
    window = HUWindow(-1000, 2000)
    normalize = NormalizeHUd(window=window)
    data = {"ldct": torch.tensor([[-500.0, 0.0, 1500.0]]), "ndct": torch.tensor([[-1000.0, 40.0, 2000.0]])}
    original = {k: v.clone() for k, v in data.items()}
    normalized = normalize(data)
    assert float(normalized["ndct"].min()) == 0.0 and float(normalized["ndct"].max()) == 1.0
    restored = normalize.inverse(normalized)
    for key in data:
        torch.testing.assert_close(restored[key], original[key])
        torch.testing.assert_close(data[key], original[key])
    slices = slice_dataset(read_datalist(paired_datalist)["validation"], window)
    assert len(slices) == 6 and slices[0]["ldct"].shape == (1, 48, 40)


def test_bundled_sample_datalist_is_valid_and_split_without_overlap():
    datalist = read_datalist(REPO / "Resources" / "SampleData" / "datalist.json")
    assert set(datalist) == {"training", "validation", "test"}
    z_ranges = []
    for split in ("training", "validation", "test"):
        ndct, geometry = read_ct(datalist[split][0]["ndct"])
        ldct, _ = read_ct(datalist[split][0]["ldct"])
        assert ndct.shape == ldct.shape and ndct.shape[1:] == (256, 256)
        start = round(geometry.origin[2] / geometry.spacing[2])
        z_ranges.append((start, start + ndct.shape[0]))
        noise = (ldct - ndct)[ndct > -100]
        assert abs(float(noise.mean())) < 2.0 and 10.0 < float(noise.std()) < 40.0
    assert z_ranges[0][1] < z_ranges[1][0] and z_ranges[1][1] < z_ranges[2][0], f"splits touch: {z_ranges}"
