"""Intervals for two arms (SSL vs random init) trained with K seeds and evaluated on the
same N test images, and for their difference.

The quantity estimated is an arm's metric expected over training seeds and
test images. Its estimate is the mean over the K seeds of the metric on the
whole test set; its variance has two parts (docs/design.md derives them):

    var = s^2 / K + v

s^2, the sample variance over the seeds of the per-seed values (for the
difference: of the per-seed paired differences, so what every seed shares
cancels), and v, the variance over test-image resamples of the K-seed mean
(a paired bootstrap over the images, every seed kept, so the images' share
of the variance is counted once however many seeds there are; scaled by
N / (N - 1) to be unbiased). The interval is estimate +- t * sqrt(var), t
the Student quantile at the Welch-Satterthwaite degrees of freedom
(s^2/K + v)^2 / ((s^2/K)^2 / (K - 1) + v^2 / d), d those of v (N - 1
images and R resamples): with three seeds whose spread dominates, the t(2)
quantile (2.92 for 90%); with no seed spread, about the normal's. Its coverage and
the rate of verdicts it gives when there is no effect are measured by
studies/calibrate_intervals.py on simulated experiments with a known truth.
`statistic(run, counts)` returns a dict of numbers of one run on the test
images taken counts[i] times.
"""

import math
from dataclasses import dataclass

import numpy as np

from cxr.nn.seeds import stream_seed


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    df: float  # degrees of freedom of its quantile (inf: the normal's)

    def excludes_zero(self):
        return self.low > 0 or self.high < 0


def seeds_and_images_interval(values, image_variance, level, *, image_df=math.inf):
    """The interval of the mean of `values` (one per training seed) whose variance is
    var(values) / K + image_variance, at the Welch-Satterthwaite degrees of freedom of
    the two parts (K - 1 and image_df)."""
    values = np.asarray(values, dtype=np.float64)
    estimate, seeds = float(values.mean()), len(values)
    seed_part = float(values.var(ddof=1)) / seeds if seeds > 1 else 0.0
    variance = seed_part + image_variance
    parts = (seed_part**2 / (seeds - 1) if seeds > 1 else 0.0) + image_variance**2 / image_df
    df = variance**2 / parts if parts > 0 else math.inf
    half = student_t_quantile((1 + level) / 2, df) * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, df)


def paired_intervals(
    first, second, *, num_images, statistic, replicates=1000, level=0.9, seed=0, track=iter
):
    """Intervals of two arms and of their difference (module docstring).

    Args:
        first, second: one run per training seed each, paired by position
            (anything `statistic` takes).
        num_images: the number of test images both were evaluated on.
        statistic: (run, counts) -> {metric: value or None}, counts being (num_images,)
            how often each test image is drawn.
        replicates, level, seed: image resamples, the coverage, the resampling's seed.
        track: wraps the loop over the replicates (e.g. to print progress lines).
    Returns:
        {metric: {"first": Interval, "second": Interval, "difference": Interval}}.
    """
    if len(first) != len(second) or not first:
        raise ValueError("both arms need the same, non-zero number of runs (one per seed)")
    ones = np.ones(num_images, dtype=np.int64)
    full = [(statistic(a, ones), statistic(b, ones)) for a, b in zip(first, second)]
    rng = np.random.default_rng(stream_seed("bootstrap", seed=seed))
    draws = {name: [] for name in full[0][0]}
    for _ in track(range(replicates)):
        counts = np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
        resampled = [(statistic(a, counts), statistic(b, counts)) for a, b in zip(first, second)]
        for name, kept in draws.items():
            pairs = [(a[name], b[name]) for a, b in resampled]
            if all(a is not None and b is not None for a, b in pairs):  # else: no box drawn
                kept.append(np.mean(pairs, axis=0))  # (mean over seeds: first, second)
    # The bootstrap's plug-in variance of a mean of N images is (N - 1) / N of the
    # unbiased one. It is estimated from N images and R resamples: its relative
    # variance is 2 / (N - 1) + 2 / (R - 1), its degrees of freedom 2 over that.
    unbiased = num_images / max(num_images - 1, 1)
    image_df = 1 / (1 / max(num_images - 1, 1) + 1 / max(replicates - 1, 1))
    summary = {}
    for name, kept in draws.items():
        per_seed = np.array([(a[name], b[name]) for a, b in full], dtype=np.float64)  # (K, 2)
        kept = np.array(kept).reshape(-1, 2)
        image_variance = {
            "first": unbiased * kept[:, 0].var(ddof=1),
            "second": unbiased * kept[:, 1].var(ddof=1),
            "difference": unbiased * (kept[:, 0] - kept[:, 1]).var(ddof=1),
        }
        values = {
            "first": per_seed[:, 0],
            "second": per_seed[:, 1],
            "difference": per_seed[:, 0] - per_seed[:, 1],
        }
        summary[name] = {
            arm: seeds_and_images_interval(
                values[arm], float(image_variance[arm]), level, image_df=image_df
            )
            for arm in values
        }
    return summary


def student_t_quantile(p, df):
    """The p-quantile (p in (0, 1)) of Student's t with df > 0 degrees of freedom
    (inf: the normal's), by bisection on its distribution function."""
    if math.isinf(df):
        return _normal_quantile(p)
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while _student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def _normal_quantile(p):
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if 0.5 * math.erfc(-middle / math.sqrt(2)) < p else (low, middle)
    return (low + high) / 2


def _student_t_cdf(t, df):
    """P(T <= t) for t >= 0: 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t^2)."""
    return 1 - 0.5 * _regularized_incomplete_beta(df / (df + t * t), df / 2, 0.5)


def _regularized_incomplete_beta(x, a, b):
    """I_x(a, b) by its continued fraction (Lentz's method), on the side where it
    converges (x < (a + 1) / (a + b + 2)), else by the symmetry I_x(a, b) = 1 - I_{1-x}(b, a)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1 - _regularized_incomplete_beta(1 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - _log_beta(a, b)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) * fraction


def _log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
