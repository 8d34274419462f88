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
