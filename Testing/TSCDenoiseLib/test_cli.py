"""The tscdenoise command line: exit codes, JSON output, the demo on the bundled sample."""

import json

import pytest

from TSCDenoiseLib.checkpoint import save_model
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
