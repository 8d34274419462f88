"""Procedural phantoms: reproducible, CT-like HU, the anatomy each kind promises."""

import numpy as np
import pytest

pytest.importorskip("scipy")

from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.training.phantom import HU, make_phantom


def test_same_seed_same_phantom_and_seeds_differ():
    first = make_phantom((3, 64, 64), "torso", (6.0, 6.0, 5.0), seed=4)
    np.testing.assert_array_equal(first, make_phantom((3, 64, 64), "torso", (6.0, 6.0, 5.0), seed=4))
    assert not np.array_equal(first, make_phantom((3, 64, 64), "torso", (6.0, 6.0, 5.0), seed=5))
    assert first.dtype == np.float32 and first.shape == (3, 64, 64)


@pytest.mark.parametrize("kind", ["torso", "head"])
def test_values_are_ct_numbers_with_air_fat_soft_tissue_and_bone(kind):
    volume = make_phantom((4, 96, 96), kind, (5.0, 5.0, 10.0), seed=0)
    assert volume.min() >= -1100 and volume.max() <= 2000
    assert (volume == HU["air"]).mean() > 0.2, "air around the body"
    assert (volume > 900).any(), "bone"
    soft = volume[(volume > 0) & (volume < 100)]
    assert soft.size > 500 and 0.5 < soft.std() < 40, "soft tissue with fine texture"


def test_chest_slices_have_lungs_and_abdomen_slices_do_not():
    volume = make_phantom((40, 96, 96), "torso", (5.0, 5.0, 4.0), seed=1, z_start=0.0)
    lung_fraction = ((volume > -950) & (volume < -700)).mean(axis=(1, 2))
    assert lung_fraction[0] < 0.01 and lung_fraction[-1] > 0.05


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidInputError, match="kind"):
        make_phantom(kind="knee")
    with pytest.raises(InvalidInputError, match="shape"):
        make_phantom(shape=(0, 10, 10))
