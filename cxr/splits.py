"""The one seeded partition of the images: test split, SSL pool, labeled set.

Every split is a prefix or suffix of one seeded permutation of the sorted
image ids, so it depends only on the set of ids and the seed (never on file
or CSV order), and disjointness follows from construction, not from luck.
"""

from dataclasses import dataclass

import numpy as np


def seeded_permutation(image_ids, seed):
    """The sorted ids, permuted by numpy's PCG64 generator seeded with `seed`."""
    ids = sorted(image_ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def split_test(image_ids, test_fraction, seed):
    """(train_ids, test_ids): the test split is the first round(n * test_fraction)
    of the seeded permutation. Both lists are returned sorted."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    order = seeded_permutation(image_ids, seed)
    num_test = round(len(order) * test_fraction)
    return sorted(order[num_test:]), sorted(order[:num_test])


@dataclass(frozen=True)
class Partition:
    """The SSL pool and the labeled set drawn from the training images."""

    ssl: list
    labeled: list

    @property
    def overlap(self):
        return sorted(set(self.ssl) & set(self.labeled))


def partition(train_ids, ssl_fraction, labeled_fraction=None, seed=0):
    """Split training images into an SSL pool (labels set aside) and a labeled set.

    The SSL pool is the first round(n * ssl_fraction) of the seeded
    permutation, the labeled set its last round(n * labeled_fraction)
    (default 1 - ssl_fraction), so the two are disjoint whenever the fractions
    add up to at most 1, whatever the seed. Both lists are returned sorted.
    """
    labeled_fraction = 1.0 - ssl_fraction if labeled_fraction is None else labeled_fraction
    for name, value in (("ssl_fraction", ssl_fraction), ("labeled_fraction", labeled_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    order = seeded_permutation(train_ids, seed)
    num_ssl, num_labeled = round(len(order) * ssl_fraction), round(len(order) * labeled_fraction)
    return Partition(sorted(order[:num_ssl]), sorted(order[len(order) - num_labeled:]))
