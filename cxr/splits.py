"""The one seeded partition of the images: test split, SSL pool, labeled set.

Every split is a prefix or suffix of one seeded permutation of the sorted
image ids, so it depends only on the set of ids and the seed (never on file
or CSV order), and disjointness follows from construction, not from luck.
"""

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
