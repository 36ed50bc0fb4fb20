"""Paired bootstrap intervals for two arms (SSL vs random init) evaluated on the
same test images, over one or several training seeds.

Each replicate draws the training seeds and the test images with
replacement, evaluates both arms of every drawn seed on the same drawn
images, and records each arm's mean and the mean paired difference; the
interval so covers test-set sampling and training randomness (with one seed,
the test images only). It is the bias-corrected percentile interval (Efron
& Tibshirani, 1993, sec. 14.3: BCa without the acceleration), because mAP's
replicates run above the full set's value (a resample thins rare, low-AP
classes); docs/design.md gives the derivation. `statistic(run, counts)`
returns a dict of numbers of one run on the test images taken counts[i] times.
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


def paired_bootstrap(
    first, second, *, num_images, statistic, replicates=2000, level=0.9, seed=0, track=iter
):
    """Paired bootstrap intervals of two arms and of their difference.

    Args:
        first, second: one run per training seed each, paired by position
            (anything `statistic` takes).
        num_images: the number of test images both were evaluated on.
        statistic: (run, counts) -> {metric: value or None}, counts being (num_images,)
            how often each test image is drawn.
        replicates, level, seed: the number of resamples, the interval's
            coverage, and the seed of the resampling.
        track: wraps the loop over the replicates (e.g. to print progress lines).
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
    for _ in track(range(replicates)):
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
