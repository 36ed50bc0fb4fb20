"""SimCLR's order of the SSL pool: each epoch its own permutation, cut into equal,
disjoint shards as DistributedSampler does."""

import pytest

from cxr.ssl.sampler import ShuffleSampler


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ssl_shards_are_disjoint_equal_and_drop_the_remainder(world):
    shards = [ShuffleSampler(23, num_replicas=world, rank=rank, seed=4) for rank in range(world)]
    for shard in shards:
        shard.set_epoch(2)
    items = [list(shard) for shard in shards]
    flat = [i for shard in items for i in shard]
    assert len(set(flat)) == len(flat) == (23 // world) * world
    assert all(len(shard) == 23 // world == len(sampler) for shard, sampler in zip(items, shards))
    whole = ShuffleSampler(23, seed=4)
    whole.set_epoch(2)
    assert [items[p % world][p // world] for p in range(len(flat))] == list(whole)[: len(flat)]


def test_every_epoch_draws_its_own_order_and_an_epoch_always_the_same():
    sampler = ShuffleSampler(50, seed=4)
    orders = []
    for epoch in (0, 1, 2, 1):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[1] == orders[3] and sorted(orders[0]) == list(range(50))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    other_seed = ShuffleSampler(50, seed=5)
    other_seed.set_epoch(1)
    assert list(other_seed) != orders[1]
