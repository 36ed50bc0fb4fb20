"""The seeded partitions: SSL pool, labeled set and test split."""

import numpy as np
import pytest

from cxr.data.splits import partition, partition_bounds, seeded_permutation, split_test
from cxr.nn.seeds import stream_seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partition_is_disjoint_covers_and_depends_only_on_ids_and_seed(seed):
    ids = [f"img{i:03d}" for i in range(101)]
    split = partition(ids, 0.4, seed=seed)
    assert not set(split.ssl) & set(split.labeled) and split.overlap == []
    assert len(split.ssl) == 40 and len(split.labeled) == 61
    assert set(split.ssl) | set(split.labeled) == set(ids)
    assert partition(list(reversed(ids)), 0.4, seed=seed) == split
    smaller = partition(ids, 0.4, labeled_fraction=0.2, seed=seed)
    assert (
        smaller.ssl == split.ssl
        and set(smaller.labeled) <= set(split.labeled)
        and len(smaller.labeled) == 20
    )
    assert (
        len(partition(ids, 0.6, labeled_fraction=0.6, seed=seed).overlap) == 2 * 61 - 101
    )  # asked-for overlap is visible
    assert partition(ids, 0.4, seed=seed + 10).ssl != split.ssl


PAPER_SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_pool_and_complement_never_collide_and_the_typed_complement_is_the_default():
    """Every training-set size up to 5,000 and every fraction of the paper's sweep:
    the SSL pool ends where the default labeled set starts (disjoint and
    covering), and typing the complement as a number, as a user or the
    experiment does (--labeled-fraction 0.3 after --ssl-fraction 0.7), cuts
    the same set."""
    for n in range(1, 5001):
        for f in PAPER_SWEEP:
            ssl_end, labeled_start = partition_bounds(n, f)
            assert ssl_end == labeled_start, (n, f)
            for typed in (round(1 - f, 6), 1 - f, float(f"{1 - f:.2f}")):
                assert partition_bounds(n, f, typed) == (ssl_end, labeled_start), (n, f, typed)
            smaller = partition_bounds(n, f, round((1 - f) / 2, 6))[1]
            assert labeled_start <= smaller <= n, (n, f)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_the_real_training_set_size_splits_cleanly(fraction):
    """3,515 training images (VinBigData's finding images less a 20% test split)."""
    ids = [f"{i:05d}" for i in range(3515)]
    default = partition(ids, fraction, seed=1)
    typed = partition(ids, fraction, labeled_fraction=round(1 - fraction, 6), seed=1)
    assert default == typed and default.overlap == []
    assert len(default.ssl) + len(default.labeled) == 3515


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_grouped_test_split_keeps_every_patient_on_one_side(seed):
    rng = np.random.default_rng(seed)
    ids = [
        f"{patient:05d}_{visit:03d}" for patient in range(60) for visit in range(rng.integers(1, 6))
    ]
    train, test = split_test(ids, 0.25, seed, group_of=lambda name: name.split("_")[0])
    patients = [{name.split("_")[0] for name in side} for side in (train, test)]
    assert not patients[0] & patients[1] and sorted(train + test) == sorted(ids)
    assert len(patients[1]) == 15  # a quarter of the 60 patients


def test_split_test_fraction_bounds():
    assert (
        split_test(["a", "b", "c", "d"], 0.25, 0)[1] and len(split_test(["a", "b"], 0.0, 0)[1]) == 0
    )
    with pytest.raises(ValueError):
        split_test(["a"], 1.0, 0)


def test_the_ssl_pool_does_not_follow_the_test_split_for_equal_seeds():
    """The test split and the SSL permutation each draw from a stream of their own
    (`cxr.nn.seeds`), so for equal seeds the SSL ranks of the training images are
    unrelated to their test-permutation ranks (|r| under 4 standard errors)."""
    ids = [f"img{i:05d}" for i in range(3000)]
    for seed in (0, 7):
        train, _ = split_test(ids, 0.2, seed)
        test_order = {
            image: n
            for n, image in enumerate(seeded_permutation(ids, stream_seed("test-split", seed=seed)))
        }
        ssl_order = seeded_permutation(train, stream_seed("ssl-split", seed=seed))
        ranks = np.array([test_order[image] for image in ssl_order], dtype=np.float64)
        correlation = np.corrcoef(np.argsort(np.argsort(ranks)), np.arange(len(ranks)))[0, 1]
        assert abs(correlation) < 4 / np.sqrt(len(ranks))
        pool = partition(train, 0.5, seed=seed).ssl
        assert pool == sorted(ssl_order[: len(train) // 2])  # each split from its own stream
        test_order = seeded_permutation(ids, stream_seed("test-split", seed=seed))
        assert split_test(ids, 0.2, seed)[1] == sorted(test_order[:600])


def test_a_share_of_zero_or_one_is_a_share():
    ids = [f"im{i}" for i in range(10)]
    nothing_pooled = partition(ids, 0.0, seed=3)
    assert nothing_pooled.ssl == [] and sorted(nothing_pooled.labeled) == sorted(ids)
    everything_pooled = partition(ids, 1.0, seed=3)
    assert sorted(everything_pooled.ssl) == sorted(ids) and everything_pooled.labeled == []
    with pytest.raises(ValueError, match="ssl_fraction must be in"):
        partition(ids, 1.01)
