"""Fault suite, output side (issue 16): overwrite, full disk, interrupts, one clear line, one error path.

Every case is a real fault on real files: real folders of the user's files, a real full filesystem (a small
tmpfs when run as root) or a real file-size limit (RLIMIT_FSIZE), real signals to a real child process.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from TSCDenoiseLib.cli import EXIT_OK, EXIT_USAGE, main
from TSCDenoiseLib.core.checkpoint import load_model, save_model
from TSCDenoiseLib.errors import CheckpointError, InvalidInputError, OutputExistsError, TSCDenoiseError
from TSCDenoiseLib.io import write_ct, write_dicom_series, write_new_dicom_series

from .conftest import REPO, ct_volume, geometry, one_line, run_cli

pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes: what must survive a refused overwrite."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def denoise(*args, checkpoint) -> list:
    return ["denoise", *map(str, args), "--model", str(checkpoint), "--device", "cpu"]


def error_line(capsys, command: str) -> str:
    return one_line(capsys.readouterr().err).removeprefix(f"tscdenoise {command}: ")


def leftovers(folder: Path) -> list:
    """Hidden staging files or folders (".name.XXXX...") left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- 1. --overwrite never deletes what the program did not write -----------------------------------------

@pytest.fixture
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "patient"
    (folder / "notes").mkdir(parents=True)
    (folder / "report.docx").write_bytes(b"the user's report")
    (folder / "notes" / "todo.txt").write_text("keep me")
    return folder


def test_overwrite_refuses_a_folder_of_the_users_files(user_folder, nifti, checkpoint, capsys):
    before = snapshot(user_folder)
    assert main(denoise(nifti, user_folder, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    assert "not written by TSCDenoise" in error_line(capsys, "denoise")
    assert snapshot(user_folder) == before


def test_overwrite_refuses_the_folder_that_holds_the_input(tmp_path, checkpoint, capsys):
    study = tmp_path / "study"
    series = write_new_dicom_series(ct_volume(), geometry(), study / "series1")
    before = snapshot(study)
    assert main(denoise(series, study, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    assert "holds the input" in error_line(capsys, "denoise")
    assert main(denoise(series, series, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    assert "is the input" in error_line(capsys, "denoise")
    assert snapshot(study) == before


def test_overwrite_refuses_a_folder_holding_an_input_file(nifti, checkpoint, capsys):
    folder = nifti.parent
    (folder / "other.txt").write_text("sibling")
    before = snapshot(folder)
    assert main(denoise(nifti, folder, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    assert "holds the input" in error_line(capsys, "denoise")
    assert snapshot(folder) == before


@pytest.mark.parametrize("name", ["", "."])
def test_empty_or_dot_output_is_refused(name, tmp_path, nifti, checkpoint, capsys, monkeypatch):
    (tmp_path / "keep.txt").write_text("cwd file")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(denoise(nifti, name, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    error_line(capsys, "denoise")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_programs_own_dicom_output(tmp_path, nifti, checkpoint, capsys):
    out = tmp_path / "denoised"
    assert main(denoise(nifti, out, checkpoint=checkpoint)) == EXIT_OK
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(denoise(nifti, out, checkpoint=checkpoint)) == EXIT_USAGE
    assert "--overwrite" in error_line(capsys, "denoise")
    assert main(denoise(nifti, out, "--overwrite", checkpoint=checkpoint)) == EXIT_OK
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert second.keys() == first.keys() and second != first  # new UIDs: really rewritten
    assert leftovers(tmp_path) == []


def test_overwrite_refuses_a_dicom_series_the_program_did_not_write(tmp_path, nifti, checkpoint, capsys):
    import pydicom

    theirs = write_new_dicom_series(ct_volume(), geometry(), tmp_path / "scanner_series")
    for file in theirs.iterdir():  # as a scanner wrote it: no TSCDenoise derivation
        dataset = pydicom.dcmread(file)
        del dataset.DerivationDescription
        dataset.save_as(file)
    before = snapshot(theirs)
    assert main(denoise(nifti, theirs, "--overwrite", checkpoint=checkpoint)) == EXIT_USAGE
    assert snapshot(theirs) == before


def test_api_writers_refuse_to_replace_a_users_folder(user_folder, tmp_path):
    before = snapshot(user_folder)
    with pytest.raises(OutputExistsError):
        write_new_dicom_series(ct_volume(), geometry(), user_folder, overwrite=True)
    series = write_new_dicom_series(ct_volume(), geometry(), tmp_path / "series")
    with pytest.raises(OutputExistsError):
        write_dicom_series(ct_volume(), series, user_folder, overwrite=True)
    with pytest.raises(InvalidInputError, match="is the input"):
        write_dicom_series(ct_volume(), series, series, overwrite=True)
    (user_folder / "scan.nii.gz").mkdir()
    with pytest.raises(OutputExistsError, match="folder"):
        write_ct(ct_volume(), geometry(), user_folder / "scan.nii.gz", overwrite=True)
    assert snapshot(user_folder) == before


def test_evaluate_and_export_refuse_to_replace_a_users_folder(user_folder, nifti, checkpoint, capsys):
    before = snapshot(user_folder)
    argv = ["evaluate", "--reference", str(nifti), "--input", str(nifti), "--out", str(user_folder), "--overwrite"]
    assert main(argv) == EXIT_USAGE
    error_line(capsys, "evaluate")
    assert main(["export", str(user_folder), "--model", str(checkpoint), "--format", "torch_export",
                 "--overwrite"]) == EXIT_USAGE
    error_line(capsys, "export")
    assert snapshot(user_folder) == before


def test_simulate_refuses_to_replace_a_users_folder(user_folder, nifti, capsys):
    before = snapshot(user_folder)
    assert main(["simulate", str(nifti), str(user_folder), "--overwrite"]) == EXIT_USAGE
    error_line(capsys, "simulate")
    assert snapshot(user_folder) == before


# --- 2. a full disk or short write is exit 1, one line, no file ------------------------------------------

FULL_DISK_OUTPUTS = ["out.nii.gz", "out.nii", "out.nrrd", "out.mha", "out_dicom"]


@pytest.mark.parametrize("name", FULL_DISK_OUTPUTS)
def test_denoise_onto_a_full_disk_fails_and_leaves_nothing(name, small_disk, tmp_path, checkpoint, capfd):
    source = write_ct(ct_volume((8, 48, 48)), geometry(), tmp_path / "in.nii.gz")
    assert main(denoise(source, small_disk / name, checkpoint=checkpoint)) == 1
    err = capfd.readouterr().err
    assert "No space left" in one_line(err)
    assert "Exception thrown" not in err and "frame #" not in err and len(err.splitlines()) < 8, err  # no C++ pages
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_simulate_onto_a_full_disk_fails_and_leaves_nothing(small_disk, tmp_path, capfd):
    pytest.importorskip("astra")
    source = write_ct(ct_volume((1, 64, 64)), geometry((1.0, 1.0, 2.0)), tmp_path / "ndct.nii.gz")
    assert main(["simulate", str(source), str(small_disk / "ldct.nii")]) == 1  # 16 KiB: more than is free
    assert "No space left" in one_line(capfd.readouterr().err)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_evaluate_report_onto_a_full_disk_leaves_no_partial_folder(small_disk, tmp_path, capfd):
    pytest.importorskip("matplotlib")
    pytest.importorskip("monai")
    reference = write_ct(ct_volume((2, 96, 96), seed=1), geometry(), tmp_path / "ndct.nii.gz")
    low = write_ct(ct_volume((2, 96, 96), seed=2), geometry(), tmp_path / "ldct.nii.gz")
    code = main(["evaluate", "--reference", str(reference), "--input", str(low), "--out", str(small_disk / "report")])
    assert code == 1
    assert "No space left" in one_line(capfd.readouterr().err)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.slow
def test_export_onto_a_full_disk_is_one_line(small_disk, checkpoint):
    """torch.jit.save aborted the process here (every format is written by the same in-memory path now)."""
    done = run_cli("export", small_disk / "model.ts", "--model", checkpoint, "--format", "torchscript")
    assert done.returncode == 1, done.stderr
    assert "No space left" in one_line(done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_save_model_onto_a_full_disk_raises_and_leaves_nothing(small_disk, tiny_net):
    with pytest.raises(TSCDenoiseError, match="No space left"):
        save_model(tiny_net, small_disk / "model.pt")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd", "out_dicom"])
def test_a_short_write_under_a_file_size_limit_is_exit_1_and_no_file(name, tmp_path, checkpoint):
    """RLIMIT_FSIZE: a real short write that needs no root (every file beyond 12 KiB is cut)."""
    source = write_ct(ct_volume((4, 96, 96)), geometry(), tmp_path / "in.nii")
    out = tmp_path / "out"
    out.mkdir()
    limit = ("import resource, signal, runpy, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (12288, 12288)); sys.argv = ['tscdenoise'] + sys.argv[1:]; "
             "runpy.run_module('TSCDenoiseLib', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", limit, *denoise(source, out / name, checkpoint=checkpoint)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr
    assert "tscdenoise denoise: failed" in one_line(done.stderr)
    assert list(out.iterdir()) == []


# --- 3. interrupts clean up and say so in one line -----------------------------------------------------

def _start(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "TSCDenoiseLib", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(condition, process, seconds=240.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("name, shape", [("series", (64, 48, 48)), ("out.nii.gz", (64, 160, 160))])
def test_sigterm_while_writing_cleans_up_and_exits_143(name, shape, tmp_path, checkpoint):
    """The signal lands while the staged output (a hidden folder or file beside the target) is being written."""
    source = write_ct(ct_volume(shape), geometry(), tmp_path / "in.nii")
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    process = _start(denoise(source, out_parent / name, "--slab-size", "64", checkpoint=checkpoint), tmp_path)
    staged = _wait_for(lambda: any(p.name.startswith(f".{name}.") for p in out_parent.iterdir()), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert staged, f"the write never started: {err}"
    assert process.returncode == 143, err
    assert "interrupted" in one_line(err)
    assert list(out_parent.iterdir()) == []


class _Terminated(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_signal_right_after_the_staging_path_is_made_leaves_nothing(kind, tmp_path, monkeypatch):
    """The race behind a hidden leftover seen once in CI: SIGTERM delivered the instant the staging file or
    folder exists (the subprocess tests send it when they see the file appear), before its name is recorded."""
    import tempfile

    from TSCDenoiseLib.core import atomic

    def raise_terminated(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    make = tempfile.mkstemp if kind == "file" else tempfile.mkdtemp

    def make_then_signal(*args, **kwargs):
        made = make(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    monkeypatch.setattr(tempfile, make.__name__, make_then_signal)
    try:
        writer = (atomic.atomic_output_file(tmp_path / "out.nii.gz", suffix=".tmp.nii.gz") if kind == "file"
                  else atomic.atomic_output_folder(tmp_path / "series"))
        with pytest.raises(_Terminated):
            with writer:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_sigint_during_denoise_is_one_line_and_exit_130(tmp_path, checkpoint):
    source = write_ct(ct_volume((64, 96, 96)), geometry(), tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    process = _start(denoise(source, out, "--slab-size", "1", checkpoint=checkpoint), tmp_path)
    seen = []  # the line before the denoise starts (the progress bar itself has no newline)
    _wait_for(lambda: seen.append(process.stderr.readline()) or "slab size" in seen[-1], process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    err = "".join(seen) + err
    assert process.returncode == 130, err
    assert "interrupted" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not out.exists()


def test_sigterm_during_simulate_is_one_line_and_exit_143(tmp_path):
    pytest.importorskip("astra")
    source = write_ct(ct_volume((6, 48, 48)), geometry((1.0, 1.0, 2.0)), tmp_path / "ndct.nii.gz")
    process = _start(["simulate", source, tmp_path / "ldct.nii.gz"], tmp_path)
    seen = []
    _wait_for(lambda: seen.append(process.stderr.readline()) or "simulating" in seen[-1], process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, "".join(seen) + err
    assert "interrupted" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ndct.nii.gz"]


# --- 4. one clear line instead of a traceback -----------------------------------------------------------

def _edited_checkpoint(path: Path, **changes) -> Path:
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key == "config":
            payload["config"] = {**payload["config"], **value}
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("window", ["abc", 5, [3000.0, -1000.0], [float("nan"), 1.0], [1.0, 2.0, 3.0]])
def test_malformed_hu_window_in_a_checkpoint_is_a_checkpoint_error(window, checkpoint, nifti, tmp_path, capsys):
    path = _edited_checkpoint(checkpoint, hu_window=window)
    with pytest.raises(CheckpointError, match="HU window"):
        load_model(path, device="cpu")
    assert main(denoise(nifti, tmp_path / "o.nii.gz", checkpoint=path)) == 1
    assert "HU window" in error_line(capsys, "denoise")


@pytest.mark.parametrize("config", [{"base_channels": 100000}, {"base_channels": -8}, {"base_channels": "8"},
                                    {"num_dems": 10**6}])
def test_absurd_network_config_is_refused_before_allocating(config, checkpoint):
    path = _edited_checkpoint(checkpoint, config=config)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="config"):
        load_model(path, device="cpu")
    assert time.perf_counter() - started < 20  # a 100000-channel network would take minutes and ~100 GB


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--i0", "nan"], ["--i0", "-5"], ["--dose", "nan"],
                                    ["--i0", "inf"]])
def test_simulate_rejects_impossible_numbers_in_one_line(option, nifti, tmp_path, capsys):
    assert main(["simulate", str(nifti), str(tmp_path / "o.nii.gz"), *option]) == EXIT_USAGE
    assert option[0] in error_line(capsys, "simulate")


def test_a_device_that_does_not_exist_is_one_line(nifti, tmp_path, checkpoint, capsys):
    from TSCDenoiseLib.core.device import resolve_device
    from TSCDenoiseLib.errors import DeviceError

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps")
    argv = ["denoise", str(nifti), str(tmp_path / "o.nii.gz"), "--model", str(checkpoint), "--device", "mps"]
    assert main(argv) == EXIT_USAGE
    assert "MPS" in error_line(capsys, "denoise")


@pytest.mark.parametrize("unreadable", ["input", "model"])
def test_an_unreadable_file_is_not_reported_as_missing(unreadable, nifti, tmp_path, checkpoint):
    prefix = []
    if IS_ROOT:  # root reads any file: drop the capabilities that let it (a real permission check follows)
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv cannot drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search"]
    os.chmod(nifti if unreadable == "input" else checkpoint, 0)
    done = subprocess.run([*prefix, sys.executable, "-m", "TSCDenoiseLib",
                           *denoise(nifti, tmp_path / "o.nii.gz", checkpoint=checkpoint)],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = one_line(done.stderr)
    assert done.returncode in (1, 2) and "does not exist" not in line and "permission denied" in line, line


def test_a_model_folder_is_not_reported_as_missing(nifti, tmp_path, checkpoint, capsys):
    (tmp_path / "models").mkdir()
    assert main(denoise(nifti, tmp_path / "o.nii.gz", checkpoint=tmp_path / "models")) == 1
    line = error_line(capsys, "denoise")
    assert "does not exist" not in line and "folder" in line


def test_hu_range_refusal_names_a_cli_option_that_exists(tmp_path, checkpoint, capsys):
    stored = write_ct(ct_volume() + 1200.0, geometry(), tmp_path / "stored_values.nii.gz")  # stored values, no rescale
    out = tmp_path / "o.nii.gz"
    assert main(denoise(stored, out, checkpoint=checkpoint)) == EXIT_USAGE
    line = error_line(capsys, "denoise")
    assert "--no-check-hu" in line
    assert main(denoise(stored, out, "--no-check-hu", checkpoint=checkpoint)) == EXIT_OK
    assert out.is_file()


def _refused_before_any_work(capsys, argv) -> str:
    """The output problem is found before the model is even read (the model path does not exist)."""
    assert main(argv + ["--model", "/no/such/model.pt", "--device", "cpu"]) == EXIT_USAGE
    line = error_line(capsys, argv[0])
    assert "model.pt" not in line, line
    return line


def test_overwrite_onto_a_plain_file_when_a_folder_is_wanted_is_refused_up_front(nifti, tmp_path, capsys):
    plain = tmp_path / "denoised"
    plain.write_bytes(b"a file, not a folder")
    line = _refused_before_any_work(capsys, ["denoise", str(nifti), str(plain), "--overwrite"])
    assert "file" in line
    assert plain.read_bytes() == b"a file, not a folder"


def test_overwrite_onto_a_folder_when_a_file_is_wanted_is_refused_up_front(nifti, tmp_path, capsys):
    (tmp_path / "out.nii.gz").mkdir()
    line = _refused_before_any_work(capsys, ["denoise", str(nifti), str(tmp_path / "out.nii.gz"), "--overwrite"])
    assert "folder" in line


def test_an_unwritable_output_folder_is_found_up_front(nifti, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    if IS_ROOT:  # root ignores permission bits: a read-only filesystem is the real thing
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs")
    else:
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = _refused_before_any_work(capsys, ["denoise", str(nifti), str(locked / "o.nii.gz")])
        assert "writ" in line
    finally:
        if IS_ROOT:
            subprocess.run(["umount", str(locked)], capture_output=True)
        else:
            locked.chmod(stat.S_IRWXU)


def test_a_teacher_checkpoint_used_as_denoiser_is_named(tiny_net, nifti, tmp_path, capsys):
    teacher = save_model(tiny_net, tmp_path / "teacher.pt", role="teacher")
    assert main(denoise(nifti, tmp_path / "o.nii.gz", checkpoint=teacher)) == EXIT_OK
    assert "teacher checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("change", [{"spacing": (0.5, 0.5, 2.0)}, {"origin": (0.0, 0.0, 0.0)}])
def test_evaluate_refuses_reference_and_input_on_different_grids(change, tmp_path, capsys):
    reference = write_ct(ct_volume(seed=1), geometry(), tmp_path / "ndct.nii.gz")
    low = write_ct(ct_volume(seed=2), geometry(**change), tmp_path / "ldct.nii.gz")
    assert main(["evaluate", "--reference", str(reference), "--input", str(low)]) == EXIT_USAGE
    assert next(iter(change)) in error_line(capsys, "evaluate")


def test_big_endian_input_is_denoised_like_native(tiny_net):
    from TSCDenoiseLib.core.inference import denoise_volume

    volume = ct_volume()
    expected = denoise_volume(volume, tiny_net, device="cpu")
    swapped = volume.astype(">f4")
    np.testing.assert_allclose(denoise_volume(swapped, tiny_net, device="cpu"), expected, atol=1e-4)
    assert swapped.dtype == np.dtype(">f4")  # the input is untouched


@pytest.mark.parametrize("bad", [lambda v: v.astype(np.longdouble)])
def test_longdouble_input_is_a_clear_error(bad, tiny_net):
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.errors import InvalidVolumeError

    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(InvalidVolumeError, match="float32"):
        denoise_volume(bad(ct_volume()), tiny_net, device="cpu")


@pytest.mark.parametrize("model", [None, "student.pt", Path("student.pt"), {"state_dict": {}}])
def test_denoise_volume_says_what_a_model_is(model):
    from TSCDenoiseLib.core.inference import denoise_volume

    with pytest.raises(InvalidInputError, match="load_model"):
        denoise_volume(ct_volume(), model, device="cpu")


# --- 5. one error path ------------------------------------------------------------------------------------

def _exception_classes():
    """(module, class name) of every exception class defined in TSCDenoiseLib's source."""
    package = REPO / "TSCDenoiseLib"
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")).endswith(("Error", "Exception", "Cancelled",
                                                                             "Interrupt", "Interrupted", "Memory"))
                    for base in node.bases):
                found.append((path.relative_to(package).as_posix(), node.name))
    return found


def test_every_exception_class_lives_in_errors_and_is_exported():
    import TSCDenoiseLib

    classes = _exception_classes()
    assert classes and all(module == "errors.py" for module, _ in classes), classes
    assert {name for _, name in classes} <= set(TSCDenoiseLib.__all__)


def test_one_function_maps_exceptions_to_exit_codes():
    from TSCDenoiseLib import errors

    assert errors.exit_code(errors.InvalidInputError("x")) == 2
    assert errors.exit_code(errors.OutputExistsError("x")) == 2
    assert errors.exit_code(errors.CheckpointError("x")) == 1
    assert errors.exit_code(OSError(28, "No space left on device")) == 1
    assert errors.exit_code(KeyboardInterrupt()) == 130
    assert errors.exit_code(errors.Interrupted(signal.SIGTERM)) == 143
    assert errors.exit_code(errors.DenoiseCancelled("x")) == 130
    for code, kind in ((2, errors.InvalidInputError), (143, errors.DenoiseCancelled), (-15, errors.DenoiseCancelled),
                       (1, errors.TSCDenoiseError), (-9, errors.TSCDenoiseError)):
        assert type(errors.exception_for_exit_code(code, "m")) is kind, code
    for module in ("cli.py", "mrml/worker.py", "mrml/background.py"):
        source = (REPO / "TSCDenoiseLib" / module).read_text()
        assert "exit_code" in source or "exception_for_exit_code" in source, module
        assert "EXIT_OK, EXIT_FAILURE, EXIT_USAGE = " not in source, module  # no second copy of the codes


def test_a_cancelled_background_run_raises_denoise_cancelled(tmp_path):
    from TSCDenoiseLib.errors import DenoiseCancelled
    from TSCDenoiseLib.mrml.background import DenoiseProcess

    process = DenoiseProcess(ct_volume(), python_executable=[sys.executable, "-c", "import time; time.sleep(60)"],
                             work_dir=tmp_path).start()
    try:
        time.sleep(0.2)
        process.cancel()
        with pytest.raises(DenoiseCancelled):
            process.result()
    finally:
        process.cleanup()


def test_the_output_exists_check_is_one_helper():
    package = REPO / "TSCDenoiseLib"
    repeats = [path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if path.name != "atomic.py" and ("exists already" in path.read_text()
                                                or "exists and is not empty" in path.read_text())]
    assert repeats == []


@pytest.mark.parametrize("module, extra, call", [
    ("astra", "data", "from TSCDenoiseLib.training.simulation import _import_astra as f; f()"),
    ("matplotlib", "report", "from TSCDenoiseLib.evaluation.report import _figure_class as f; f()"),
    ("onnx", "export", "from TSCDenoiseLib.core.export import _require_onnx as f; f()"),
    ("torchvision", "fast", "import torch; from TSCDenoiseLib.networks.deform_conv import resolve_backend as r; "
                            "r('torchvision', torch.device('cpu'))"),
])
def test_a_missing_optional_dependency_names_the_extra(module, extra, call):
    blocked = f"import sys; sys.modules[{module!r}] = None; {call}"  # importing it now raises ImportError
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode != 0
    assert "MissingDependencyError" in done.stderr and f"TSCDenoise[{extra}]" in done.stderr, done.stderr


def test_an_unexpected_exception_is_one_line_not_a_traceback(nifti, tmp_path, checkpoint):
    """A bug still reaches the user as one line (and a hint how to see the traceback)."""
    hook = tmp_path / "sitecustomize.py"  # a real failure inside the engine: the writer breaks
    hook.write_text("import SimpleITK\n"
                    "def broken(*a, **k):\n    raise ValueError('boom inside the writer')\n"
                    "SimpleITK.WriteImage = broken\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = run_cli(*denoise(nifti, tmp_path / "o.nii.gz", checkpoint=checkpoint), env=env)
    assert done.returncode == 1
    assert "boom inside the writer" in one_line(done.stderr)
    assert not (tmp_path / "o.nii.gz").exists()
