"""Do the report's intervals keep their promise with few training seeds? A simulation
with a known truth.

    python studies/calibrate_intervals.py [--experiments 1000] [--replicates 200]

Each simulated experiment has K training seeds and N = 50 test images; the value
of image i for the run of arm a (1: SSL, 0: random) with seed s is

    y = base + sd_seed * z[a, s] + sd_image * u[i] + a * (effect + sd_pair * v[i])
        + sd_noise * e[a, s, i]

with z, u, v, e standard normal: a seed's effect on its run, an image's
difficulty (shared by the arms), the arm effect's variation over images, and
noise. A run's metric on a multiset of the images is their weighted mean. The
truth is the arms' difference expected over seeds and images, `effect`. For
each regime and K the table gives how often the 90% interval of the difference
covers the truth (effect 0.2), and how often it says "Yes" or "No" (excludes
zero) when the effect is 0, for cxr's interval (`cxr.evaluation.intervals`)
and for the bias-corrected percentile bootstrap over seeds and images that
it replaced.
"""

import argparse
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.evaluation.intervals import paired_intervals  # noqa: E402

NUM_IMAGES = 50
LEVEL = 0.9
REGIMES = {
    # name: (sd_seed, sd_image, sd_pair, sd_noise)
    "no seed variance": (0.0, 1.0, 0.5, 0.3),
    "seeds and images": (0.1, 1.0, 0.5, 0.3),
    "seed-dominated": (0.5, 0.3, 0.05, 0.1),
}


def simulate(rng, seeds, effect, regime):
    """(SSL runs, random runs): each a (N,) array of per-image values."""
    sd_seed, sd_image, sd_pair, sd_noise = REGIMES[regime]
    difficulty = sd_image * rng.standard_normal(NUM_IMAGES)
    pair = effect + sd_pair * rng.standard_normal(NUM_IMAGES)

    def run(arm):
        noise = sd_noise * rng.standard_normal(NUM_IMAGES)
        return sd_seed * rng.standard_normal() + difficulty + arm * pair + noise

    return [run(1) for _ in range(seeds)], [run(0) for _ in range(seeds)]


def weighted_mean(values, counts):
    return {"mean": float(np.dot(counts, values) / counts.sum())}


def ours(first, second, replicates, seed):
    interval = paired_intervals(
        first,
        second,
        num_images=NUM_IMAGES,
        statistic=weighted_mean,
        replicates=replicates,
        level=LEVEL,
        seed=seed,
    )["mean"]["difference"]
    return interval.low, interval.high


def previous(first, second, replicates, seed):
    """The replaced interval: seeds and images both resampled with replacement, the
    bias-corrected percentile interval of the mean paired difference."""
    rng = np.random.default_rng(seed)
    estimate = np.mean([a.mean() - b.mean() for a, b in zip(first, second)])
    draws = []
    for _ in range(replicates):
        seeds = rng.integers(0, len(first), len(first))
        counts = np.bincount(rng.integers(0, NUM_IMAGES, NUM_IMAGES), minlength=NUM_IMAGES)
        draws.append(np.mean([(first[s] - second[s]) @ counts / NUM_IMAGES for s in seeds]))
    draws, normal = np.asarray(draws), NormalDist()
    below = np.mean(draws < estimate) + 0.5 * np.mean(draws == estimate)
    below = min(max(below, 0.5 / replicates), 1 - 0.5 / replicates)
    z0, z = normal.inv_cdf(below), normal.inv_cdf((1 + LEVEL) / 2)
    tails = [100 * normal.cdf(2 * z0 - z), 100 * normal.cdf(2 * z0 + z)]
    return tuple(np.percentile(draws, tails))


def calibrate(method, *, regime, seeds, experiments, replicates, seed=0):
    """(coverage of the true difference, share of verdicts when there is none)."""
    rng = np.random.default_rng(seed)
    covered = verdicts = 0
    for number in range(experiments):
        low, high = method(*simulate(rng, seeds, 0.2, regime), replicates, number)
        covered += low <= 0.2 <= high
        low, high = method(*simulate(rng, seeds, 0.0, regime), replicates, number)
        verdicts += low > 0 or high < 0
    return covered / experiments, verdicts / experiments


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seeds", default="3,5,10", help="training seeds per experiment")
    parser.add_argument("--ours-only", action="store_true", help="leave out the previous interval")
    args = parser.parse_args()
    print(
        "| regime | seeds | coverage (cxr) | verdicts without effect (cxr) | coverage (previous) "
        "| verdicts without effect (previous) |\n|---|---|---|---|---|---|"
    )
    for regime in REGIMES:
        for seeds in map(int, args.seeds.split(",")):
            options = dict(regime=regime, seeds=seeds, experiments=args.experiments)
            cxr = calibrate(ours, replicates=args.replicates, **options)
            old = (
                (np.nan, np.nan)
                if args.ours_only
                else calibrate(previous, replicates=args.replicates, **options)
            )
            print(
                f"| {regime} | {seeds} | {cxr[0]:.3f} | {cxr[1]:.3f} | {old[0]:.3f} | "
                f"{old[1]:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
