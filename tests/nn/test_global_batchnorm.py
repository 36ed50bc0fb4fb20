"""GlobalBatchNorm: nn.BatchNorm's numbers on one process, and with two real gloo
processes of N images each the loss, gradients and running statistics of one
process with all 2N (SimCLR's global BN), which per-process BN does not give."""

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cxr.nn.global_batchnorm import (
    GlobalBatchNorm,
    combine_statistics,
    convert_to_global_batchnorm,
)
from cxr.ssl.simclr import ProjectionHead, nt_xent


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7, 6)])
def test_one_process_equals_torch_batchnorm(shape, momentum):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3 + 5
    upstream = torch.randn(*shape, generator=g)
    reference = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1], momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5, generator=g)
        reference.bias.uniform_(-1, 1, generator=g)
    ours = convert_to_global_batchnorm(copy.deepcopy(reference))
    assert isinstance(ours, GlobalBatchNorm)
    results = []
    for norm in (reference, ours):
        inputs = x.clone().requires_grad_()
        for shift in range(2):  # two batches of different means: the running average's weights
            out = norm(inputs + shift)
        (out * upstream).sum().backward()
        results.append(
            (
                out,
                inputs.grad,
                norm.weight.grad,
                norm.bias.grad,
                norm.running_mean,
                norm.running_var,
                norm.num_batches_tracked,
            )
        )
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    reference.eval()
    ours.eval()
    torch.testing.assert_close(ours(x), reference(x))


def test_uneven_batches_combine_weighted_by_their_counts():
    """Batches of 1 and 3 values of one channel: [0] and [2, 4, 6], by hand."""
    mean, var, total = combine_statistics(
        counts=torch.tensor([1.0, 3.0]),
        means=torch.tensor([[0.0], [4.0]]),
        sums=torch.tensor([[0.0], [8.0]]),  # (2-4)^2 + 0 + (6-4)^2
    )
    values = torch.tensor([0.0, 2.0, 4.0, 6.0])
    assert total == 4 and mean.item() == 3.0 == values.mean()  # not (0 + 4) / 2
    assert var.item() == pytest.approx(values.var(unbiased=False).item())  # 5.0


def large_offset_batch(rows, seed=0):
    """Inputs far from zero: mean 1e4, std 1e-2 (float32 spacing there is 1e-3)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 3, 4, 4, generator=g, dtype=torch.float64) * 1e-2 + 1e4).float()


def exact_normalization(x):
    """BatchNorm of float32 inputs computed in float64 (weight 1, bias 0)."""
    x = x.double()
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_large_offsets_lose_no_precision_on_one_process():
    x = large_offset_batch(32)
    torch_error = (nn.BatchNorm2d(3)(x).double() - exact_normalization(x)).abs().max()
    ours = convert_to_global_batchnorm(nn.BatchNorm2d(3))
    error = (ours(x).double() - exact_normalization(x)).abs().max()
    assert torch_error > 1e-2 and error < 1e-5  # torch's own rounds the offset away


def test_conversion_keeps_weights_buffers_and_frozen_parameters():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6)
    )
    model[1].running_mean.fill_(0.25)
    model[4].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_to_global_batchnorm(model)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[4], GlobalBatchNorm)
    assert converted.state_dict().keys() == state.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not converted[4].weight.requires_grad and converted[1].weight.requires_grad


def encoder():
    """A small SimCLR model: a conv trunk with BatchNorm2d and the real projection head
    (BatchNorm1d)."""
    torch.manual_seed(0)
    trunk = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return nn.Sequential(trunk, ProjectionHead(6, 16, 4))


def views():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 5, 5, generator=g), torch.randn(8, 1, 5, 5, generator=g) * 2 + 1


def simclr_loss(model, x1, x2, rank=0):
    """Both views in one forward pass, as train_ssl.py does."""
    z = model(torch.cat([x1, x2]))
    return nt_xent(z[: len(x1)], z[len(x1) :], temperature=0.5, rank=rank)


def _worker(rank, world_size, port, out, global_bn):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = encoder()
        if global_bn:
            model = convert_to_global_batchnorm(model)
        ddp = DistributedDataParallel(model)
        x1, x2 = views()
        rows = slice(rank * 4, rank * 4 + 4)
        loss = simclr_loss(ddp, x1[rows], x2[rows], rank)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            torch.save(
                {
                    "loss": mean_loss / world_size,
                    "grads": [p.grad for p in model.parameters()],
                    "buffers": dict(model.named_buffers()),
                },
                out,
            )
    finally:
        dist.destroy_process_group()


def two_processes(tmp_path, global_bn):
    out = tmp_path / f"rank0-{global_bn}.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out), global_bn), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_processes_with_global_bn_equal_one_process_with_both_batches(tmp_path):
    model = encoder()
    x1, x2 = views()
    loss = simclr_loss(model, x1, x2)
    loss.backward()
    expected = [p.grad for p in model.parameters()]

    distributed = two_processes(tmp_path, global_bn=True)
    assert distributed["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for got, want in zip(distributed["grads"], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for name, value in model.named_buffers():
        torch.testing.assert_close(distributed["buffers"][name], value, rtol=1e-5, atol=1e-6)

    per_process = two_processes(tmp_path, global_bn=False)  # what per-GPU BN would train
    worst = max(
        float((got - want).abs().max() / want.abs().max())
        for got, want in zip(per_process["grads"], expected)
    )
    assert worst > 0.05


def _uneven_worker(rank, world_size, port, out):
    """Rank 0 normalizes 3 images, rank 1 the other 9, of one large-offset batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        norm = convert_to_global_batchnorm(nn.BatchNorm2d(3))
        x, upstream = large_offset_batch(12), upstream_gradient()
        rows = slice(0, 3) if rank == 0 else slice(3, 12)
        inputs = x[rows].clone().requires_grad_()
        out_rows = norm(inputs)
        (out_rows * upstream[rows]).sum().backward()
        weight_grad = norm.weight.grad.clone()
        dist.all_reduce(weight_grad)
        torch.save(
            {
                "out": out_rows.detach(),
                "input_grad": inputs.grad,
                "weight_grad": weight_grad,
                "running": (norm.running_mean, norm.running_var),
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def upstream_gradient():
    return torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(7))


def test_two_processes_with_uneven_batches_equal_one_process(tmp_path):
    """3 and 9 images on two processes: the outputs, input and weight gradients and
    running statistics of one exact BatchNorm over all 12, at a large offset too."""
    mp.spawn(_uneven_worker, args=(2, free_port(), str(tmp_path / "out")), nprocs=2, join=True)
    first, second = (torch.load(f"{tmp_path / 'out'}.{r}", weights_only=True) for r in (0, 1))
    x, upstream = large_offset_batch(12), upstream_gradient()
    torch.testing.assert_close(
        torch.cat([first["out"], second["out"]]).double(), exact_normalization(x), atol=1e-5, rtol=0
    )
    reference = nn.BatchNorm2d(3).double()
    inputs = x.double().requires_grad_()
    (reference(inputs) * upstream.double()).sum().backward()
    grads = torch.cat([first["input_grad"], second["input_grad"]]).double()
    scale = inputs.grad.abs().max()
    torch.testing.assert_close(grads / scale, inputs.grad / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        first["weight_grad"].double(), reference.weight.grad, atol=1e-4, rtol=1e-5
    )
    for got, want in zip(first["running"], (reference.running_mean, reference.running_var)):
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)
