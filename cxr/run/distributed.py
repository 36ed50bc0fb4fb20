"""torchrun set-up and teardown, and every collective cxr uses.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) a
process joins the group: nccl on CUDA, gloo on CPU; launched plainly it runs
alone and every collective here is the identity. The process's rank and
world size are in its `DistInfo`.

`agree` makes every process reach the main process's decision;
`gather_to_main` and `inference_shard` make evaluation count every image
exactly once. The method's own collectives (gathered negatives, global
BatchNorm) are in `cxr.nn.collectives`.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cxr.run.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(device=None):
    """Join the torchrun process group if launched by torchrun; pick the device.

    device: 'cpu', 'cuda', 'cuda:N' or None (CUDA if available). Under torchrun
    with CUDA each process takes GPU LOCAL_RANK; one process honours cuda:N.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if use_cuda and world_size == 1 and device is not None and ":" in str(device):
        device = torch.device(device)
    else:
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        _join_process_group("nccl" if use_cuda else "gloo", rank, world_size)
    return DistInfo(rank, world_size, local_rank, device)


def _join_process_group(backend, rank, world_size):
    """init_process_group, through a store key prefix of its own for each restart.

    torchrun --max-restarts restarts the whole group on the same agent store,
    where the keys the previous attempt's ranks wrote (their addresses) are
    still present: a restarted rank can read a dead peer's address and fail to
    connect (seen with gloo here; pytorch/pytorch#167288 with nccl). Joining
    under a prefix per attempt (TORCHELASTIC_RESTART_COUNT) keeps them apart."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend=backend)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=dist.default_pg_timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(f"cxr/attempt_{attempt}", store),
        rank=rank,
        world_size=world_size,
    )


def teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device=None):
    """`with process_group(args.device) as dist_info:` what every script's main
    runs in: init_distributed on entry, teardown on exit, errors included."""
    try:
        yield init_distributed(device)
    finally:
        teardown()


def agree(dist_info, decide):
    """decide() on the main process, its result returned there (None elsewhere); a
    UserError it raises is raised on every process, so no rank waits for a peer
    that stopped (the other ranks wait here until the main process has decided)."""
    result, message = None, None
    if dist_info.is_main:
        try:
            result = decide()
        except UserError as error:
            message = str(error)
    if dist_info.world_size > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise UserError(message)
    return result


def gather_to_main(items, dist_info):
    """Every rank's list, concatenated in rank order, on rank 0 (None elsewhere)."""
    if dist_info.world_size == 1:
        return items
    gathered = [None] * dist_info.world_size if dist_info.is_main else None
    dist.gather_object(items, gathered, dst=0)
    return [item for part in gathered for item in part] if dist_info.is_main else None


def inference_shard(num_items, dist_info):
    """Contiguous, exact shard of range(num_items) for this rank: no padding and no
    duplicates, shards differ in size by at most one (evaluation must count
    every image exactly once)."""
    rank, world = dist_info.rank, dist_info.world_size
    return range(num_items * rank // world, num_items * (rank + 1) // world)
