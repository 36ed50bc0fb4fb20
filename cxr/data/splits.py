"""The seeded partitions of the images: test split, SSL pool, labeled set.

Every split is a prefix or suffix of a seeded permutation of the sorted
image ids, so it depends only on the set of ids and the seed (never on file
or CSV order), and disjointness follows from construction, not from luck:
the SSL pool and the labeled set are cut from the two ends of one
permutation by one rounding rule (`cut_position`). The test split and the
SSL permutation draw from streams of their own (`cxr.nn.seeds`), so equal
seeds do not make the SSL pool follow the test split.
"""

import math
from dataclasses import dataclass

import numpy as np

from cxr.nn.seeds import stream_seed


def seeded_permutation(image_ids, seed):
    """The sorted ids, permuted by numpy's PCG64 generator seeded with `seed` (a
    stream's seed, `cxr.nn.seeds.stream_seed`)."""
    ids = sorted(image_ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def split_test(image_ids, test_fraction, seed, group_of=None):
    """(train_ids, test_ids): the test split is the first round(n * test_fraction)
    of the seeded permutation. Both lists are returned sorted.

    With group_of (image id -> group, e.g. its patient) the groups are permuted
    and the test split takes the first round(groups * test_fraction) of them
    whole, so no group has images on both sides."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if group_of is None:
        order = seeded_permutation(image_ids, stream_seed("test-split", seed=seed))
        num_test = round(len(order) * test_fraction)
        return sorted(order[num_test:]), sorted(order[:num_test])
    _, test_groups = split_test({group_of(i) for i in image_ids}, test_fraction, seed)
    test_groups = set(test_groups)
    return (
        sorted(i for i in image_ids if group_of(i) not in test_groups),
        sorted(i for i in image_ids if group_of(i) in test_groups),
    )


@dataclass(frozen=True)
class Partition:
    """The SSL pool and the labeled set drawn from the training images."""

    ssl: list
    labeled: list

    @property
    def overlap(self):
        return sorted(set(self.ssl) & set(self.labeled))


def cut_position(n, fraction):
    """Where a fraction of n items ends: floor(n * fraction + 1/2), the fraction
    first rounded to 9 decimals so that 1 - (1 - f) cuts exactly where f does."""
    return math.floor(n * round(fraction, 9) + 0.5)


def partition_bounds(n, ssl_fraction, labeled_fraction=None):
    """(ssl_end, labeled_start): the SSL pool is order[:ssl_end], the labeled
    set order[labeled_start:].

    Both are cut positions of one rule, and cut_position is non-decreasing in
    the fraction, so ssl_end <= labeled_start (disjoint sets) whenever
    ssl_fraction + labeled_fraction <= 1, and labeled_fraction = 1 -
    ssl_fraction gives exactly the complement, the default."""
    labeled_fraction = 1.0 - ssl_fraction if labeled_fraction is None else labeled_fraction
    for name, value in (("ssl_fraction", ssl_fraction), ("labeled_fraction", labeled_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    return cut_position(n, ssl_fraction), cut_position(n, 1.0 - labeled_fraction)


def partition(train_ids, ssl_fraction, labeled_fraction=None, seed=0):
    """Split training images into an SSL pool (labels set aside) and a labeled set.

    The SSL pool is a prefix of the seeded permutation and the labeled set a
    suffix (`partition_bounds`): disjoint whenever the fractions add up to at
    most 1, whatever the seed and the number of images; a larger
    labeled_fraction overlaps the pool, visibly in `Partition.overlap`. Both
    lists are returned sorted.
    """
    order = seeded_permutation(train_ids, stream_seed("ssl-split", seed=seed))
    ssl_end, labeled_start = partition_bounds(len(order), ssl_fraction, labeled_fraction)
    return Partition(sorted(order[:ssl_end]), sorted(order[labeled_start:]))
