"""Paired bootstrap intervals for comparing two arms (SSL vs random init) that
were evaluated on the same test images, over one or several training seeds.

Each replicate draws the training seeds with replacement (when there are
several) and the test images with replacement (Efron & Tibshirani, 1993,
the percentile bootstrap), evaluates both arms of every drawn seed on the
same drawn images, and records each arm's mean over the drawn seeds and the
mean of the paired differences. The interval is the (1 - level) / 2 and
(1 + level) / 2 percentiles of the replicates; the estimate is the value on
the real test set averaged over the real seeds. Resampling both sources
makes the interval account for test-set sampling and training randomness;
with one seed it covers the test images only, and says so by its width
alone, so the report names the number of seeds beside it.

`statistic(run, counts)` returns a dict of numbers (e.g. mAP and mAP50) of one
run (one arm, one seed) on the test images taken counts[i] times each.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self):
        return self.low > 0 or self.high < 0


def paired_bootstrap(first, second, num_images, statistic, replicates=2000, level=0.9, seed=0):
    """{metric: {"first", "second", "difference": Interval}} for two arms.

    first, second: one run per training seed, paired by position."""
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
                continue                         # the drawn images hold no box at all
            draws[name]["first"].append(np.mean([a for a, _ in pairs]))
            draws[name]["second"].append(np.mean([b for _, b in pairs]))
            draws[name]["difference"].append(np.mean([a - b for a, b in pairs]))
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    summary = {}
    for name in names:
        estimates = {"first": np.mean([r[name] for r in real_first]),
                     "second": np.mean([r[name] for r in real_second])}
        estimates["difference"] = estimates["first"] - estimates["second"]
        summary[name] = {arm: Interval(float(estimates[arm]), *map(float, np.percentile(values, tails)))
                         for arm, values in draws[name].items()}
    return summary
