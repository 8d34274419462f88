"""training/scripts/make_training_set.py: which sources go to which split, which pairs and noise seeds each
gets, and the per-epoch validation subset. No pair is simulated here: the simulator (astra, the `[data]`
extra) is tested in Testing/TSCDenoiseLib/training."""

import importlib.util

import pytest

from TSCDenoiseLib.training.acquisition import AcquisitionDistribution

from .conftest import BUNDLE

SCRIPT = BUNDLE / "scripts" / "make_training_set.py"
TEXTURE = AcquisitionDistribution(reference_dose_range=(0.35, 1.0), reference_noise_probability=0.7)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_training_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def planned(script, phantoms, validation_phantoms, draws=2):
    tasks, _ = script.plan_pairs(script.sources(False, phantoms, validation_phantoms), draws, 5, TEXTURE)
    return {task["stem"]: (task["seed"], task["entry"]["acquisition"]) for task in tasks}


def test_validation_phantoms_move_no_existing_pair(script):
    before = planned(script, phantoms=4, validation_phantoms=0)
    after = planned(script, phantoms=4, validation_phantoms=2)
    assert {stem: after[stem] for stem in before} == before  # same acquisitions and noise seeds
    added = sorted(set(after) - set(before))
    # 2 phantoms x 2 draws x 2 chunks of their 8 slices, all in the validation split
    assert len(added) == 8 and all(stem.startswith("validation/torso-phantom-val-") for stem in added)
    assert len({seed for seed, _ in after.values()}) == len(after)  # no two pairs share a noise seed


def test_more_training_phantoms_move_no_validation_phantom_pair(script):
    four = planned(script, phantoms=4, validation_phantoms=2)
    five = planned(script, phantoms=5, validation_phantoms=2)
    validation = [stem for stem in four if stem.startswith("validation/torso-phantom-val")]
    assert validation and {stem: five[stem] for stem in validation} == {stem: four[stem] for stem in validation}


def test_validation_phantoms_never_share_a_training_phantoms_anatomy(script):
    chosen = script.sources(False, phantoms=100, validation_phantoms=3)
    seeds = {split: {s["phantom_seed"] for s in chosen if "phantom_seed" in s and s["split"] == split}
             for split in ("training", "validation")}
    assert len(seeds["training"]) == 100 and len(seeds["validation"]) == 3
    assert not seeds["training"] & seeds["validation"]
    with pytest.raises(ValueError, match="seeds"):
        script.sources(False, phantoms=101, validation_phantoms=1)
    assert len(script.sources(False, phantoms=101, validation_phantoms=0)) == 103  # no validation seeds to reach
    with pytest.raises(ValueError, match="0 or more"):
        script.sources(False, phantoms=-1)


def test_quick_validation_takes_head_chest_and_one_pair_per_validation_phantom(script):
    def entry(source, start, draw):
        stem = f"validation/{source}_z{start:03d}-{start + 5:03d}_d{draw}"
        return {"ndct": f"{stem}_ndct.nii.gz", "ldct": f"{stem}_ldct.nii.gz", "source": source}

    head = [entry("cranium-val", z, d) for d in range(3) for z in (0, 5, 10)]
    chest = [entry("chest-pat_4", z, 0) for z in range(0, 50, 5)]
    phantoms = [entry(f"torso-phantom-val-{i}", z, d) for i in range(2) for d in range(3) for z in (0, 5)]
    datalist = {"description": "x", "training": [entry("torso-phantom-0", 0, 0)], "validation": head + chest + phantoms}
    quick = script.quick_validation(datalist)
    assert quick["training"] == datalist["training"]
    assert quick["validation"] == head[:2] + chest[2:8:2] + [phantoms[0], phantoms[6]]
    # Without validation phantoms the subset is what it was before they existed.
    assert script.quick_validation({**datalist, "validation": head + chest})["validation"] == head[:2] + chest[2:8:2]
