"""The safeguard's held-out test: which tiles count, how much each weighs, and a standard error that does not
count the same noise twice."""

import math

import numpy as np
import pytest
import torch

from TSCDenoiseLib.adaptation.noise_model import estimate_noise_model
from TSCDenoiseLib.adaptation.pairs import Split
from TSCDenoiseLib.adaptation.safeguard import (
    MIN_TISSUE, Scores, compare, held_out_tiles, stacked_pairs, weighted_difference)


def _scores(risks, pixels=None, neighbours=()):
    risks = torch.tensor(risks, dtype=torch.float32)
    zeros = torch.zeros_like(risks)
    return Scores(risks, zeros, zeros, None if pixels is None else torch.tensor(pixels, dtype=torch.float32),
                  tuple(neighbours))


def test_tiles_count_by_their_tissue_pixels():
    # a big tissue tile gains 100 HU^2, a tile with a sliver of tissue loses 300: per pixel it is a gain
    mean, _ = weighted_difference(torch.tensor([1000.0, 1000.0]), torch.tensor([900.0, 1300.0]),
                                  torch.tensor([4000.0, 200.0]))
    assert mean == (4000 * -100.0 + 200 * 300.0) / 4200
    verdict = compare(_scores([1000.0, 1000.0], [4000, 200]), _scores([900.0, 1300.0], [4000, 200]))
    assert verdict.original_risk == 1000.0 and verdict.adapted_risk == (4000 * 900.0 + 200 * 1300.0) / 4200


def test_the_standard_error_is_the_spread_of_independent_tiles():
    differences = torch.tensor([-30.0, -10.0, -20.0, -40.0, 0.0, -20.0])
    mean, error = weighted_difference(torch.zeros(6), differences)
    assert mean == -20.0
    assert error == pytest.approx(float(differences.std() / math.sqrt(6)))  # equal weights: the textbook one


def test_stacked_tiles_that_agree_widen_the_standard_error():
    # the same 6 gains, each seen twice, by a tile and by the tile under it on the next slice (slices
    # reconstructed with overlap share their noise): not 12 independent tiles
    gains = [-38.0, -2.0, -20.0, -65.0, 25.0, -20.0]
    doubled = [g for g in gains for _ in range(2)]
    pairs = [(2 * i, 2 * i + 1) for i in range(6)]
    zeros = torch.zeros(12)
    _, apart = weighted_difference(zeros, torch.tensor(doubled))
    _, touching = weighted_difference(zeros, torch.tensor(doubled), neighbours=pairs)
    _, once = weighted_difference(torch.zeros(6), torch.tensor(gains))
    assert touching == pytest.approx(math.sqrt(2) * apart)
    # ... the error of the 6 gains themselves (up to n / (n - 1): 12 / 11 against 6 / 5)
    assert touching == pytest.approx(once * math.sqrt(10 / 11))
    # counted as independent, the doubled tiles pass the 2-SE test (z 2.4); with their neighbour term, not (z 1.7)
    original = _scores([100.0] * 12)
    assert compare(original, _scores([100.0 + d for d in doubled])).use_adapted
    assert not compare(_scores([100.0] * 12, neighbours=pairs),
                       _scores([100.0 + d for d in doubled], neighbours=pairs)).use_adapted
    # tiles that disagree with the next slice's never make the error smaller than independent tiles'
    alternating = [(-20.0 + (15.0 if i % 2 else -15.0)) for i in range(12)]
    _, with_pairs = weighted_difference(zeros, torch.tensor(alternating), neighbours=pairs)
    _, without = weighted_difference(zeros, torch.tensor(alternating))
    assert with_pairs == without


def test_stacked_pairs_are_the_same_place_on_adjacent_slices():
    # in-plane tiles touching at a corner are denoised apart and share no noise beyond a few pixels: no pair
    positions = [(0, 0, 96), (0, 32, 64), (0, 128, 128), (1, 0, 96), (3, 0, 96), (2, 0, 64), (4, 0, 96)]
    assert stacked_pairs(positions) == ((0, 3), (4, 6))


def test_held_out_tiles_keep_air_rich_tiles_with_their_weight():
    rows = cols = 128
    volume = np.full((1, rows, cols), -1000.0, dtype=np.float32)
    split = Split((1, rows, cols), 16)
    tiles = split.held_out_tiles()
    (y_full, x_full), (y_part, x_part), (y_little, x_little) = tiles[0], tiles[1], tiles[2]
    volume[0, y_full:y_full + 16, x_full:x_full + 16] = 40.0  # all tissue
    volume[0, y_part:y_part + 4, x_part:x_part + 16] = 40.0  # a quarter
    volume[0, y_little, x_little:x_little + 4] = 40.0  # 4 pixels: below MIN_TISSUE
    assert 4 / 256 < MIN_TISSUE < 0.25
    rng = np.random.default_rng(0)
    noisy = volume + rng.normal(0, 10, volume.shape).astype(np.float32)
    held = held_out_tiles(noisy, split, estimate_noise_model(noisy), torch.Generator().manual_seed(0))
    assert held.positions == ((0, y_full, x_full), (0, y_part, x_part))
    assert held.weights.sum(dim=(1, 2, 3)).tolist() == [256.0, 64.0]
