"""torchrun set-up and teardown, and the collectives the training loops need.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) we join
a process group: nccl on CUDA, gloo on CPU. Launched plainly we run as a single
process and every collective here is the identity.

`gather_with_grad` is the all-gather SimCLR needs for negatives from every
rank. Its backward SUMS the gradients that all ranks computed for each shard
and returns each rank its own: rank k's loss depends on rank j's embeddings,
so rank j must receive that gradient too. (A plain all_gather has no
gradient; several public implementations return only the local slice of the
local gradient, silently dropping the cross-rank terms.) DDP then averages
parameter gradients over ranks, which makes 2 processes with N images each
equal to 1 process with 2N images. `all_reduce_sum_with_grad` is the same
idea for a sum (the batch statistics of `cxr.global_batchnorm`).
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if world_size() > 1 else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(shards)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(tensor):
    """Concatenate `tensor` (same shape on every rank) from all ranks, in rank
    order, with a backward that sums every rank's gradient for each shard."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum_with_grad(tensor):
    """Sum of `tensor` over ranks, differentiable: every rank's loss depends on
    the sum, so each rank's input receives the sum of all ranks' gradients."""
    if world_size() == 1:
        return tensor
    return _AllReduceSumWithGrad.apply(tensor)


def all_reduce_mean(tensor):
    """Mean of a tensor over ranks (for logging; no gradient)."""
    if world_size() == 1:
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / world_size()
