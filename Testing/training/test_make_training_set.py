"""training/scripts/make_training_set.py: which sources go to which split, and the per-epoch validation subset.

The simulation itself (astra, the `[data]` extra) is tested in Testing/TSCDenoiseLib/training."""

import importlib.util

import pytest

from .conftest import BUNDLE

SCRIPT = BUNDLE / "scripts" / "make_training_set.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_training_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_phantoms_are_new_sources_after_the_existing_ones():
    script = load_script()
    before = script.sources(with_pycerr=False, phantoms=4)
    after = script.sources(with_pycerr=False, phantoms=4, validation_phantoms=2)
    # Draw 0 of every source reads one random stream in this order: the existing pairs must not move.
    assert after[:len(before)] == before
    added = after[len(before):]
    assert [s["split"] for s in added] == ["validation", "validation"]
    training_seeds = {s["phantom_seed"] for s in after if "phantom_seed" in s and s["split"] == "training"}
    validation_seeds = {s["phantom_seed"] for s in added}
    assert len(validation_seeds) == 2 and not validation_seeds & training_seeds  # no training anatomy in validation
    assert len({s["name"] for s in after}) == len(after)  # file names carry the source name
    with pytest.raises(SystemExit, match="seeds"):
        script.sources(with_pycerr=False, phantoms=101, validation_phantoms=1)


def test_quick_validation_takes_two_head_pairs_and_one_pair_per_validation_phantom():
    script = load_script()

    def entry(source, chunk, draw):
        stem = f"validation/{source}_z{chunk:03d}_d{draw}"
        return {"ndct": f"{stem}_ndct.nii.gz", "ldct": f"{stem}_ldct.nii.gz", "source": source}

    validation = ([entry("cranium-val", c, d) for d in range(3) for c in (0, 5, 10)]
                  + [entry(f"torso-phantom-val-{i}", c, d) for i in range(2) for d in range(3) for c in (0, 5)])
    datalist = {"description": "x", "training": [entry("torso-phantom-0", 0, 0)], "validation": validation}
    quick = script.quick_validation(datalist)
    assert quick["training"] == datalist["training"]
    assert [e["ldct"] for e in quick["validation"]] == [
        "validation/cranium-val_z000_d0_ldct.nii.gz", "validation/cranium-val_z005_d0_ldct.nii.gz",
        "validation/torso-phantom-val-0_z000_d0_ldct.nii.gz", "validation/torso-phantom-val-1_z000_d0_ldct.nii.gz"]
    # Without validation phantoms the subset is what it was: the two head pairs.
    without = {**datalist, "validation": validation[:9]}
    assert [e["source"] for e in script.quick_validation(without)["validation"]] == ["cranium-val"] * 2
