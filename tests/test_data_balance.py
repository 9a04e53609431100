"""Class weights and the class-rebalancing sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comp.data.balance import class_weights, make_sampler
from comp.errors import ConfigError, DataError

LABELS = np.array([0] * 90 + [1] * 9 + [2] * 1)  # 90 / 9 / 1


def test_none_and_explicit_list():
    assert class_weights(LABELS, 3, None) is None
    weights = class_weights(LABELS, 3, [1.2, 1.0, 3])
    assert weights.dtype == torch.float32 and weights.tolist() == pytest.approx([1.2, 1.0, 3.0])


def test_explicit_list_must_match_the_classes():
    with pytest.raises(ConfigError, match=r"train.class_weights: 2 weights given for 3 classes"):
        class_weights(LABELS, 3, [1.0, 2.0])
    with pytest.raises(ConfigError, match="train.class_weights"):
        class_weights(LABELS, 3, [1.0, -2.0, 1.0])


def test_balanced_is_sklearns_formula():
    weights = class_weights(LABELS, 3, "balanced")
    assert weights.tolist() == pytest.approx([100 / (3 * 90), 100 / (3 * 9), 100 / (3 * 1)], rel=1e-6)
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    expected = sklearn.compute_class_weight("balanced", classes=np.arange(3), y=LABELS)
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_power_interpolates_and_averages_one_over_samples():
    counts = np.array([90, 9, 1])
    assert class_weights(LABELS, 3, 0.0).tolist() == pytest.approx([1, 1, 1])
    assert class_weights(LABELS, 3, 1.0).tolist() == pytest.approx(class_weights(LABELS, 3, "balanced").tolist())
    half = class_weights(LABELS, 3, 0.5).numpy()
    assert (counts * half).sum() / counts.sum() == pytest.approx(1.0)
    assert half[1] / half[0] == pytest.approx(np.sqrt(10)) and half[2] / half[1] == pytest.approx(3.0)


def test_absent_class_and_bad_specs():
    weights = class_weights(np.array([0, 0, 1]), 3, "balanced")
    assert weights.tolist() == pytest.approx([3 / 6, 3 / 3, 1.0])
    with pytest.raises(ConfigError, match="must be >= 0"):
        class_weights(LABELS, 3, -1.0)
    with pytest.raises(ConfigError, match="train.class_weights"):
        class_weights(LABELS, 3, "inverse")
    with pytest.raises(DataError, match="label 3 is outside 0..2"):
        class_weights(np.array([0, 3]), 3, "balanced")


def _class_shares(strength: float, draws: int = 30_000, seed: int = 0) -> np.ndarray:
    sampler = make_sampler(LABELS, strength, num_samples=draws, generator=torch.Generator().manual_seed(seed))
    drawn = LABELS[np.fromiter(sampler, dtype=np.int64)]
    return np.bincount(drawn, minlength=3) / draws


def test_strength_zero_is_natural_order():
    assert make_sampler(LABELS, 0.0) is None


def test_strength_one_is_uniform_over_classes():
    np.testing.assert_allclose(_class_shares(1.0), [1 / 3] * 3, atol=0.02)


def test_strength_half_is_in_between():
    shares = _class_shares(0.5)
    expected = np.sqrt([90, 9, 1]) / np.sqrt([90, 9, 1]).sum()  # ~0.70 / 0.22 / 0.07
    np.testing.assert_allclose(shares, expected, atol=0.02)
    assert 0.01 < shares[2] < 1 / 3 and 1 / 3 < shares[0] < 0.9


def test_sampler_defaults_and_reproducibility():
    sampler = make_sampler(LABELS, 1.0)
    assert len(sampler) == len(LABELS) and sampler.replacement
    assert np.array_equal(_class_shares(1.0, 500, seed=4), _class_shares(1.0, 500, seed=4))
    with pytest.raises(ConfigError, match="train.sampler_strength"):
        make_sampler(LABELS, -0.5)
