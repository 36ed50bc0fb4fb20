"""The collectives' single-process behaviour and the exact inference shards."""

import pytest
import torch

from cxr.nn.collectives import all_reduce_mean
from cxr.run.distributed import DistInfo, gather_to_main, inference_shard


@pytest.mark.parametrize("items, world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_inference_shards_are_exact(items, world):
    shards = [
        list(inference_shard(items, DistInfo(rank, world, 0, torch.device("cpu"))))
        for rank in range(world)
    ]
    assert [i for shard in shards for i in shard] == list(range(items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_one_process_collectives_are_the_identity():
    alone = DistInfo(0, 1, 0, torch.device("cpu"))
    assert gather_to_main([3, 1], alone) == [3, 1]
    values = torch.tensor([1.5, -2.0])
    assert torch.equal(all_reduce_mean(values), values)
