"""Faults of the training bundle: resume never loses the log, a resumed student keeps its teacher, a failed
start writes nothing, and every bad input is one line naming the file and the bundle key.

Real bundle runs (``monai.bundle.run`` in-process, and the ``python -m monai.bundle`` command line for the
one-line output) on the bundled sample data and tiny NIfTI files.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai")

from TSCDenoiseLib.core.checkpoint import read_checkpoint  # noqa: E402
from TSCDenoiseLib.errors import TSCDenoiseError  # noqa: E402
from TSCDenoiseLib.training.bundle import file_sha256, user_error  # noqa: E402

from .conftest import BUNDLE, CONFIGS, train  # noqa: E402

pytestmark = pytest.mark.slow


def refused(output_dir: Path, **overrides) -> TSCDenoiseError:
    """The user error a bundle run stops with (MONAI wraps it; the command line prints it as one line)."""
    with pytest.raises(Exception) as caught:
        train(output_dir, **overrides)
    error = user_error(caught.value)
    assert error is not None, f"not a one-line user error: {caught.value!r}"
    return error


def iterations(log: Path) -> list:
    return [r["iteration"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """Teacher then student, one epoch each: the run later tests resume."""
    out = tmp_path_factory.mktemp("run")
    train(out)
    return out


def test_resume_appends_to_the_stage_log_and_a_bad_resume_path_leaves_it_alone(finished_run, tmp_path):
    run = tmp_path / "run"
    for name in ("teacher.pt", "model.pt", "student_log.jsonl"):
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes((finished_run / name).read_bytes())
    log = run / "student_log.jsonl"
    before = log.read_bytes()
    state = next((finished_run / "student_state").glob("*final_iteration=2.pt"))
    error = refused(run, stage="student", resume=str(state.with_name("mistyped.pt")),
                    teacher_checkpoint=str(run / "teacher.pt"), student_epochs=2)
    assert "mistyped.pt" in str(error) and "'resume'" in str(error)
    assert log.read_bytes() == before  # the mistyped path touched nothing
    train(run, stage="student", resume=str(state), teacher_checkpoint=str(run / "teacher.pt"), student_epochs=2)
    assert iterations(log) == [1, 2, 3, 4]  # epoch 1 kept, epoch 2 appended
    assert log.read_bytes().startswith(before)


def test_a_resumed_student_keeps_the_teacher_its_run_trained_against(finished_run, tmp_path):
    teacher = finished_run / "teacher.pt"
    student = read_checkpoint(finished_run / "model.pt")["metadata"]
    assert student["teacher"] == "teacher.pt" and student["teacher_sha256"] == file_sha256(teacher)
    state = next((finished_run / "student_state").glob("*final_iteration=2.pt"))
    # Without --teacher_checkpoint the student stage alone would take models/teacher.pt: refused.
    error = refused(tmp_path / "default_teacher", stage="student", resume=str(state), student_epochs=2)
    assert str(teacher) in str(error) and "teacher_checkpoint" in str(error)
    assert not (tmp_path / "default_teacher").exists()
    train(tmp_path / "same_teacher", stage="student", resume=str(state), teacher_checkpoint=str(teacher),
          student_epochs=2)
    assert iterations(tmp_path / "same_teacher" / "student_log.jsonl") == [3, 4]
    # A teacher state cannot resume the student stage.
    teacher_state = next((finished_run / "teacher_state").glob("*final_iteration=2.pt"))
    error = refused(tmp_path / "wrong_stage", stage="student", resume=str(teacher_state),
                    teacher_checkpoint=str(teacher))
    assert "teacher stage" in str(error) and "'stage'" in str(error)


def write_datalist(folder: Path, entries: dict) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps(entries))
    return path


def nifti(folder: Path, name: str, shape=(4, 24, 24)) -> str:
    from TSCDenoiseLib.io import VolumeGeometry, write_ct

    volume = np.random.default_rng(0).normal(40, 20, shape).astype(np.float32)
    return write_ct(volume, VolumeGeometry(spacing=(0.7, 0.7, 3.0)), folder / name).name


@pytest.mark.parametrize("case", ["malformed", "no_training_key", "missing_file", "empty_training", "no_ldct",
                                  "shape_mismatch"])
def test_a_bad_datalist_is_one_error_naming_the_file_and_writes_nothing(tmp_path, case):
    good = {"ndct": nifti(tmp_path, "ndct.nii.gz"), "ldct": nifti(tmp_path, "ldct.nii.gz")}
    datalists = {
        "no_training_key": {"validation": [good]},
        "missing_file": {"training": [{**good, "ldct": "absent.nii.gz"}], "validation": [good]},
        "empty_training": {"training": [], "validation": [good]},
        "no_ldct": {"training": [{"ndct": good["ndct"]}], "validation": [good]},
        "shape_mismatch": {"training": [{**good, "ldct": nifti(tmp_path, "small.nii.gz", (4, 24, 20))}],
                           "validation": [good]},
    }
    if case == "malformed":
        datalist = tmp_path / "datalist.json"
        datalist.write_text('{"training": [')
    else:
        datalist = write_datalist(tmp_path, datalists[case])
    error = refused(tmp_path / "out", datalist=str(datalist))
    expected_file = {"missing_file": "absent.nii.gz", "shape_mismatch": "small.nii.gz"}.get(case, "datalist.json")
    assert expected_file in str(error), error
    assert case == "shape_mismatch" or "'datalist'" in str(error)
    assert not (tmp_path / "out").exists()  # no empty TensorBoard or state folders


def test_a_bad_resume_file_or_checkpoint_is_refused_before_anything_is_written(finished_run, tmp_path):
    for resume, expected in ((finished_run / "model.pt", "lacks"), (finished_run / "student_log.jsonl", "not a PyTorch")):
        error = refused(tmp_path / "out", stage="teacher", resume=str(resume))
        assert str(resume) in str(error) and expected in str(error) and "'resume'" in str(error)
    error = refused(tmp_path / "out", stage="student", teacher_checkpoint=str(tmp_path / "absent.pt"))
    assert "absent.pt" in str(error) and "'teacher_checkpoint'" in str(error)
    for stage in ("student", "both"):  # a two-stage run checks the student's warm start before training the teacher
        error = refused(tmp_path / "out", stage=stage, student_init=str(tmp_path / "absent.pt"))
        assert "'student_init'" in str(error)
    assert not (tmp_path / "out").exists()


def test_the_command_line_prints_one_line_instead_of_a_traceback(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"training": [')
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
               "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path / "out"), "--datalist", str(datalist)]
    result = subprocess.run(command, cwd=BUNDLE, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(datalist) in errors[0] and "'datalist'" in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
