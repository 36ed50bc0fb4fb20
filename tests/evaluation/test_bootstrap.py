"""The paired bootstrap: exact cases, the normal-theory width, and seed variance."""

import numpy as np
import pytest

from cxr.evaluation.bootstrap import STANDARD_NORMAL, bias_corrected_interval, paired_bootstrap


def weighted_mean(values, counts):
    return {"mean": float(np.dot(counts, values) / counts.sum())}


def test_identical_arms_differ_by_exactly_zero_and_a_shift_by_exactly_the_shift():
    values = np.random.default_rng(0).normal(size=50)
    same = paired_bootstrap(
        [values], [values.copy()], num_images=50, statistic=weighted_mean, replicates=200
    )["mean"]["difference"]
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()
    shifted = paired_bootstrap(
        [values + 0.3], [values], num_images=50, statistic=weighted_mean, replicates=200
    )["mean"]["difference"]
    assert (
        shifted.low == pytest.approx(0.3)
        and shifted.high == pytest.approx(0.3)
        and shifted.excludes_zero()
    )


def test_interval_of_a_mean_has_the_normal_theory_width():
    """n = 400 values of sd 1: a 90% interval is about 2 x 1.645 / sqrt(400) = 0.164 wide."""
    values = np.random.default_rng(1).normal(size=400)
    result = paired_bootstrap(
        [values], [np.zeros(400)], num_images=400, statistic=weighted_mean, replicates=4000
    )["mean"]
    first = result["first"]
    assert first.estimate == pytest.approx(values.mean())
    assert first.high - first.low == pytest.approx(2 * 1.645 * values.std() / 20, rel=0.1)
    assert first.low < values.mean() < first.high
    assert result["second"].low == result["second"].high == 0.0


@pytest.mark.parametrize("bias", [0.0, 0.1, -0.15])
def test_bias_corrected_interval_of_shifted_normal_replicates(bias):
    """Replicates N(estimate + b, s^2), s = 0.2: the interval is estimate - b -+ 1.645 s."""
    estimate, spread = 1.0, 0.2
    quantiles = (np.arange(20000) + 0.5) / 20000
    replicates = (
        estimate + bias + spread * np.array([STANDARD_NORMAL.inv_cdf(q) for q in quantiles])
    )
    interval = bias_corrected_interval(replicates, estimate, level=0.9)
    assert interval.estimate == estimate
    assert interval.low == pytest.approx(estimate - bias - 1.645 * spread, abs=2e-3)
    assert interval.high == pytest.approx(estimate - bias + 1.645 * spread, abs=2e-3)


def test_seeds_that_disagree_widen_the_interval_to_both_signs():
    """Seed 0 says +1 on every image, seed 1 says -1: resampling the seeds
    gives -1, 0 or +1, so the interval spans both signs although each seed
    alone is certain."""
    ones = np.ones(30)
    result = paired_bootstrap(
        [ones, -ones],
        [np.zeros(30), np.zeros(30)],
        num_images=30,
        statistic=weighted_mean,
        replicates=1000,
    )["mean"]["difference"]
    assert result.estimate == 0.0 and (result.low, result.high) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_bootstrap([ones], [], num_images=30, statistic=weighted_mean)
