"""The bundle's model card (configs/metadata.json) describes the shipped models/model.pt: its checkpoint, the
command that made it, and its row of docs/evaluation.json. Replacing the weights or the evaluation without
the card fails here."""

import json
from pathlib import Path

import pytest

from TSCDenoiseLib.core.checkpoint import read_checkpoint

BUNDLE = Path(__file__).resolve().parents[2] / "training"
META = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
CARD = META["model_card"]
EVALUATION = json.loads((BUNDLE / "docs" / "evaluation.json").read_text())
LOW_DOSE_ROW = "LDCT input"


def shipped_row_name() -> str:
    """The evaluation row of models/model.pt, by the name configs/evaluate.json gives it."""
    pytest.importorskip("monai")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "evaluate.json"))
    parser["bundle_root"] = str(BUNDLE)
    models = parser.get_parsed_content("models")
    (name,) = [name for name, path in models.items() if Path(path).resolve() == (BUNDLE / CARD["file"]).resolve()]
    return name


def expected_metrics(row: dict, low_dose: dict) -> dict:
    (soft_low, soft_high), (full_low, full_high) = (
        [int(v) for v in EVALUATION["windows"][name]] for name in ("soft_tissue", "full"))
    return {
        f"test_psnr_db_window_{soft_low}_{soft_high}": row["psnr_db"],
        f"test_ssim_window_{soft_low}_{soft_high}": row["ssim"],
        "test_rmse_hu": row["rmse_hu"],
        f"test_psnr_db_window_{full_low}_{full_high}": row["psnr_db_full"],
        f"test_ssim_window_{full_low}_{full_high}": row["ssim_full"],
        "test_noise_std_hu_flat_tissue": row["noise_std_hu"],
        "test_bias_hu_flat_tissue": row["bias_hu"],
        f"ldct_input_psnr_db_window_{soft_low}_{soft_high}": low_dose["psnr_db"],
        "ldct_input_rmse_hu": low_dose["rmse_hu"],
    }


def test_the_card_is_the_shipped_checkpoint():
    from TSCDenoiseLib.training.bundle import file_sha256

    path = BUNDLE / CARD["file"]
    assert CARD["file"] == "models/model.pt"
    assert file_sha256(path) == CARD["sha256"], "models/model.pt changed: update the model card in metadata.json"
    payload = read_checkpoint(path)
    assert (payload["network"], payload["config"], payload["role"], payload["hu_window"]) == (
        CARD["network"], CARD["config"], CARD["role"], CARD["hu_window"])
    assert sum(v.numel() for v in payload["state_dict"].values()) == CARD["parameters"]
    assert f"{CARD['parameters']:,}" in META["description"]
    recorded = payload["metadata"]
    assert {"lambda_kt", "lambda_cr", "learning_rate", "student_init", "seed", "iterations", "epoch"} <= set(recorded)
    for key, value in CARD["training"].items():
        if key in recorded:
            assert recorded[key] == value, key


def test_the_cards_last_stage_command_makes_the_checkpoint_from_the_stage_before():
    """The lineage runs stage by stage; the last one's command carries the checkpoint's recorded settings and
    starts from the file the stage before it produced."""
    recorded = read_checkpoint(BUNDLE / CARD["file"])["metadata"]
    stages = CARD["lineage"]
    assert len(stages) >= 2 and CARD["command"] in stages[-1]["command"]
    assert stages[-2]["produces"] == f"models/{recorded['student_init']}"
    command = CARD["command"]
    assert f"--student_init models/{recorded['student_init']}" in command
    assert f"--learning_rate {recorded['learning_rate']}" in command
    iterations_per_epoch = json.loads((BUNDLE / "configs" / "train.json").read_text())["iterations_per_epoch"]
    assert recorded["iterations"] == recorded["epoch"] * iterations_per_epoch  # the best epoch is what ships
    epochs = int(command.split("--student_epochs ")[1].split()[0])
    assert recorded["epoch"] <= epochs
    # The loss weights come from the configs the command names, never from flags.
    assert "lambda" not in command
    weights = json.loads((BUNDLE / "configs" / "train.json").read_text())
    if "configs/ablation.json" in command:
        weights.update(json.loads((BUNDLE / "configs" / "ablation.json").read_text()))
    assert (weights["lambda_kt"], weights["lambda_cr"]) == (recorded["lambda_kt"], recorded["lambda_cr"])
    for stage in stages:
        for needed in stage.get("needs", []):  # files a stage reads that the repository ships
            assert (BUNDLE / needed).is_file(), needed


def test_the_card_metrics_are_the_shipped_models_row_of_the_evaluation():
    results = EVALUATION["results"]
    expected = expected_metrics(results[shipped_row_name()], results[LOW_DOSE_ROW])
    assert META["eval_metrics"] == expected
    assert EVALUATION["split"] == "test"
    # The card's prose quotes the same figures.
    psnr = META["eval_metrics"]["test_psnr_db_window_-160_240"]
    low_dose_psnr = META["eval_metrics"]["ldct_input_psnr_db_window_-160_240"]
    assert f"{psnr:.2f} dB" in META["description"] and f"{low_dose_psnr:.2f} dB" in META["description"]


@pytest.mark.slow
def test_the_shipped_model_scores_the_card_metrics_on_the_test_split():
    pytest.importorskip("monai")
    from TSCDenoiseLib.evaluation.scoring import evaluate_models

    datalist = (BUNDLE / "docs" / EVALUATION["datalist"]).resolve()
    if not datalist.is_file():
        datalist = BUNDLE.parent / "Resources" / "SampleData" / "datalist.json"
    scored = evaluate_models(datalist, {"shipped": BUNDLE / CARD["file"]}, split=EVALUATION["split"], classical=False,
                             device="cpu")["results"]
    recomputed = expected_metrics(scored["shipped"], scored[LOW_DOSE_ROW])
    assert recomputed.keys() == META["eval_metrics"].keys()
    for key, value in META["eval_metrics"].items():
        assert recomputed[key] == pytest.approx(value, abs=0.02), key
