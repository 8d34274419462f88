"""The tscdenoise command line: exit codes, JSON output, the demo on the bundled sample."""

import json

import numpy as np

import pytest

from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.cli import EXIT_OK, EXIT_USAGE, main

pytest.importorskip("SimpleITK")


def test_info_json_names_the_deformable_convolution_backend(capsys):
    assert main(["info", "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["dcn_backend"]["cpu"] in ("torch", "torchvision")
    assert "default_model" in info


def test_demo_denoises_the_sample_and_refuses_to_overwrite(tmp_path, tiny_net, capsys):
    from TSCDenoiseLib.io import read_ct

    model = save_model(tiny_net, tmp_path / "tiny.pt", role="student")
    out = tmp_path / "denoised.nii.gz"
    assert main(["demo", "--model", str(model), "--out", str(out), "--json", "--slab-size", "6"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    denoised, _ = read_ct(out)
    assert denoised.shape == (result["slices"], 256, 256)
    assert set(result["denoised"]) == set(result["low_dose_input"])
    assert result["low_dose_input"]["noise_std_hu_flat_tissue"] > 5.0
    assert result["strength"] == 1.0 and result["strength_reason"] == "the model has no noise-map input"
    written = out.read_bytes()
    assert main(["demo", "--model", str(model), "--out", str(out)]) == EXIT_USAGE
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == written


@pytest.mark.parametrize("argv", [["demo", "--slab-size", "zero"], ["demo", "--model", "/no/such/model.pt"]])
def test_bad_arguments_give_one_line_and_a_non_zero_exit(argv, tmp_path, capsys):
    code = main(argv + ["--out", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1 and err.startswith("tscdenoise demo:")
    assert not (tmp_path / "x.nii.gz").exists()


# --- denoise / simulate / export on real files from the sample data ------------------------------

@pytest.fixture
def tiny_checkpoint(tiny_net, tmp_path):
    return save_model(tiny_net, tmp_path / "tiny.pt", role="student")


@pytest.fixture
def sample_ldct():
    from TSCDenoiseLib.io import read_ct
    from TSCDenoiseLib.core.resources import sample_path

    path = sample_path()
    volume, geometry = read_ct(path)
    return path, volume, geometry


def _one_error_line(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tscdenoise {command}:"), err
    return err[0]


def test_denoise_nifti_to_dicom_and_dicom_to_nifti(tmp_path, tiny_net, tiny_checkpoint, sample_ldct, capsys):
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.io import read_ct

    path, volume, geometry = sample_ldct
    expected = denoise_volume(volume, tiny_net, device="cpu")
    dicom = tmp_path / "denoised_dicom"
    assert main(["denoise", str(path), str(dicom), "--model", str(tiny_checkpoint), "--device", "cpu", "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "dicom" and result["slices"] == volume.shape[0] and result["slices_per_second"] > 0
    assert {"read_s", "denoise_s", "write_s"} <= set(result)
    from_dicom, dicom_geometry = read_ct(dicom)
    assert len(list(dicom.glob("*.dcm"))) == volume.shape[0]
    assert np.abs(from_dicom - expected).max() <= 0.5 + 1e-3  # int16 DICOM pixels: rounding only
    np.testing.assert_allclose(dicom_geometry.origin, geometry.origin, atol=1e-3)
    np.testing.assert_allclose(dicom_geometry.spacing, geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(dicom_geometry.direction, geometry.direction, atol=1e-6)

    nifti = tmp_path / "again.nii.gz"
    assert main(["denoise", str(dicom), str(nifti), "--model", str(tiny_checkpoint), "--device", "cpu"]) == EXIT_OK
    out = capsys.readouterr()
    assert "slices/s" in out.out and "device cpu" in out.err and "slab size" in out.err
    twice, _ = read_ct(nifti)
    np.testing.assert_allclose(twice, denoise_volume(from_dicom, tiny_net, device="cpu"), atol=1e-3)


def test_denoise_refuses_to_overwrite_unless_asked(tmp_path, tiny_checkpoint, sample_ldct, capsys):
    path = sample_ldct[0]
    out = tmp_path / "out.nrrd"
    out.write_bytes(b"precious")
    argv = ["denoise", str(path), str(out), "--model", str(tiny_checkpoint), "--device", "cpu", "--slab-size", "9"]
    assert main(argv) == EXIT_USAGE
    assert "--overwrite" in _one_error_line(capsys, "denoise")
    assert out.read_bytes() == b"precious"
    assert main(argv + ["--overwrite"]) == EXIT_OK
    assert out.read_bytes() != b"precious"


@pytest.mark.parametrize("make_args, fragment", [
    (lambda tmp, src: [str(src), str(tmp / "out.png")], "output format"),
    (lambda tmp, src: [str(tmp / "missing.nii.gz"), str(tmp / "out.nii.gz")], "does not exist"),
    (lambda tmp, src: [str(src), str(src)], "is the input"),
    (lambda tmp, src: [str(tmp / "broken.nii.gz"), str(tmp / "out.nii.gz")], "Cannot read"),
    (lambda tmp, src: [str(src), str(tmp / "out.nii.gz"), "--slab-size", "0"], "--slab-size"),
])
def test_bad_files_and_arguments_exit_2_with_one_line(tmp_path, tiny_checkpoint, sample_ldct, capsys, make_args, fragment):
    (tmp_path / "broken.nii.gz").write_text("this is not an image")
    argv = ["denoise", *make_args(tmp_path, sample_ldct[0]), "--model", str(tiny_checkpoint), "--device", "cpu"]
    assert main(argv) == EXIT_USAGE
    assert fragment in _one_error_line(capsys, "denoise")
    assert not (tmp_path / "out.nii.gz").exists()


def test_usage_errors_and_help_exit_like_argparse(capsys):
    assert main(["denoise"]) == EXIT_USAGE  # missing INPUT OUTPUT
    assert "required" in capsys.readouterr().err
    assert main(["denoise", "--help"]) == EXIT_OK
    assert "DICOM" in capsys.readouterr().out
    assert main(["evaluate", "--input", "x.nii.gz"]) == EXIT_USAGE  # --reference missing


def test_simulate_adds_seeded_noise(tmp_path, capsys, sample_ldct):
    from TSCDenoiseLib.io import read_ct, write_ct
    from TSCDenoiseLib.core.resources import SAMPLE_NORMAL_DOSE_FILE, sample_path

    ndct, geometry = read_ct(sample_path(SAMPLE_NORMAL_DOSE_FILE))
    small = write_ct(ndct[:2], geometry, tmp_path / "ndct.nii.gz")
    outputs = []
    for name in ("a.nii.gz", "b.nii.gz"):
        assert main(["simulate", str(small), str(tmp_path / name), "--dose", "0.25", "--seed", "7", "--json"]) == EXIT_OK
        outputs.append(read_ct(tmp_path / name)[0])
        assert json.loads(capsys.readouterr().out)["added_noise_std_hu"] > 5
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert (outputs[0] - ndct[:2]).std() > 5
    assert main(["simulate", str(small), str(tmp_path / "c.nii.gz"), "--dose", "1.5"]) == EXIT_USAGE
    assert "dose fraction" in _one_error_line(capsys, "simulate")


@pytest.mark.slow
@pytest.mark.parametrize("fmt, suffix", [("torch_export", ".pt2"), ("torchscript", ".ts")])
def test_export_writes_a_file_that_reproduces_the_checkpoint(tmp_path, tiny_checkpoint, capsys, fmt, suffix):
    out = tmp_path / f"model{suffix}"
    assert main(["export", str(out), "--model", str(tiny_checkpoint), "--format", fmt, "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and result["bytes"] == out.stat().st_size
    assert result["max_abs_difference"] < 1e-4
    assert main(["export", str(out), "--model", str(tiny_checkpoint), "--format", fmt]) == EXIT_USAGE
    assert "exists" in _one_error_line(capsys, "export")


def test_evaluate_writes_a_report_for_the_input_a_model_and_the_baseline(tmp_path, tiny_checkpoint, capsys):
    from TSCDenoiseLib.io import read_ct, write_ct
    from TSCDenoiseLib.core.resources import SAMPLE_NORMAL_DOSE_FILE, sample_path

    # four slices of the sample's test pair keep the test quick
    low, geometry = read_ct(sample_path())
    high, _ = read_ct(sample_path(SAMPLE_NORMAL_DOSE_FILE))
    ldct = write_ct(low[:4], geometry, tmp_path / "ldct.nii.gz")
    ndct = write_ct(high[:4], geometry, tmp_path / "ndct.nii.gz")
    out = tmp_path / "report"
    argv = ["evaluate", "--reference", str(ndct), "--input", str(ldct), "--model", str(tiny_checkpoint),
            "--baselines", "--out", str(out), "--device", "cpu", "--json"]
    assert main(argv) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    methods = result["report"]["methods"]
    assert list(methods) == ["LDCT input", "model tiny", "anisotropic diffusion"]
    assert methods["anisotropic diffusion"]["noise_std_hu"] < methods["LDCT input"]["noise_std_hu"]
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "panel.png", "differences.png", "nps.png", "rois.png"}
    assert json.loads((out / "metrics.json").read_text())["methods"].keys() == methods.keys()
    assert main(argv) == EXIT_USAGE  # the report exists
    assert "--overwrite" in _one_error_line(capsys, "evaluate")
    assert main(argv + ["--overwrite"]) == EXIT_OK
    capsys.readouterr()
    assert main(["evaluate", "--reference", str(ndct), "--input", str(sample_path())]) == EXIT_USAGE
    assert "same scan" in _one_error_line(capsys, "evaluate")


def test_adapt_writes_a_checkpoint_that_says_what_it_was_adapted_on(tmp_path, tiny_checkpoint, sample_ldct, capsys):
    from TSCDenoiseLib.core.checkpoint import load_model

    path, volume, _ = sample_ldct
    out = tmp_path / "adapted.pt"
    argv = ["adapt", str(path), "--out", str(out), "--model", str(tiny_checkpoint), "--seconds", "60", "--steps", "3",
            "--device", "cpu", "--json"]
    assert main(argv) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["output"] == str(out) and result["adaptation"]["used"] in ("adapted", "original")
    assert result["adaptation"]["steps"] == 3
    assert result["adaptation"]["seconds"] > 0  # the budget itself is tested on the engine, without file I/O
    entry = load_model(out, device="cpu").checkpoint_metadata["adaptation"]
    assert entry["adapted"] is True and entry["source_model"] == "tiny.pt"
    assert entry["scan"]["name"] == path.name and entry["scan"]["shape"] == list(volume.shape)
    before = out.read_bytes()
    assert main(argv) == EXIT_USAGE
    assert "exists" in _one_error_line(capsys, "adapt")
    assert out.read_bytes() == before


def test_denoise_with_adapt_saves_the_model_used(tmp_path, tiny_checkpoint, sample_ldct, capsys):
    from TSCDenoiseLib.core.checkpoint import load_model
    from TSCDenoiseLib.io import read_ct

    path, volume, _ = sample_ldct
    out, saved = tmp_path / "denoised.nii.gz", tmp_path / "used.pt"
    assert main(["denoise", str(path), str(out), "--model", str(tiny_checkpoint), "--adapt", "--adapt-seconds", "4",
                 "--save-adapted", str(saved), "--device", "cpu", "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # the log line (what the held-out criterion gained, which model) on a line of its own, not after the bar
    assert any(line.startswith("Adaptation (r2r") for line in captured.err.replace("\r", "\n").splitlines())
    # How many steps fit in 4 s depends on the machine's load (none when it is starved); the door is under test
    assert result["adaptation"]["steps"] >= 0 and result["saved_adapted"] == str(saved)
    assert read_ct(out)[0].shape == volume.shape
    used = load_model(saved, device="cpu")
    assert used.checkpoint_metadata["adaptation"]["report"]["used"] == result["adaptation"]["used"]


@pytest.mark.parametrize("extra, fragment", [
    (["--save-adapted", "x.pt"], "--save-adapted needs --adapt"),
    (["--adapt", "--adapt-seconds", "0"], "time budget"),
    (["--adapt", "--adapt-seconds", "nan"], "time budget"),
])
def test_denoise_adapt_options_are_checked_first(tmp_path, tiny_checkpoint, sample_ldct, capsys, extra, fragment):
    path, _, _ = sample_ldct
    out = tmp_path / "denoised.nii.gz"
    assert main(["denoise", str(path), str(out), "--model", str(tiny_checkpoint)] + extra) == EXIT_USAGE
    assert fragment in _one_error_line(capsys, "denoise")
    assert not out.exists()


def test_adapt_refuses_a_missing_input_and_an_output_over_the_input(tmp_path, tiny_checkpoint, sample_ldct, capsys):
    path, _, _ = sample_ldct
    assert main(["adapt", str(path), "--out", str(tmp_path / "m.pt"), "--model", str(tiny_checkpoint),
                 "--steps", "0"]) == EXIT_USAGE
    assert "--steps" in _one_error_line(capsys, "adapt")
    assert main(["adapt", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "m.pt"),
                 "--model", str(tiny_checkpoint)]) == EXIT_USAGE
    _one_error_line(capsys, "adapt")
    assert main(["adapt", str(path), "--out", str(tiny_checkpoint), "--model", str(tiny_checkpoint),
                 "--overwrite"]) == EXIT_USAGE
    _one_error_line(capsys, "adapt")
    assert not (tmp_path / "m.pt").exists()


def _small_sample(tmp_path, sample_ldct):
    """Two 96 x 96 slices of the sample, written as NIfTI: small enough for the default model in a test."""
    from TSCDenoiseLib.io import write_ct

    _, volume, geometry = sample_ldct
    return write_ct(np.ascontiguousarray(volume[8:10, 80:176, 80:176]), geometry, tmp_path / "small.nii.gz")


def test_denoise_strength_reaches_the_output(tmp_path, sample_ldct, capsys):
    from TSCDenoiseLib.core.checkpoint import load_model
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.io import read_ct
    from TSCDenoiseLib.noise import choose_strength

    small = _small_sample(tmp_path, sample_ldct)
    volume, _ = read_ct(small)
    model = load_model(device="cpu")
    automatic = choose_strength(volume, model).strength
    outputs = {}
    for strength in (None, "0.5", "auto"):
        out = tmp_path / f"out-{strength}.nii.gz"
        extra = ["--strength", strength] if strength else []
        assert main(["denoise", str(small), str(out), "--device", "cpu", "--json", *extra]) == EXIT_OK
        captured = capsys.readouterr()
        assert json.loads(captured.out)["strength"] == (0.5 if strength == "0.5" else automatic)
        assert ("strength auto:" in captured.err) == (strength != "0.5")  # the chosen strength is said
        outputs[strength], _ = read_ct(out)
    assert np.array_equal(outputs[None], outputs["auto"]) and not np.array_equal(outputs["0.5"], outputs[None])
    np.testing.assert_array_equal(outputs["0.5"], denoise_volume(volume, model, device="cpu", strength=0.5))
    np.testing.assert_array_equal(outputs[None], denoise_volume(volume, model, device="cpu"))


@pytest.mark.parametrize("extra, fragment", [
    (["--strength", "3"], "strength must be 'auto' (from the scan's noise texture) or a number from 0.25 to 2"),
    (["--strength", "0.5", "--model", "TINY"], "no noise-map input; use the default model, or strength 'auto' or 1.0"),
    (["--strength", "soft"], "--strength must be 'auto' or a number from 0.25 to 2, got 'soft'."),
])
def test_denoise_refuses_a_strength_it_cannot_use_with_one_line(tmp_path, tiny_checkpoint, sample_ldct, capsys,
                                                                extra, fragment):
    extra = [str(tiny_checkpoint) if arg == "TINY" else arg for arg in extra]
    out = tmp_path / "out.nii.gz"
    assert main(["denoise", str(sample_ldct[0]), str(out), "--device", "cpu", *extra]) == EXIT_USAGE
    assert fragment in _one_error_line(capsys, "denoise")
    assert not out.exists()


def test_denoise_help_explains_the_strength(capsys):
    assert main(["denoise", "--help"]) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    assert "--strength S" in text and "below 1 keeps more texture/noise, above 1 smooths more" in text
    assert "'auto' (default: chosen from the scan's noise texture, printed)" in text


def test_a_message_after_a_finished_or_open_progress_bar_starts_its_own_line(capsys):
    from TSCDenoiseLib.cli import _progress_bar, _say

    with _progress_bar("adapting", unit="‰") as adapting, _progress_bar("denoising") as denoising:
        adapting(500, 1000)
        adapting(1000, 1000)  # finished: what follows must not continue the bar's line
        _say("Adaptation (r2r, 2 steps): summary")
        denoising(1, 4)  # still open
        _say("a notice during the run")
        denoising(4, 4)
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert "Adaptation (r2r, 2 steps): summary" in lines
    assert "a notice during the run" in lines
