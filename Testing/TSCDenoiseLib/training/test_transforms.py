"""Training transforms that shape what the student sees."""

import numpy as np
import pytest
import torch

from TSCDenoiseLib.errors import InvalidInputError
from TSCDenoiseLib.training.transforms import RandIdentityPaird


def test_identity_pairs_replace_the_low_dose_by_a_copy_at_the_given_rate():
    transform = RandIdentityPaird(prob=0.3)
    transform.set_random_state(seed=0)
    ndct, ldct = torch.zeros(1, 8, 8), torch.ones(1, 8, 8)
    replaced = 0
    for _ in range(400):
        out = transform({"ndct": ndct, "ldct": ldct})
        if torch.equal(out["ldct"], ndct):
            replaced += 1
            assert out["ldct"] is not ndct  # a copy: training never writes into the target through the input
        else:
            assert out["ldct"] is ldct
    assert 0.24 < replaced / 400 < 0.36
    assert np.array_equal(RandIdentityPaird(prob=1.0)({"ndct": np.eye(3), "ldct": np.ones((3, 3))})["ldct"], np.eye(3))
    with pytest.raises(InvalidInputError, match="probability"):
        RandIdentityPaird(prob=1.5)


def test_calibrate_noise_map_gives_each_pair_the_strength_auto_would_choose():
    from TSCDenoiseLib.noise.strength import strength_for_texture
    from TSCDenoiseLib.training.phantom import make_phantom
    from TSCDenoiseLib.training.transforms import NOISE_STRENGTH_KEY, CalibrateNoiseMapd

    clean = make_phantom((3, 96, 96), kind="torso", spacing=(1.0, 1.0, 2.0), seed=4)
    noisy = (clean + np.random.default_rng(1).normal(0.0, 25.0, clean.shape)).astype(np.float32)
    channel_first = np.moveaxis(noisy, 0, -1)[None]  # (1, X, Y, Z) as LoadImaged gives it (axes only swapped)
    out = CalibrateNoiseMapd(0.6)({"ldct": channel_first, "ndct": channel_first})
    expected = strength_for_texture(noisy, 0.6)
    assert expected.index_to_std is not None  # measured on the phantom's soft tissue
    assert out[NOISE_STRENGTH_KEY] == pytest.approx(expected.strength, rel=0.02)
    assert NOISE_STRENGTH_KEY not in CalibrateNoiseMapd(0.6)({"ndct": channel_first})  # low dose simulated later
