"""Fault suite, input side: damaged or incomplete CT input is refused in one line or read correctly.

Every case is a real file damaged the way it happens in practice (a download cut short, a slice lost
while copying, a gantry tilt, a file of another series) and run through `read_ct`, `denoise_file` or
the `tscdenoise` command line. None may give a silently wrong volume: a refusal names the problem and
the fix; an accepted series keeps each slice where the scanner put it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from TSCDenoiseLib.cli import EXIT_OK, EXIT_USAGE, main
from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct
from TSCDenoiseLib.io.pipeline import denoise_file

ROWS, COLUMNS, SLICES, GAP = 12, 16, 6, 2.5
PIXEL_SPACING = (0.7, 0.8)  # row spacing (y), column spacing (x)


def ct_volume(slices: int = SLICES, seed: int = 0) -> np.ndarray:
    """Integer HU values, a different mean per slice, so a lost or moved slice shows."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(-1000, 1500, size=(slices, ROWS, COLUMNS)).astype(np.float32)
    return volume + (np.arange(slices, dtype=np.float32) * 10)[:, None, None]


def write_slice(path: Path, pixels_hu: np.ndarray, position, series_uid: str, number: int,
                orientation=(1, 0, 0, 0, 1, 0)) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "CT", "FAULTS", "Fault^Case"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77", series_uid
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, number, "Faults"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.SliceThickness = GAP
    ds.Rows, ds.Columns = pixels_hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels_hu.astype(np.int16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def write_series(folder: Path, volume: np.ndarray, positions=None) -> list[Path]:
    """One file per slice at `positions` (default: evenly spaced along z); files in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    if positions is None:
        positions = [(-10.0, -20.0, 100.0 + GAP * z) for z in range(len(volume))]
    uid = generate_uid()
    files = []
    for z, position in enumerate(positions):
        files.append(folder / f"IM{z:04d}.dcm")
        write_slice(files[-1], volume[z], position, uid, z + 1)
    return files


def positions_of(folder: Path) -> list[tuple]:
    """Each file's ImagePositionPatient, in the order of its z."""
    return sorted(tuple(float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient)
                  for f in folder.iterdir())


def refused(call, *fragments: str) -> str:
    """`call()` raises InvalidInputError whose one-line message holds every fragment (case-insensitive)."""
    with pytest.raises(InvalidInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


def cli_refuses(capsys, argv: list[str], *fragments: str) -> str:
    """The command exits 2 with one line on stderr naming every fragment."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1, err
    for fragment in fragments:
        assert fragment.lower() in err[0].lower(), err[0]
    return err[0]


@pytest.fixture
def checkpoint(tiny_net, tmp_path):
    return save_model(tiny_net, tmp_path / "tiny.pt", role="student")


# --- image files: truncated, non-finite ---------------------------------------------------------

def _image(tmp_path: Path, name: str, volume: np.ndarray, compress: bool = True) -> Path:
    path = tmp_path / name
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.8, 0.7, GAP))
    sitk.WriteImage(image, str(path), compress)
    return path


def _cut(path: Path, keep: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


@pytest.mark.parametrize("how", ["gzip stream cut", "short data, valid gzip", "uncompressed .nii cut"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, how):
    volume = ct_volume().astype(np.int16)
    if how == "gzip stream cut":
        path = _image(tmp_path, "ct.nii.gz", volume)
        _cut(path, 0.6)
    elif how == "short data, valid gzip":  # a file that was gzipped after its copy was cut short
        path = _image(tmp_path, "ct.nii.gz", volume)
        data = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(data[: len(data) * 2 // 3]))
    else:
        path = _image(tmp_path, "ct.nii", volume, compress=False)
        _cut(path, 0.7)
    refused(lambda: read_ct(path), str(path.name), "truncated")


def test_intact_nifti_still_reads_exactly(tmp_path):
    volume = ct_volume().astype(np.int16)
    for name, compress in (("ct.nii.gz", True), ("ct.nii", False)):
        array, geometry = read_ct(_image(tmp_path, name, volume, compress))
        np.testing.assert_array_equal(array, volume)
        np.testing.assert_allclose(geometry.spacing, (0.8, 0.7, GAP))


@pytest.mark.parametrize("variant", ["int16 slope 2 intercept -1024", "float32 flipped axes", "uint8 oblique",
                                     "big-endian int16", "float64", "int32 .nii"])
def test_checked_nifti_read_gives_what_simpleitk_reads(tmp_path, variant):
    """read_ct takes a plain NIfTI's voxels from its own integrity pass: values and geometry as SimpleITK's."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(1)
    data = rng.integers(0, 250, size=(COLUMNS, ROWS, SLICES))  # nibabel's (x, y, z)
    affine = np.diag([0.8, 0.7, GAP, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 30.0)
    header, name = None, "ct.nii.gz"
    if variant.startswith("int16 slope"):
        data = data.astype(np.int16)
    elif variant == "float32 flipped axes":
        data, affine = data.astype(np.float32) * 3.5 - 1000, affine @ np.diag([-1.0, 1.0, -1.0, 1.0])
    elif variant == "uint8 oblique":
        c, s = np.cos(0.3), np.sin(0.3)
        data, affine = data.astype(np.uint8), np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]]) @ affine
    elif variant == "big-endian int16":
        data, header = data.astype(np.int16), nib.Nifti1Header(endianness=">")
    elif variant == "float64":
        data = data.astype(np.float64) - 500.25
    else:
        data, name = data.astype(np.int32) * 7 - 1024, "ct.nii"
    image = nib.Nifti1Image(data, affine, header)
    if variant.startswith("int16 slope"):
        image.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / name
    nib.save(image, path)
    array, geometry = read_ct(path)
    reference = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(reference).astype(np.float32))
    assert array.dtype == np.float32 and array.shape == (SLICES, ROWS, COLUMNS)
    np.testing.assert_allclose(geometry.spacing, reference.GetSpacing())
    np.testing.assert_allclose(geometry.origin, reference.GetOrigin())
    np.testing.assert_allclose(geometry.direction, reference.GetDirection())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_an_image_file_is_refused_not_turned_into_zero(tmp_path, capsys, suffix, value):
    volume = ct_volume().astype(np.float32)
    volume[2, 3, 4] = value
    volume[4, 0, 0] = value
    path = _image(tmp_path, "ct" + suffix, volume)
    refused(lambda: read_ct(path), path.name, "2 NaN or infinite")
    out = tmp_path / "out.nii.gz"
    cli_refuses(capsys, ["denoise", str(path), str(out), "--model", str(tmp_path / "unused.pt")], "NaN")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_truncated_mha_or_nrrd_says_truncated_not_no_such_file(tmp_path, suffix):
    path = _image(tmp_path, "ct" + suffix, ct_volume().astype(np.int16), compress=False)
    _cut(path, 0.7)
    message = refused(lambda: read_ct(path), path.name, "truncated")
    assert "no such file" not in message.lower()


def test_truncated_compressed_mha_is_refused(tmp_path):
    path = _image(tmp_path, "ct.mha", ct_volume().astype(np.int16), compress=True)
    _cut(path, 0.8)
    message = refused(lambda: read_ct(path), path.name)
    assert "no such file" not in message.lower()


def test_mhd_with_a_short_raw_file_is_refused(tmp_path):
    path = _image(tmp_path, "ct.mhd", ct_volume().astype(np.int16), compress=False)
    _cut(tmp_path / "ct.raw", 0.5)
    refused(lambda: read_ct(path), "truncated")


# --- unreadable input ----------------------------------------------------------------------------

# The interpreter may live where an unprivileged user cannot read (e.g. under /root): as root, import what
# the CLI needs first, then drop to `nobody` before running it.
_UNPRIVILEGED_CLI = """
import os, pwd, sys
import SimpleITK, pydicom, torch, tqdm
from TSCDenoiseLib import cli
import TSCDenoiseLib.io.pipeline, TSCDenoiseLib.io.volumes, TSCDenoiseLib.io.dicom
import TSCDenoiseLib.core.checkpoint, TSCDenoiseLib.core.resources, TSCDenoiseLib.core.device
import TSCDenoiseLib.core.inference
if os.geteuid() == 0:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
sys.exit(cli.main(sys.argv[1:]))
"""


def _run_cli_as_unprivileged(argv: list[str]) -> subprocess.CompletedProcess:
    """The CLI in a process without the right to read what the test made unreadable."""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except (ImportError, KeyError):
            pytest.skip("root without a 'nobody' user: cannot drop the permission to read")
    environment = {**os.environ, "HOME": tempfile.gettempdir(), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", _UNPRIVILEGED_CLI, *argv], capture_output=True, text=True,
                          env=environment, timeout=120)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions (Windows ACLs are not set by chmod)")
@pytest.mark.parametrize("what", ["file", "folder", "dicom slice", "folder above"])
def test_unreadable_input_says_permission_denied_not_does_not_exist(what):
    base = Path(tempfile.mkdtemp(prefix="tsc-faults-"))
    try:
        os.chmod(base, 0o777)
        if what == "file":
            target = _image(base, "ct.nii.gz", ct_volume().astype(np.int16))
            os.chmod(target, 0)
            shown = target.name
        elif what == "folder":
            target = base / "series"
            write_series(target, ct_volume())
            os.chmod(target, 0)
            shown = "series"
        elif what == "dicom slice":
            target = base / "series"
            files = write_series(target, ct_volume())
            os.chmod(target, 0o777)
            os.chmod(files[3], 0)
            shown = files[3].name
        else:  # a folder on the way that may not be entered
            (base / "locked").mkdir()
            target = _image(base / "locked", "ct.nii.gz", ct_volume().astype(np.int16))
            os.chmod(base / "locked", 0o666)
            shown = target.name
        result = _run_cli_as_unprivileged(["denoise", str(target), str(base / "out.nii.gz"),
                                           "--model", str(base / "unused.pt")])
        err = result.stderr.strip().splitlines()
        assert result.returncode == EXIT_USAGE and len(err) == 1, result.stderr
        assert "permission" in err[0].lower() and shown in err[0] and "does not exist" not in err[0], err[0]
        assert not (base / "out.nii.gz").exists()
    finally:
        for path in [base, *base.rglob("*")]:
            os.chmod(path, 0o777)
        shutil.rmtree(base)


# --- DICOM series: damaged files -----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["pixel data cut", "header cut", "bytes overwritten", "empty file"])
def test_series_with_a_damaged_file_is_refused_naming_it(tmp_path, damage):
    files = write_series(tmp_path / "series", ct_volume())
    victim = files[2]
    raw = victim.read_bytes()
    if damage == "pixel data cut":
        victim.write_bytes(raw[:-100])
    elif damage == "header cut":
        victim.write_bytes(raw[:300])
    elif damage == "bytes overwritten":
        victim.write_bytes(raw[:132] + bytes(range(200, 256)) * 3 + raw[132 + 168:])
    else:
        victim.write_bytes(b"")
    refused(lambda: read_ct(tmp_path / "series"), victim.name, "damaged")
    victim.rename(tmp_path / victim.name)  # the fix the message names: move it out, then only the gap remains
    refused(lambda: read_ct(tmp_path / "series"), "1 slice missing")


def test_single_truncated_dicom_file_is_refused(tmp_path):
    files = write_series(tmp_path / "series", ct_volume())
    _cut(files[0], 0.8)
    refused(lambda: read_ct(files[0]), files[0].name)


def test_series_with_a_slice_of_another_size_gives_one_line(tmp_path, capsys):
    files = write_series(tmp_path / "series", ct_volume())
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    write_slice(files[3], ct_volume()[3][:10, :14], (-10.0, -20.0, 100.0 + 3 * GAP), uid, 4)
    refused(lambda: read_ct(tmp_path / "series"), files[3].name, "10x14", f"{ROWS}x{COLUMNS}")
    out = tmp_path / "out.nii.gz"
    cli_refuses(capsys, ["denoise", str(tmp_path / "series"), str(out), "--model", str(tmp_path / "x.pt")],
                files[3].name)
    assert not out.exists()


# --- DICOM series: positions ---------------------------------------------------------------------

def _irregular_series(tmp_path: Path, case: str) -> tuple[Path, np.ndarray]:
    """A series whose slices do not lie on one regular grid, and the volume it holds (slice order)."""
    volume = ct_volume()
    positions = [(-10.0, -20.0, 100.0 + GAP * z) for z in range(SLICES)]
    if case == "missing slice":
        keep = [z for z in range(SLICES) if z != 3]
        volume, positions = volume[keep], [positions[z] for z in keep]
    elif case == "non-uniform spacing":
        positions = [(-10.0, -20.0, 100.0 + z) for z in (0.0, 2.5, 5.0, 8.0, 10.5, 13.0)]
    elif case == "tilted gantry":  # 15° tilt: each slice shifted along y by GAP * tan(15°)
        shift = GAP * np.tan(np.radians(15.0))
        positions = [(-10.0, -20.0 + shift * z, 100.0 + GAP * z) for z in range(SLICES)]
    folder = tmp_path / case.replace(" ", "-")
    write_series(folder, volume, positions)
    return folder, volume


CASES = {"missing slice": ("1 slice missing", "IM0002.dcm and IM0003.dcm"),
         "non-uniform spacing": ("not evenly spaced", "IM0002.dcm and IM0003.dcm"),
         "tilted gantry": ("tilt", "15.0")}


@pytest.mark.parametrize("case", list(CASES))
def test_irregular_series_is_refused_for_an_image_output(tmp_path, case):
    folder, _ = _irregular_series(tmp_path, case)
    refused(lambda: read_ct(folder), folder.name, *CASES[case], "DICOM folder", "--resample")
    out = tmp_path / "out.nii.gz"
    refused(lambda: denoise_file(folder, out, tmp_path / "unused.pt"), *CASES[case])
    assert not out.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_irregular_series_to_a_dicom_folder_keeps_every_slice_position(tmp_path, checkpoint, capsys, case):
    folder, volume = _irregular_series(tmp_path, case)
    out = tmp_path / "denoised"
    assert main(["denoise", str(folder), str(out), "--model", str(checkpoint), "--device", "cpu"]) == EXIT_OK
    assert positions_of(out) == positions_of(folder)
    denoised = np.stack([pydicom.dcmread(f).pixel_array for f in sorted(
        out.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))])
    # slice means carry the +10 HU per slice ramp: every slice stays with its position
    np.testing.assert_allclose(denoised.mean(axis=(1, 2)), volume.mean(axis=(1, 2)), atol=60)
    assert list(np.argsort(denoised.mean(axis=(1, 2)))) == list(np.argsort(volume.mean(axis=(1, 2))))


def _linear_hu(points: np.ndarray) -> np.ndarray:
    """A CT-like image that is linear in patient space: linear interpolation reproduces it exactly."""
    return -300.0 + points @ np.array([4.0, -3.0, 6.0])


@pytest.mark.parametrize("case", ["missing slice", "non-uniform spacing", "tilted gantry"])
def test_resampling_puts_every_voxel_where_it_belongs(case):
    from TSCDenoiseLib.io.resample import resample_to_regular_grid

    angle = np.radians(10.0)
    row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, column)
    sx, sy = 0.8, 0.7
    steps = {"missing slice": [0, 1, 2, 4, 5], "non-uniform spacing": [0, 1, 2.2, 3.2, 4.2, 5.2],
             "tilted gantry": [0, 1, 2, 3, 4, 5]}[case]
    tilt = np.tan(np.radians(15.0)) * GAP * column if case == "tilted gantry" else np.zeros(3)
    origin = np.array([-10.0, -20.0, 100.0])
    positions = np.array([origin + s * GAP * normal + s * tilt for s in steps])
    rows = 40  # room for the tilt's shift (up to 5 rows) and an interior to compare
    y, x = np.mgrid[:rows, :COLUMNS]
    def plane(corner):
        return _linear_hu(corner + x[..., None] * sx * row + y[..., None] * sy * column)
    slices = np.stack([plane(p) for p in positions]).astype(np.float32)
    shuffled = np.random.default_rng(0).permutation(len(steps))  # any file order
    volume, geometry = resample_to_regular_grid(slices[shuffled], positions[shuffled], np.r_[row, column], (sx, sy), GAP)
    expected_count = int(np.floor(steps[-1] + 1e-6)) + 1
    assert volume.shape == (expected_count, rows, COLUMNS)
    np.testing.assert_allclose(geometry.spacing, (sx, sy, GAP))
    np.testing.assert_allclose(geometry.origin, origin)
    np.testing.assert_allclose(np.reshape(geometry.direction, (3, 3)), np.stack([row, column, normal], axis=1), atol=1e-12)
    margin = int(np.ceil(np.abs(tilt).max() * steps[-1] / sy)) + 1 if case == "tilted gantry" else 0
    inside = slice(margin, rows - margin)
    assert rows - 2 * margin >= 20
    for k in range(expected_count):
        truth = plane(origin + k * GAP * normal)
        np.testing.assert_allclose(volume[k][inside], truth[inside], atol=1e-3)


def test_resample_option_writes_a_regular_nifti_of_a_tilted_series(tmp_path, checkpoint, capsys):
    folder, volume = _irregular_series(tmp_path, "tilted gantry")
    out = tmp_path / "denoised.nii.gz"
    argv = ["denoise", str(folder), str(out), "--model", str(checkpoint), "--device", "cpu"]
    cli_refuses(capsys, argv, "tilt", "--resample")
    assert not out.exists()
    assert main(argv + ["--resample"]) == EXIT_OK
    assert "resampled onto a regular 2.5 mm grid" in capsys.readouterr().err
    written, geometry = read_ct(out)
    assert written.shape == volume.shape
    np.testing.assert_allclose(geometry.spacing, (0.8, 0.7, GAP), atol=1e-4)
    np.testing.assert_allclose(geometry.direction, (1, 0, 0, 0, 1, 0, 0, 0, 1), atol=1e-6)  # no tilt left
    np.testing.assert_allclose(geometry.origin, (-10.0, -20.0, 100.0), atol=1e-4)


def test_series_with_duplicate_positions_is_refused(tmp_path, capsys):
    volume = ct_volume()
    positions = [(-10.0, -20.0, 100.0 + GAP * z) for z in (0, 1, 2, 2, 3, 4)]
    folder = tmp_path / "series"
    files = write_series(folder, volume, positions)
    refused(lambda: read_ct(folder), "same position", files[2].name, files[3].name)
    cli_refuses(capsys, ["denoise", str(folder), str(tmp_path / "out"), "--model", str(tmp_path / "x.pt")],
                "same position")
    assert not (tmp_path / "out").exists()


def test_regular_oblique_series_still_reads_with_its_geometry(tmp_path):
    """Not a fault: an oblique (not tilted) series has positions along its normal and reads as before."""
    angle = np.radians(20.0)
    row, column = (1.0, 0.0, 0.0), (0.0, np.cos(angle), np.sin(angle))
    normal = np.cross(row, column)
    volume = ct_volume()
    origin = np.array([-10.0, -20.0, 100.0])
    folder = tmp_path / "oblique"
    folder.mkdir()
    uid = generate_uid()
    for z in range(SLICES):
        write_slice(folder / f"IM{z}.dcm", volume[z], origin + normal * GAP * z, uid, z + 1, (*row, *column))
    array, geometry = read_ct(folder)
    np.testing.assert_array_equal(array, volume)
    np.testing.assert_allclose(geometry.spacing, (0.8, 0.7, GAP), atol=1e-3)
    np.testing.assert_allclose(np.reshape(geometry.direction, (3, 3))[:, 2], normal, atol=1e-4)


# --- the training data path ----------------------------------------------------------------------

def test_training_data_refuses_nan_and_truncated_nifti(tmp_path):
    pytest.importorskip("monai")
    from TSCDenoiseLib.training.data import slice_dataset, training_loader

    good = ct_volume().astype(np.float32)
    bad = good.copy()
    bad[1, 1, 1] = np.nan
    geometry = VolumeGeometry(spacing=(0.8, 0.7, GAP))
    write_ct(good, geometry, tmp_path / "good.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(bad), str(tmp_path / "nan.nii.gz"))
    write_ct(good.astype(np.int16), geometry, tmp_path / "cut.nii.gz")
    _cut(tmp_path / "cut.nii.gz", 0.6)
    for name, fragment in (("nan.nii.gz", "NaN"), ("cut.nii.gz", "truncated")):
        entry = {"ndct": str(tmp_path / "good.nii.gz"), "ldct": str(tmp_path / name)}
        with pytest.raises(InvalidInputError, match=fragment):
            training_loader([entry], patch_size=8, samples_per_volume=1, batch_size=1)
        with pytest.raises(InvalidInputError, match=fragment):
            slice_dataset([entry])


def test_notes_and_a_dicomdir_beside_a_series_are_not_taken_for_damage(tmp_path):
    """Not a fault: files that are not images (notes, a DICOMDIR) beside the slices leave the series as it is."""
    volume = ct_volume()
    folder = tmp_path / "series"
    write_series(folder, volume)
    (folder / "README.txt").write_text("exported from PACS\n")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory (DICOMDIR)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    directory = Dataset()
    directory.file_meta = meta
    directory.FileSetID = "FAULTS"
    pydicom.dcmwrite(folder / "DICOMDIR", directory, enforce_file_format=True)
    array, _ = read_ct(folder)
    np.testing.assert_array_equal(array, volume)


def test_an_rt_structure_set_beside_a_series_is_not_taken_for_damage(tmp_path):
    """Not a fault: radiotherapy folders hold an RTSTRUCT (no pixel data) beside the CT slices. Its SOP class
    (1.2.840.10008.5.1.4.1.1.481.3) starts with the MR image class's characters, which once read as an image."""
    volume = ct_volume()
    folder = tmp_path / "series"
    write_series(folder, volume)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    structures = Dataset()
    structures.file_meta = meta
    structures.SOPClassUID = meta.MediaStorageSOPClassUID
    structures.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    structures.Modality = "RTSTRUCT"
    pydicom.dcmwrite(folder / "RS_structures.dcm", structures, enforce_file_format=True)
    array, _ = read_ct(folder)
    np.testing.assert_array_equal(array, volume)


def test_series_of_files_without_a_preamble_still_reads(tmp_path):
    """Not a fault: files without the 128-byte preamble and meta header (old exports) that GDCM reads are fine."""
    volume = ct_volume()
    folder = tmp_path / "series"
    for file in write_series(folder, volume):
        dataset = pydicom.dcmread(file)
        dataset.preamble = None
        del dataset.file_meta
        pydicom.dcmwrite(file, dataset, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert file.read_bytes()[128:132] != b"DICM"
    array, _ = read_ct(folder)
    np.testing.assert_array_equal(array, volume)
