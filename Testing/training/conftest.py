"""What the bundle tests share: where the bundle is, and a tiny training run of its real configs."""

from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[2] / "training"
CONFIGS = BUNDLE / "configs"
# A tiny network, few iterations and small patches: the real configs, fast on a CPU.
TINY = dict(
    iterations_per_epoch=2,
    patch_size=32,
    patches_per_volume=2,
    log_interval=1,
    network_config={"base_channels": 4, "num_attention_blocks": 1, "num_dems": 1, "attention_reduction": 4},
)


def train(output_dir: Path, **overrides) -> None:
    """One bundle training run (teacher and student, one epoch each unless overridden) into `output_dir`."""
    from monai.bundle import run as bundle_run

    settings = {**TINY, "teacher_epochs": 1, "student_epochs": 1, **overrides}
    bundle_run("training", config_file=str(CONFIGS / "train.json"), bundle_root=str(BUNDLE),
               output_dir=str(output_dir), **settings)
