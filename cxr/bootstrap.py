"""Paired bootstrap intervals for comparing two arms (SSL vs random init) that
were evaluated on the same test images, over one or several training seeds.

Each replicate draws the training seeds with replacement (when there are
several) and the test images with replacement, evaluates both arms of every
drawn seed on the same drawn images, and records each arm's mean over the
drawn seeds and the mean of the paired differences. The estimate is the
value on the real test set averaged over the real seeds. Resampling both
sources makes the interval account for test-set sampling and training
randomness; with one seed it covers the test images only, so the report
names the number of seeds beside it.

The interval is the bias-corrected percentile interval (Efron & Tibshirani,
1993, "An Introduction to the Bootstrap", sec. 14.3, BCa without the
acceleration): with z0 = Phi^-1(share of replicates below the estimate), the
Phi(2 z0 -+ z) percentiles of the replicates, z = Phi^-1((1 + level) / 2).
For replicates spread as N(estimate + b, s^2) that is estimate - b -+ z s:
by the bootstrap principle, the estimate is as biased against the truth as
the replicates are against the estimate. mAP has such a bias: a small test
set leaves out or thins rare classes, whose AP is low, so a resample's mAP
runs about a tenth above the full set's, as the full set's runs above the
population's. With no bias (z0 = 0) it is the plain (1 - level) / 2 and
(1 + level) / 2 percentiles.

`statistic(run, counts)` returns a dict of numbers (e.g. mAP and mAP50) of one
run (one arm, one seed) on the test images taken counts[i] times each.
"""

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self):
        return self.low > 0 or self.high < 0


def paired_bootstrap(first, second, *, num_images, statistic, replicates=2000, level=0.9, seed=0):
    """Paired bootstrap intervals of two arms and of their difference.

    Args:
        first, second: one run per training seed each, paired by position
            (anything `statistic` takes).
        num_images: the number of test images both were evaluated on.
        statistic: (run, counts) -> {metric: value or None}, counts being (num_images,)
            how often each test image is drawn.
        replicates, level, seed: the number of resamples, the interval's
            coverage, and the seed of the resampling.
    Returns:
        {metric: {"first": Interval, "second": Interval, "difference": Interval}}.
    """
    if len(first) != len(second) or not first:
        raise ValueError("both arms need the same, non-zero number of runs (one per seed)")
    rng = np.random.default_rng(seed)
    ones = np.ones(num_images, dtype=np.int64)
    real_first = [statistic(run, ones) for run in first]
    real_second = [statistic(run, ones) for run in second]
    names = list(real_first[0])
    draws = {name: {"first": [], "second": [], "difference": []} for name in names}
    for _ in range(replicates):
        seeds = rng.integers(0, len(first), len(first)) if len(first) > 1 else [0]
        counts = np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
        cache = {}
        for s in set(seeds):
            cache[s] = statistic(first[s], counts), statistic(second[s], counts)
        for name in names:
            pairs = [(cache[s][0][name], cache[s][1][name]) for s in seeds]
            if any(a is None or b is None for a, b in pairs):
                continue  # the drawn images hold no box at all
            draws[name]["first"].append(np.mean([a for a, _ in pairs]))
            draws[name]["second"].append(np.mean([b for _, b in pairs]))
            draws[name]["difference"].append(np.mean([a - b for a, b in pairs]))
    summary = {}
    for name in names:
        estimates = {
            "first": np.mean([r[name] for r in real_first]),
            "second": np.mean([r[name] for r in real_second]),
        }
        estimates["difference"] = estimates["first"] - estimates["second"]
        summary[name] = {
            arm: bias_corrected_interval(np.asarray(values), float(estimates[arm]), level)
            for arm, values in draws[name].items()
        }
    return summary


def bias_corrected_interval(replicates, estimate, level):
    """The bias-corrected percentile interval of `replicates` around `estimate`."""
    below = np.mean(replicates < estimate) + 0.5 * np.mean(replicates == estimate)
    below = min(max(below, 0.5 / len(replicates)), 1 - 0.5 / len(replicates))
    z0, z = STANDARD_NORMAL.inv_cdf(below), STANDARD_NORMAL.inv_cdf((1 + level) / 2)
    tails = [100 * STANDARD_NORMAL.cdf(2 * z0 - z), 100 * STANDARD_NORMAL.cdf(2 * z0 + z)]
    return Interval(estimate, *map(float, np.percentile(replicates, tails)))
