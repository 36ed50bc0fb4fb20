"""The mean over ranks on two real processes (gloo); the gather that keeps gradients is
tested through NT-Xent (tests/ssl/test_simclr.py)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port

from cxr.nn.collectives import all_reduce_mean, world_size


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        mine = torch.tensor([1.0, -2.0]) * (rank + 1) + rank  # rank 0: (1, -2); rank 1: (3, -3)
        mean = all_reduce_mean(mine.requires_grad_())
        torch.save({"mean": mean, "size": world_size(), "mine": mine}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_the_mean_over_two_ranks_is_their_average_and_detached(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "r")), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"r.{rank}") for rank in (0, 1)]
    for result in results:
        torch.testing.assert_close(result["mean"], torch.tensor([2.0, -2.5]))
        assert result["size"] == 2
    assert not results[0]["mean"].requires_grad  # a figure to report, not a loss to train
    torch.testing.assert_close(results[1]["mine"], torch.tensor([3.0, -3.0]))  # not modified
