"""The collectives of the method: SimCLR's gathered negatives, global BatchNorm's
statistics, and means over processes. Outside a process group each is the identity.

`gather_with_grad` concatenates a tensor from every rank in rank order. Its
backward SUMS the gradients that all ranks computed for each shard and
returns each rank its own: rank k's loss depends on rank j's values, so rank
j must receive that gradient too (a plain all_gather has none). DDP then
averages parameter gradients over ranks, so 2 processes with N images each
compute what 1 process with 2N computes. `all_reduce_mean` carries no gradient.
"""

import torch
import torch.distributed as dist


def distributed():
    """True inside an initialized process group."""
    return dist.is_available() and dist.is_initialized()


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
    """(W * n, ...) the (n, ...) `tensor` of every rank (same shape on each), in rank
    order, with a backward that sums every rank's gradient for each shard."""
    if not distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def world_size():
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if distributed() else 1


def all_reduce_mean(tensor):
    """The mean of `tensor` over ranks, detached (a host synchronisation on CUDA only
    when the caller reads it)."""
    if not distributed():
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / dist.get_world_size()
