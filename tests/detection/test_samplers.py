"""Repeat factors and the distributed repeat-factor sampler."""

import math
from collections import Counter

import pytest

from cxr.detection.samplers import RepeatFactorSampler, repeat_factors


def test_factors_equal_the_lvis_formula_by_hand():
    # 10 images: class 0 on 8 of them, class 1 on 1, image 9 has no box.
    labels = [{0}] * 7 + [{0, 1}] + [set(), set()]
    factors = repeat_factors(labels, threshold=0.4)
    r0 = max(1.0, math.sqrt(0.4 / 0.8))  # = 1
    r1 = max(1.0, math.sqrt(0.4 / 0.1))  # = 2
    assert factors == pytest.approx([r0] * 7 + [max(r0, r1), 1.0, 1.0])
    assert factors[7] == pytest.approx(2.0)


def test_stochastic_epoch_length_averages_to_the_sum_of_factors():
    factors = [1.0, 1.3, 2.5, 1.75, 3.2]
    sampler = RepeatFactorSampler(factors, seed=0)
    lengths = []
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        lengths.append(len(sampler))
    mean = sum(lengths) / len(lengths)
    # std of one epoch's length is at most sqrt(5 * 0.25); 4 standard errors:
    assert mean == pytest.approx(sum(factors), abs=4 * math.sqrt(5 * 0.25 / 2000))
    assert all(sum(map(math.floor, factors)) <= n <= sum(map(math.ceil, factors)) for n in lengths)


def test_each_image_repeats_floor_or_ceil_times():
    factors = [1.0, 1.3, 2.5, 3.0]
    for epoch in range(50):
        counts = Counter(RepeatFactorSampler(factors, seed=epoch).epoch_indices(epoch).tolist())
        for i, f in enumerate(factors):
            assert math.floor(f) <= counts[i] <= math.ceil(f)
    ceil_counts = Counter(RepeatFactorSampler(factors, rounding="ceil").epoch_indices(0).tolist())
    assert [ceil_counts[i] for i in range(4)] == [1, 2, 3, 3]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_and_cover_the_epoch(world):
    factors = [1.0, 1.4, 2.2, 1.0, 3.7, 1.1, 1.0]
    shards = [
        RepeatFactorSampler(factors, num_replicas=world, rank=rank, seed=5) for rank in range(world)
    ]
    for sampler in shards:
        sampler.set_epoch(3)
    epoch_list = shards[0].epoch_indices(3).tolist()
    positions = [list(range(rank, len(epoch_list), world)) for rank in range(world)]
    assert sorted(p for shard in positions for p in shard) == list(
        range(len(epoch_list))
    )  # disjoint, cover
    for rank, sampler in enumerate(shards):
        assert [index for index, _ in sampler] == [epoch_list[p] for p in positions[rank]]
        assert len(sampler) == len(epoch_list) // world
    assert len(epoch_list) % world == 0
    unpadded = RepeatFactorSampler(factors, seed=5).epoch_indices(3).tolist()
    assert epoch_list[: len(unpadded)] == unpadded and len(epoch_list) - len(unpadded) < world


def test_same_epoch_same_order_next_epoch_different():
    factors = [1.0 + i / 10 for i in range(30)]
    a, b = (RepeatFactorSampler(factors, num_replicas=2, rank=1, seed=7) for _ in range(2))
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)


def test_every_position_has_its_own_augmentation_seed_whatever_the_world_size():
    """Ranks never share a seed within an epoch or across epochs, and the item at
    a global position gets the same (index, seed) on 1 process as on 2 or 3."""
    factors = [1.0 + i / 7 for i in range(23)]
    single = RepeatFactorSampler(factors, seed=9)
    single.set_epoch(2)
    by_position = list(single)
    for world in (2, 3):
        seen = []
        for rank in range(world):
            sampler = RepeatFactorSampler(factors, num_replicas=world, rank=rank, seed=9)
            sampler.set_epoch(2)
            items = list(sampler)
            seen += [seed for _, seed in items]
            for j, item in enumerate(items):
                if rank + j * world < len(by_position):
                    assert item == by_position[rank + j * world]
        assert len(set(seen)) == len(seen)
    single.set_epoch(3)
    assert not {seed for _, seed in single} & {seed for _, seed in by_position}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rounding"):
        RepeatFactorSampler([1.0], rounding="floor")
    with pytest.raises(ValueError, match="rank 2"):
        RepeatFactorSampler([1.0], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=">= 1"):
        RepeatFactorSampler([0.5])


@pytest.mark.parametrize("world, batch", [(1, 4), (2, 3), (3, 2)])
def test_every_shard_is_whole_batches_so_no_batch_has_one_image(world, batch):
    factors = [1.0 + i / 11 for i in range(17)]
    for epoch in range(5):
        shards = []
        for rank in range(world):
            sampler = RepeatFactorSampler(
                factors, num_replicas=world, rank=rank, seed=1, batch_size=batch
            )
            sampler.set_epoch(epoch)
            shards.append([index for index, _ in sampler])
        assert all(len(shard) % batch == 0 and len(shard) == len(shards[0]) for shard in shards)
        unpadded = RepeatFactorSampler(factors, seed=1).epoch_indices(epoch).tolist()
        flat = [shards[p % world][p // world] for p in range(len(shards[0]) * world)]
        assert flat[: len(unpadded)] == unpadded  # padding only appends the list's head
        assert len(flat) - len(unpadded) < world * batch
