"""CT I/O on real files: DICOM series written with pydicom, NIfTI/NRRD/MHA via SimpleITK."""

import random
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from TSCDenoiseLib.errors import InvalidInputError, OutputExistsError
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct, write_dicom_series, write_new_dicom_series

ROWS, COLUMNS, SLICES = 12, 16, 5
SPACING = (0.8, 0.7, 2.5)  # x (column), y (row), z


def hu_volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=(SLICES, ROWS, COLUMNS)).astype(np.float32)


def write_series(folder: Path, volume_hu: np.ndarray, description: str = "Abdomen 1.0 B30f") -> str:
    """A real CT series: stored values = (HU + 1024) / 2 as uint16 (slope 2, intercept -1024), shuffled names."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), "1.2.826.0.1.3680043.8.498.1"
    names = [f"IM{n:03d}.dcm" for n in range(len(volume_hu))]
    random.Random(1).shuffle(names)
    for z, name in enumerate(names):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "TSC-TEST-1", "Test^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, z + 1, description
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 + z * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.PixelData = ((volume_hu[z] + 1024) / 2).astype(np.uint16).tobytes()
        ds.add_new(0x00091010, "LO", "private vendor data")
        pydicom.dcmwrite(folder / name, ds, enforce_file_format=True)
    return series_uid


@pytest.fixture()
def series(tmp_path):
    volume = (np.round(hu_volume() / 2) * 2).astype(np.float32)  # representable with slope 2
    uid = write_series(tmp_path / "series", volume)
    return tmp_path / "series", volume, uid


def test_dicom_series_reads_in_hu_sorted_by_position(series):
    folder, volume, _ = series
    array, geometry = read_ct(folder)
    assert array.dtype == np.float32 and array.shape == volume.shape
    np.testing.assert_array_equal(array, volume)
    np.testing.assert_allclose(geometry.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(geometry.origin, (-10.0, -20.0, 100.0))


def test_single_dicom_file_is_a_one_slice_volume(series):
    folder, volume, _ = series
    first = next(f for f in folder.iterdir() if pydicom.dcmread(f).InstanceNumber == 1)
    array, _ = read_ct(first)
    np.testing.assert_array_equal(array, volume[:1])


def test_two_series_in_one_folder_are_named_and_selectable(series):
    folder, volume, uid = series
    other = write_series(folder, volume[:3] + 10, description="Other recon")
    with pytest.raises(InvalidInputError) as error:
        read_ct(folder)
    assert uid in str(error.value) and other in str(error.value) and "series_uid" in str(error.value)
    array, _ = read_ct(folder, series_uid=other)
    np.testing.assert_array_equal(array, volume[:3] + 10)


def test_missing_and_non_image_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_ct(tmp_path / "nope.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no DICOM series"):
        read_ct(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="Cannot read"):
        read_ct(tmp_path / "notes.txt")


def test_colour_image_is_refused(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InvalidInputError, match="components per pixel"):
        read_ct(tmp_path / "rgb.nrrd")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_image_file_round_trip_keeps_values_dtype_and_geometry(tmp_path, suffix, dtype):
    volume = hu_volume().astype(dtype)
    before = volume.copy()
    angle = 0.3  # a rotated direction, so a dropped direction shows
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    geometry = VolumeGeometry(SPACING, (1.5, -2.0, 30.0), direction)
    path = write_ct(volume, geometry, tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(volume, before)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).dtype == dtype
    array, read_geometry = read_ct(path)
    np.testing.assert_array_equal(array, volume.astype(np.float32))
    np.testing.assert_allclose(read_geometry.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(read_geometry.origin, geometry.origin, atol=1e-5)
    np.testing.assert_allclose(read_geometry.direction, direction, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary files left behind"


def test_write_refuses_existing_unless_overwrite_and_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.nrrd"
    write_ct(hu_volume(), VolumeGeometry(), target)
    original = target.read_bytes()
    with pytest.raises(OutputExistsError):
        write_ct(hu_volume(1), VolumeGeometry(), target)
    assert target.read_bytes() == original
    write_ct(hu_volume(1), VolumeGeometry(), target, overwrite=True)
    np.testing.assert_array_equal(read_ct(target)[0], hu_volume(1))
    with pytest.raises(InvalidInputError):
        write_ct(np.zeros((2, 2, 2, 2), np.float32), VolumeGeometry(), tmp_path / "bad.nrrd")
    with pytest.raises(InvalidInputError, match=".nii"):
        write_ct(hu_volume(), VolumeGeometry(), tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]


def test_dicom_to_nifti_to_dicom_keeps_hu_geometry_and_tags_with_new_uids(series, tmp_path):
    folder, volume, source_uid = series
    source_bytes = {f.name: f.read_bytes() for f in folder.iterdir()}
    array, geometry = read_ct(folder)
    nifti = write_ct(array, geometry, tmp_path / "ct.nii.gz")
    from_nifti, nifti_geometry = read_ct(nifti)
    out = write_dicom_series(from_nifti + 0.4, folder, tmp_path / "denoised")

    written, written_geometry = read_ct(out)
    assert np.abs(written - volume).max() <= 1.0
    np.testing.assert_allclose(written_geometry.spacing, geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(written_geometry.origin, geometry.origin, atol=1e-4)
    np.testing.assert_allclose(written_geometry.direction, nifti_geometry.direction, atol=1e-6)
    datasets = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert {ds.SeriesInstanceUID for ds in datasets} != {source_uid} and len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == SLICES
    assert all(ds.PatientID == "TSC-TEST-1" and ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" for ds in datasets)
    assert all("DERIVED" in ds.ImageType and "TSCDenoise" in ds.DerivationDescription for ds in datasets)
    assert all(ds.SeriesDescription.endswith("(TSCDenoise denoised)") for ds in datasets)
    assert all(0x00091010 not in ds for ds in datasets), "private tags must not be copied"
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == source_bytes, "source series modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "denoised", "series"]


def test_dicom_writer_refuses_wrong_shape_and_non_empty_output(series, tmp_path):
    folder, volume, _ = series
    with pytest.raises(InvalidInputError, match="5 slices"):
        write_dicom_series(volume[:4], folder, tmp_path / "a")
    with pytest.raises(InvalidInputError, match="12x16"):
        write_dicom_series(np.zeros((SLICES, 8, 8), np.float32), folder, tmp_path / "b")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        write_dicom_series(volume, folder, occupied)
    assert (occupied / "keep.txt").read_text() == "precious"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "staging folder left behind"


def test_new_dicom_series_from_an_oblique_volume_reads_back_with_its_geometry(tmp_path):
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    geometry = VolumeGeometry(spacing=SPACING, origin=(-101.5, 22.25, 340.0),
                              direction=tuple((rotation @ tilt).reshape(-1)))
    volume = hu_volume(3).round()
    folder = write_new_dicom_series(volume, geometry, tmp_path / "new series")
    back, read_geometry = read_ct(folder)
    np.testing.assert_array_equal(back, volume)
    np.testing.assert_allclose(read_geometry.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(read_geometry.origin, geometry.origin, atol=1e-4)
    np.testing.assert_allclose(read_geometry.direction, geometry.direction, atol=1e-5)
    first = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert first.Modality == "CT" and first.SOPClassUID == CTImageStorage and "DERIVED" in first.ImageType
    with pytest.raises(OutputExistsError):
        write_new_dicom_series(volume, geometry, folder)
    assert [p.name for p in tmp_path.iterdir()] == ["new series"]  # no staging folder left behind
