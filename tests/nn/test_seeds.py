"""Random streams: no two purposes, seeds, epochs, ranks or items share one."""

import itertools

import pytest
import torch

from cxr.detection.samplers import RepeatFactorSampler
from cxr.nn.seeds import PURPOSES, stream_seed
from cxr.ssl.sampler import ShuffleSampler


def test_every_tuple_of_a_grid_has_its_own_seed():
    grid = list(itertools.product(PURPOSES, range(4), range(4), range(3), range(3)))
    seeds = {stream_seed(purpose, seed=s, epoch=e, rank=r, item=i) for purpose, s, e, r, i in grid}
    assert len(seeds) == len(grid)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_sums_trailing_zeros_and_large_integers_do_not_collide():
    """The collisions of seed + epoch and of numpy's SeedSequence([...]) (which pads
    with zeros and splits integers above 2**32 into 32-bit words)."""
    same_sum = [stream_seed("repeat-order", seed=s, epoch=3 - s) for s in range(4)]
    assert len(set(same_sum)) == 4
    assert stream_seed("global", seed=2**32) != stream_seed("global", seed=0, epoch=1)
    assert stream_seed("global", seed=5) != stream_seed("global", seed=0, epoch=5)
    assert stream_seed("augment", seed=0, epoch=3, item=1) != stream_seed(
        "augment", seed=0, epoch=3, rank=1
    )
    assert stream_seed("global", seed=-1) != stream_seed("global", seed=1)
    assert stream_seed("views", seed=7) == stream_seed("views", seed=7, epoch=0, rank=0, item=0)
    with pytest.raises(ValueError, match="unknown stream"):
        stream_seed("wieghts", seed=0)


def test_seed_s_next_epoch_is_not_seed_s_plus_one_this_epoch():
    """With `seed + epoch` the sampler of seed 0 at epoch 1 replayed seed 1 at epoch 0."""
    factors = [1.0 + i / 9 for i in range(40)]
    for seed in range(3):
        later = RepeatFactorSampler(factors, seed=seed, rounding="ceil").epoch_indices(1)
        other = RepeatFactorSampler(factors, seed=seed + 1, rounding="ceil").epoch_indices(0)
        assert len(later) == len(other) and not torch.equal(later, other)
        later_ssl, other_ssl = ShuffleSampler(50, seed=seed), ShuffleSampler(50, seed=seed + 1)
        later_ssl.set_epoch(1)
        assert list(later_ssl) != list(other_ssl)
    augment = {seed for epoch in range(3) for _, seed in epoch_items(factors, 0, epoch)}
    augment_next = {seed for _, seed in epoch_items(factors, 1, 0)}
    assert not augment & augment_next


def epoch_items(factors, seed, epoch):
    sampler = RepeatFactorSampler(factors, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)
