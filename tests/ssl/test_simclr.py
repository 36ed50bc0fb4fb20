"""NT-Xent: hand-computed values, a first-principles reference, and the DDP
equivalence (2 gloo processes with N images each == 1 process with 2N)."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from conftest import free_port
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cxr.ssl.simclr import SimCLR, nt_xent


def reference_nt_xent(z1, z2, temperature):
    """Chen et al. (2020), eq. (1), one anchor at a time."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        similarity = [float(z[i] @ z[k]) / temperature for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(similarity) if k != i)
        losses.append(-math.log(math.exp(similarity[positive]) / denominator))
    return sum(losses) / len(losses)


def test_single_pair_has_zero_loss():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert nt_xent(z, z).item() == pytest.approx(0.0, abs=1e-7)


def test_orthogonal_pairs_by_hand():
    e = torch.eye(2)
    # anchor e1: positive similarity 1, the two negatives 0 (T = 1)
    assert nt_xent(e, e, temperature=1.0).item() == pytest.approx(
        math.log((math.e + 2) / math.e), rel=1e-6
    )


@pytest.mark.parametrize("seed, temperature", [(0, 0.5), (1, 0.1), (2, 1.0)])
def test_matches_the_paper_formula(seed, temperature):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(
        reference_nt_xent(z1, z2, temperature), rel=1e-5
    )


def reference_nt_xent_tensor(z1, z2, temperature):
    """eq. (1) again, differentiable: -log softmax of the positive over every other view."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    terms = []
    for i in range(2 * n):
        others = [k for k in range(2 * n) if k != i]
        logits = torch.stack([z[i] @ z[k] for k in others]) / temperature
        positive = others.index((i + n) % (2 * n))
        terms.append(torch.logsumexp(logits, 0) - logits[positive])
    return torch.stack(terms).mean()


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_gradients_equal_the_paper_formulas(temperature):
    """Every view is an anchor and a candidate: both roles carry gradient."""
    g = torch.Generator().manual_seed(4)
    z1, z2 = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(2))
    ours = [z.clone().requires_grad_() for z in (z1, z2)]
    nt_xent(*ours, temperature).backward()
    reference = [z.clone().requires_grad_() for z in (z1, z2)]
    reference_nt_xent_tensor(*reference, temperature).backward()
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-4, atol=1e-6)


def test_loss_is_float32_under_bf16_autocast():
    """At temperature 0.1 a bf16 similarity matmul rounds logits near 10 to
    1/16; the loss must not change with the AMP setting."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    exact = nt_xent(z1, z2, temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = nt_xent(z1, z2, temperature=0.1)
    assert under_amp.dtype == torch.float32
    assert under_amp.item() == pytest.approx(exact.item(), rel=1e-6)
    assert exact.item() == pytest.approx(reference_nt_xent(z1, z2, 0.1), rel=1e-5)


def test_trunk_state_dict_has_torchvision_keys_without_fc():
    model = SimCLR(torchvision.models.resnet18(), feature_dim=512)
    weights = model.trunk_state_dict()
    missing, unexpected = torchvision.models.resnet18().load_state_dict(weights, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def tiny_encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def batches():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)


def _two_process_worker(rank, world_size, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = DistributedDataParallel(tiny_encoder())
        x1, x2 = batches()
        rows = slice(rank * 4, rank * 4 + 4)
        loss = nt_xent(model(x1[rows]), model(x2[rows]), temperature=0.5, rank=rank)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            torch.save(
                {"loss": mean_loss / world_size, "grads": [p.grad for p in model.parameters()]}, out
            )
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_with_both_batches(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_two_process_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)

    model = tiny_encoder()
    x1, x2 = batches()
    loss = nt_xent(model(x1), model(x2), temperature=0.5)
    loss.backward()
    assert distributed["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    for got, expected in zip(distributed["grads"], [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
