"""The MONAI bundle under training/: metadata fields, both training stages, resume, determinism, DDP.

Runs the real configs through ``monai.bundle`` (in-process, or ``torchrun`` for DDP) with a tiny
network, few iterations and small patches, on the bundled sample data.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("monai")
from monai.bundle import run as bundle_run  # noqa: E402

from TSCDenoiseLib.core.checkpoint import load_model, read_checkpoint  # noqa: E402

from .conftest import BUNDLE, CONFIGS, TINY, train  # noqa: E402


def log_records(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metadata_has_the_model_zoo_required_fields():
    # verify_metadata downloads the schema; check the specification's mandatory keys offline.
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "optional_packages_version", "task", "description", "authors", "copyright", "network_data_format"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    tensor_keys = {"type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                   "is_patch_data", "channel_def"}
    for direction in ("inputs", "outputs"):
        (spec,) = meta["network_data_format"][direction].values()
        assert tensor_keys <= set(spec), tensor_keys - set(spec)
        assert spec["format"] == "hounsfield" and spec["num_channels"] == 1


def test_bundle_layout_is_complete():
    for name in ("metadata.json", "train.json", "teacher.json", "student.json", "ablation.json", "redcnn.json",
                 "multi_gpu_train.json", "evaluate.json", "inference.json", "logging.conf"):
        assert (CONFIGS / name).is_file(), name
    for name in ("LICENSE", "docs/README.md", "models/model.pt", "models/teacher.pt"):
        assert (BUNDLE / name).is_file(), name


@pytest.mark.slow
def test_training_runs_teacher_then_student_and_writes_engine_checkpoints(tmp_path):
    train(tmp_path)
    teacher = read_checkpoint(tmp_path / "teacher.pt")
    student = read_checkpoint(tmp_path / "model.pt")
    assert teacher["role"] == "teacher" and student["role"] == "student"
    # Same architecture, the teacher reconstructs (no global residual), the student denoises the residual.
    assert {**teacher["config"], "residual": True} == student["config"]
    assert teacher["config"]["residual"] is False
    assert teacher["state_dict"].keys() == student["state_dict"].keys()
    assert student["metadata"]["lambda_kt"] > 0 and student["metadata"]["lambda_cr"] > 0
    # The best checkpoint records when it was taken: its epoch and the trainer's iteration count then.
    assert (student["metadata"]["epoch"], student["metadata"]["iterations"]) == (1, TINY["iterations_per_epoch"])
    epoch_end = log_records(tmp_path / "student_log.jsonl")[-1]
    assert {"val_psnr", "val_ssim", "val_rmse_hu", "lr", "parameter_sum"} <= set(epoch_end)
    terms = log_records(tmp_path / "student_log.jsonl")[0]
    lambda_kt, lambda_cr = student["metadata"]["lambda_kt"], student["metadata"]["lambda_cr"]
    assert terms["loss"] == pytest.approx(terms["pixel"] + lambda_kt * terms["kt"] + lambda_cr * terms["cr"], rel=1e-5)
    assert terms["kt"] > 0 and terms["cr"] > 0
    model = load_model(tmp_path / "model.pt", device="cpu")
    assert model(torch.rand(1, 1, 20, 20)).shape == (1, 1, 20, 20)
    assert any((tmp_path / "tensorboard" / "student").iterdir())


@pytest.mark.slow
def test_student_stage_alone_uses_the_given_teacher_and_resumes(tmp_path):
    train(tmp_path / "first", stage="teacher")
    teacher = tmp_path / "first" / "teacher.pt"
    train(tmp_path / "second", stage="student", teacher_checkpoint=str(teacher))
    assert not (tmp_path / "second" / "teacher.pt").exists()
    state = next((tmp_path / "second" / "student_state").glob("*final_iteration=2.pt"))
    train(tmp_path / "third", stage="student", teacher_checkpoint=str(teacher), resume=str(state), student_epochs=2)
    records = log_records(tmp_path / "third" / "student_log.jsonl")
    # Resumed after epoch 1 (iterations 1-2): only epoch 2 runs.
    assert [r["iteration"] for r in records if "parameter_sum" not in r] == [3, 4]
    # Warm start: with a zero learning rate the student keeps exactly the weights it started from.
    init = tmp_path / "second" / "model.pt"
    train(tmp_path / "warm", stage="student", teacher_checkpoint=str(teacher), student_init=str(init), learning_rate=0.0)
    started, ended = read_checkpoint(init)["state_dict"], read_checkpoint(tmp_path / "warm" / "model.pt")["state_dict"]
    assert all(torch.equal(started[k], ended[k]) for k in started)
    assert read_checkpoint(tmp_path / "warm" / "model.pt")["metadata"]["student_init"] == "model.pt"
    with pytest.raises(Exception) as caught:  # the teacher has no global residual: another config
        train(tmp_path / "mismatch", stage="student", teacher_checkpoint=str(teacher), student_init=str(teacher))
    causes = [caught.value]
    while causes[-1].__cause__ is not None:  # monai.bundle wraps the error raised in the config expression
        causes.append(causes[-1].__cause__)
    assert any("same network" in str(cause) for cause in causes), causes


@pytest.mark.slow
def test_same_seed_gives_the_same_teacher(tmp_path):
    train(tmp_path / "a", stage="teacher")
    train(tmp_path / "b", stage="teacher")
    train(tmp_path / "c", stage="teacher", seed=1)
    a, b, c = (read_checkpoint(tmp_path / name / "teacher.pt")["state_dict"] for name in "abc")
    # One stage writes only its own folders (no empty student_state/ or tensorboard/student).
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["teacher.pt", "teacher_log.jsonl", "teacher_state",
                                                                   "tensorboard"]
    assert [p.name for p in (tmp_path / "a" / "tensorboard").iterdir()] == ["teacher"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_ablation_and_redcnn_configs_train_without_a_teacher(tmp_path):
    for extra, name, network in (("ablation.json", "ablation_no_kt_crm.pt", "TSCNet"), ("redcnn.json", "redcnn.pt", "REDCNN")):
        settings = {**TINY, "student_epochs": 1}
        bundle_run("training", config_file=[str(CONFIGS / f) for f in ("train.json", "student.json", extra)],
                   bundle_root=str(BUNDLE), output_dir=str(tmp_path), teacher_checkpoint=str(tmp_path / "absent.pt"),
                   **settings)
        payload = read_checkpoint(tmp_path / name)
        assert payload["network"] == network and payload["metadata"]["lambda_kt"] == 0


@pytest.mark.slow
def test_two_process_gloo_training_syncs_weights_and_only_rank0_writes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",  # standalone: a free port (tests run side by side)
        "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
        "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path), "--teacher_epochs", "1", "--student_epochs", "1",
        "--iterations_per_epoch", "2", "--patch_size", "32", "--patches_per_volume", "2", "--log_interval", "1",
        "--network_config", json.dumps(TINY["network_config"]),
    ]
    result = subprocess.run(command, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("teacher", "student"):
        rank0 = log_records(tmp_path / f"{stage}_log.jsonl")
        rank1 = log_records(tmp_path / f"{stage}_log.rank1.jsonl")
        losses0 = [r["loss"] for r in rank0 if "loss" in r]
        losses1 = [r["loss"] for r in rank1 if "loss" in r]
        assert len(losses0) == len(losses1) == 2 and losses0 != losses1  # each rank trained on its own patches
        # DDP averaged the gradients: both ranks end with the same weights.
        assert rank0[-1]["parameter_sum"] == pytest.approx(rank1[-1]["parameter_sum"], rel=1e-9)
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt")
    assert written == ["model.pt", "teacher.pt"]
    assert len(list((tmp_path / "teacher_state").iterdir())) == 2  # epoch + final, once (not per rank)
    tensorboard_writers = {p.name.split(".")[-2] for p in (tmp_path / "tensorboard" / "teacher").iterdir()}
    assert len(tensorboard_writers) == 1  # one process (rank 0) wrote TensorBoard events


@pytest.mark.slow
def test_inference_config_denoises_a_file_like_the_engine(tmp_path, tiny_net):
    import numpy as np

    from TSCDenoiseLib.core.checkpoint import save_model
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct

    volume = (np.random.default_rng(0).normal(40, 20, (3, 24, 28))).astype(np.float32)
    source = write_ct(volume, VolumeGeometry(spacing=(0.7, 0.7, 3.0)), tmp_path / "ct.nii.gz")
    model = save_model(tiny_net, tmp_path / "tiny.pt")
    bundle_run("run", config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE), input=str(source),
               output=str(tmp_path / "out.nii.gz"), model=str(model), device="cpu")
    result, _ = read_ct(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(result, denoise_volume(volume, tiny_net, device="cpu"), atol=1e-4)


@pytest.mark.slow
def test_ckpt_export_traces_a_torchscript_file_with_the_same_output(tmp_path, tiny_net):
    from monai.bundle import ckpt_export

    from TSCDenoiseLib.core.checkpoint import save_model

    model = save_model(tiny_net, tmp_path / "tiny.pt")
    ckpt_export("network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(model), key_in_ckpt="state_dict",
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(BUNDLE), model=str(model), use_trace=True, input_shape=[1, 1, 32, 32])
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    for shape in ((1, 1, 32, 32), (2, 1, 48, 40)):  # the traced size, and another multiple of 4
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), tiny_net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_simulated_low_dose_needs_only_normal_dose_files(tmp_path):
    from TSCDenoiseLib.core.resources import SAMPLE_NORMAL_DOSE_FILE, sample_path
    from TSCDenoiseLib.io import read_ct, write_ct

    volume, geometry = read_ct(sample_path(SAMPLE_NORMAL_DOSE_FILE))
    entries = {}
    for split, z in (("training", slice(0, 4)), ("validation", slice(6, 8))):
        path = write_ct(volume[z, 64:192, 64:192], geometry, tmp_path / f"{split}.nii.gz")
        entries[split] = [{"ndct": path.name}]
    (tmp_path / "datalist.json").write_text(json.dumps(entries))
    train(tmp_path / "run", stage="student", lambda_kt=0.0, lambda_cr=0.0, simulate_low_dose=True,
          datalist=str(tmp_path / "datalist.json"), teacher_checkpoint=str(tmp_path / "absent.pt"))
    assert read_checkpoint(tmp_path / "run" / "model.pt")["role"] == "student"
    cached = list((tmp_path / "run" / "ldct_cache").glob("validation-ldct-*.nii.gz"))
    assert len(cached) == 1  # the validation pair was simulated once and cached


def test_the_config_transforms_are_the_python_pipeline():
    # The transforms are written out in train.json; TSCDenoiseLib.training.transforms builds the same pipeline for
    # scripts and tests. Same seed, same patches and validation slices: the two cannot drift apart.
    from monai.bundle import ConfigParser

    from TSCDenoiseLib.training.data import read_datalist
    from TSCDenoiseLib.training.transforms import training_transforms, volume_transforms

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(BUNDLE), "patch_size": 32, "patches_per_volume": 3})
    entry = read_datalist(parser.get_parsed_content("datalist"))["validation"][0]
    for identity_pair_prob in (0.0, 0.5):
        parser["identity_pair_prob"] = identity_pair_prob
        configured = parser.get_parsed_content("train#preprocessing", lazy=False)
        python = training_transforms(None, 32, 3, identity_pair_prob=identity_pair_prob)
        configured.set_random_state(seed=5)
        python.set_random_state(seed=5)
        patches, expected = configured(dict(entry)), python(dict(entry))
        assert len(patches) == len(expected) == 3
        for a, b in zip(patches, expected):
            for key in ("ldct", "ndct"):
                assert a[key].shape == (1, 32, 32) and torch.equal(a[key], b[key])
        identical = sum(torch.equal(p["ldct"], p["ndct"]) for p in patches)
        assert (identical > 0) == (identity_pair_prob > 0)  # seed 5 draws at least one identity pair at 0.5
    a, b = parser.get_parsed_content("validate#preprocessing")(dict(entry)), volume_transforms(None)(dict(entry))
    for key in ("ldct", "ndct"):
        assert 0 <= float(a[key].min()) < float(a[key].max()) <= 1 and torch.equal(a[key], b[key])


@pytest.mark.parametrize("stage_file", [None, "teacher.json", "student.json"])
def test_the_training_configs_have_the_model_zoo_train_properties(stage_file):
    from monai.bundle import ConfigWorkflow

    files = [str(CONFIGS / "train.json")] + ([str(CONFIGS / stage_file)] if stage_file else [])
    workflow = ConfigWorkflow(config_file=files, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                              logging_file=False, bundle_root=str(BUNDLE))
    workflow.initialize()  # checks the stage name; builds nothing
    assert workflow.check_properties() == []


@pytest.mark.slow
def test_noise_conditioned_teacher_and_student_warm_start_from_plain_checkpoints(tmp_path):
    """`teacher_init`/`student_init` carry plain weights into noise-map networks: same function at lr 0."""
    train(tmp_path / "plain", stage="both", student_epochs=1, teacher_epochs=1)
    plain = {role: tmp_path / "plain" / name for role, name in (("teacher", "teacher.pt"), ("student", "model.pt"))}
    conditioned = {**TINY["network_config"], "noise_map": True}
    train(tmp_path / "nm", stage="teacher", teacher_init=str(plain["teacher"]), network_config=conditioned,
          learning_rate=0.0)
    train(tmp_path / "nm", stage="student", teacher_checkpoint=str(tmp_path / "nm" / "teacher.pt"),
          student_init=str(plain["student"]), network_config=conditioned, learning_rate=0.0)
    slices = 0.25 + 0.02 * torch.randn(2, 1, 24, 24)
    for role, name in (("teacher", "teacher.pt"), ("student", "model.pt")):
        before, after = load_model(plain[role], device="cpu"), load_model(tmp_path / "nm" / name, device="cpu")
        assert after.config["noise_map"] is True
        with torch.no_grad():
            assert torch.allclose(after(slices), before(slices), atol=1e-6)
    assert read_checkpoint(tmp_path / "nm" / "teacher.pt")["metadata"]["teacher_init"] == "teacher.pt"
    # the noise-map student records the k of its training pairs, which "auto" scales new scans by
    from TSCDenoiseLib.noise.strength import METADATA_KEY, measure_index_per_std, model_index_per_std
    from TSCDenoiseLib.training.data import read_datalist

    expected = measure_index_per_std(read_datalist(BUNDLE.parent / "Resources" / "SampleData" / "datalist.json")["training"])
    assert 0.2 < expected < 1.5
    assert read_checkpoint(tmp_path / "nm" / "model.pt")["metadata"][METADATA_KEY] == expected
    assert model_index_per_std(load_model(tmp_path / "nm" / "model.pt", device="cpu")) == expected
    for plain_or_teacher in (plain["student"], plain["teacher"], tmp_path / "nm" / "teacher.pt"):
        assert METADATA_KEY not in read_checkpoint(plain_or_teacher)["metadata"]


def test_pairs_with_different_records_batch_together(tmp_path):
    """A datalist's descriptive fields (source, simulated acquisition) differ per pair; batching must not care."""
    base = BUNDLE.parent / "Resources" / "SampleData"
    sample = json.loads((base / "datalist.json").read_text())
    absolute = [{key: str(base / entry[key]) for key in ("ndct", "ldct")} for entry in sample["training"]]
    training = [{**absolute[0], "source": "a", "acquisition": {"dose_fraction": 0.1, "fbp_filter": "hann"}},
                {**absolute[0], "source": "b", "acquisition": {"dose_fraction": 0.2, "body_width_mm": 300.0}}]
    validation = [{key: str(base / entry[key]) for key in ("ndct", "ldct")} for entry in sample["validation"]]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": training, "validation": validation}))
    train(tmp_path / "run", stage="teacher", datalist=str(tmp_path / "datalist.json"), volumes_per_batch=2)
    assert (tmp_path / "run" / "teacher.pt").is_file()


def test_a_calibrated_noise_map_student_trains_and_says_so(tmp_path):
    """`calibrate_noise_map`: each pair's strength reaches training and validation; the checkpoint records it."""
    conditioned = {**TINY["network_config"], "noise_map": True}
    train(tmp_path, stage="student", lambda_kt=0.0, lambda_cr=0.0, network_config=conditioned,
          calibrate_noise_map=True, teacher_checkpoint=str(tmp_path / "absent.pt"))
    metadata = read_checkpoint(tmp_path / "model.pt")["metadata"]
    assert metadata["noise_map_calibrated"] is True and 0.2 < metadata["noise_index_per_std"] < 1.5
    assert "val_psnr" in log_records(tmp_path / "student_log.jsonl")[-1]
    train(tmp_path / "plain", stage="student", lambda_kt=0.0, lambda_cr=0.0, network_config=conditioned,
          teacher_checkpoint=str(tmp_path / "absent.pt"))
    assert "noise_map_calibrated" not in read_checkpoint(tmp_path / "plain" / "model.pt")["metadata"]


@pytest.mark.slow
def test_an_averaged_run_validates_and_saves_the_average_and_resumes_it(tmp_path):
    """`weight_averaging`: the best-model file holds the mean of the weights after each step, across a resume."""
    from TSCDenoiseLib.errors import InvalidInputError
    from TSCDenoiseLib.training.bundle import user_error

    pixel_only = dict(stage="student", lambda_kt=0.0, lambda_cr=0.0, teacher_checkpoint=str(tmp_path / "absent.pt"),
                      iterations_per_epoch=1, learning_rate=0.01, min_learning_rate=0.01)  # constant: every step moves
    train(tmp_path / "first", weight_averaging="mean", **pixel_only)
    first_state = next((tmp_path / "first" / "student_state").glob("*final*.pt"))
    first = torch.load(first_state, weights_only=True)
    train(tmp_path / "second", weight_averaging="mean", resume=str(first_state), student_epochs=2, **pixel_only)
    second = torch.load(next((tmp_path / "second" / "student_state").glob("*final*.pt")), weights_only=True)
    saved = read_checkpoint(tmp_path / "second" / "model.pt")
    assert int(second["averaged_network"]["n_averaged"]) == 2
    for name, weight in saved["state_dict"].items():
        # The mean of the weights after step 1 (the first run's) and step 2 (the resumed run's) ...
        expected = (first["network"][name] + second["network"][name]) / 2
        torch.testing.assert_close(weight.float(), expected)
        torch.testing.assert_close(second["averaged_network"]["module." + name], expected)
    # ... which is not the network the optimizer stepped.
    assert any(not torch.equal(saved["state_dict"][k].float(), second["network"][k]) for k in saved["state_dict"])
    assert saved["metadata"]["weight_averaging"] == "mean"
    # scripts/export_training_state.py writes the state's average (here the same epoch as the best file) ...
    second_state = next((tmp_path / "second" / "student_state").glob("*final*.pt"))
    exported = tmp_path / "exported.pt"
    command = [sys.executable, str(BUNDLE / "scripts" / "export_training_state.py"), str(second_state),
               "--like", str(tmp_path / "second" / "model.pt"), "--out", str(exported), "--averaged"]
    subprocess.run(command, check=True, capture_output=True)
    payload = read_checkpoint(exported)
    assert all(torch.equal(payload["state_dict"][k], saved["state_dict"][k]) for k in saved["state_dict"])
    assert (payload["metadata"]["epoch"], payload["metadata"]["iterations"]) == (2, 2)
    assert "best_metric_value" not in payload["metadata"]
    # ... and, without --averaged, the network the optimizer stepped; it never replaces a file.
    network_file = tmp_path / "network.pt"
    subprocess.run(command[:-2] + [str(network_file)], check=True, capture_output=True)
    assert all(torch.equal(read_checkpoint(network_file)["state_dict"][k], second["network"][k]) for k in second["network"])
    assert subprocess.run(command, capture_output=True).returncode != 0
    # A state saved without averaging cannot resume an averaged run: one error naming the key.
    train(tmp_path / "plain", **pixel_only)
    plain_state = next((tmp_path / "plain" / "student_state").glob("*final*.pt"))
    with pytest.raises(Exception) as caught:
        train(tmp_path / "refused", weight_averaging="mean", resume=str(plain_state), student_epochs=2, **pixel_only)
    error = user_error(caught.value)
    assert isinstance(error, InvalidInputError) and "weight_averaging" in str(error)
    assert "weight_averaging" not in read_checkpoint(tmp_path / "plain" / "model.pt")["metadata"]
