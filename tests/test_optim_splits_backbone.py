"""Schedules, LARS, parameter groups, the SSL/labeled partition, checked weight loading."""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cxr.backbone import check_trunk_state, pretrained_trunk, recompute_batchnorm_statistics
from cxr.errors import UserError
from cxr.optim import LARS, parameter_groups, warmup_cosine_schedule
from cxr.splits import partition, partition_bounds, split_test


def test_warmup_then_cosine_by_hand():
    lr = warmup_cosine_schedule(1.0, total_steps=6, warmup_steps=2)
    expected = [0.5, 1.0] + [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    np.testing.assert_allclose(lr, expected)
    assert (
        len(warmup_cosine_schedule(0.1, 10, 0)) == 10
        and warmup_cosine_schedule(0.1, 10, 0)[0] == 0.1
    )
    np.testing.assert_allclose(warmup_cosine_schedule(1.0, 3, warmup_steps=10), [1 / 3, 2 / 3, 1.0])


def test_parameter_groups_exempt_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 2))
    decay, exempt = parameter_groups(model, 1e-4)
    assert [p.shape for p in decay["params"]] == [(2, 1, 3, 3), (2, 2)]
    assert len(exempt["params"]) == 4 and exempt["weight_decay"] == 0.0 and not exempt["lars"]


def test_lars_step_by_hand():
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # |w| = 5
    b = torch.tensor([1.0], requires_grad=True)
    optimizer = LARS(
        [
            {"params": [w], "weight_decay": 0.1, "lars": True},
            {"params": [b], "weight_decay": 0.0, "lars": False},
        ],
        lr=0.5,
        momentum=0.9,
    )
    w.grad, b.grad = torch.tensor([0.7, -0.4]), torch.tensor([2.0])
    optimizer.step()
    update = torch.tensor([0.7, -0.4]) + 0.1 * torch.tensor([3.0, 4.0])  # g + wd w = (1.0, 0.0)
    trust = 0.001 * 5.0 / 1.0
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * update)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))
    w.grad, b.grad = torch.tensor([0.7, -0.4]), torch.tensor([2.0])
    before = b.detach().clone()
    optimizer.step()  # momentum: v = 0.9 v + lr g
    torch.testing.assert_close(b.detach(), before - (0.9 * 1.0 + 0.5 * 2.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partition_is_disjoint_covers_and_depends_only_on_ids_and_seed(seed):
    ids = [f"img{i:03d}" for i in range(101)]
    split = partition(ids, 0.4, seed=seed)
    assert not set(split.ssl) & set(split.labeled) and split.overlap == []
    assert len(split.ssl) == 40 and len(split.labeled) == 61
    assert set(split.ssl) | set(split.labeled) == set(ids)
    assert partition(list(reversed(ids)), 0.4, seed=seed) == split
    smaller = partition(ids, 0.4, labeled_fraction=0.2, seed=seed)
    assert (
        smaller.ssl == split.ssl
        and set(smaller.labeled) <= set(split.labeled)
        and len(smaller.labeled) == 20
    )
    assert (
        len(partition(ids, 0.6, labeled_fraction=0.6, seed=seed).overlap) == 2 * 61 - 101
    )  # asked-for overlap is visible
    assert partition(ids, 0.4, seed=seed + 10).ssl != split.ssl


PAPER_SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_pool_and_complement_never_collide_and_the_typed_complement_is_the_default():
    """Every training-set size up to 5,000 and every fraction of the paper's sweep:
    the SSL pool ends where the default labeled set starts (disjoint and
    covering), and typing the complement as a number, as a user or the
    experiment does (--labeled-fraction 0.3 after --ssl-fraction 0.7), cuts
    the same set."""
    for n in range(1, 5001):
        for f in PAPER_SWEEP:
            ssl_end, labeled_start = partition_bounds(n, f)
            assert ssl_end == labeled_start, (n, f)
            for typed in (round(1 - f, 6), 1 - f, float(f"{1 - f:.2f}")):
                assert partition_bounds(n, f, typed) == (ssl_end, labeled_start), (n, f, typed)
            smaller = partition_bounds(n, f, round((1 - f) / 2, 6))[1]
            assert labeled_start <= smaller <= n, (n, f)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_the_real_training_set_size_splits_cleanly(fraction):
    """3,515 training images (VinBigData's finding images less a 20% test split)."""
    ids = [f"{i:05d}" for i in range(3515)]
    default = partition(ids, fraction, seed=1)
    typed = partition(ids, fraction, labeled_fraction=round(1 - fraction, 6), seed=1)
    assert default == typed and default.overlap == []
    assert len(default.ssl) + len(default.labeled) == 3515


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_grouped_test_split_keeps_every_patient_on_one_side(seed):
    rng = np.random.default_rng(seed)
    ids = [
        f"{patient:05d}_{visit:03d}" for patient in range(60) for visit in range(rng.integers(1, 6))
    ]
    train, test = split_test(ids, 0.25, seed, group_of=lambda name: name.split("_")[0])
    patients = [{name.split("_")[0] for name in side} for side in (train, test)]
    assert not patients[0] & patients[1] and sorted(train + test) == sorted(ids)
    assert len(patients[1]) == 15  # a quarter of the 60 patients


def test_split_test_fraction_bounds():
    assert (
        split_test(["a", "b", "c", "d"], 0.25, 0)[1] and len(split_test(["a", "b"], 0.0, 0)[1]) == 0
    )
    with pytest.raises(ValueError):
        split_test(["a"], 1.0, 0)


def test_trunk_transfer_is_checked_key_by_key(tmp_path):
    reference = torchvision.models.resnet18()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "good.pth")
    trunk, message = pretrained_trunk("resnet18", tmp_path / "good.pth")
    assert message == f"loaded {len(state)}/{len(state)} tensors from {tmp_path / 'good.pth'}"
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key

    # The seed project's defect: a trunk saved from nn.Sequential has keys "0.weight",
    # "4.0.conv1.weight", ...
    sequential = nn.Sequential(*list(reference.children())[:-1])
    torch.save(sequential.state_dict(), tmp_path / "sequential.pth")
    with pytest.raises(UserError, match="missing .* unexpected .*0.weight"):
        pretrained_trunk("resnet18", tmp_path / "sequential.pth")
    one_channel = OrderedDict((k, v[:, :1] if k == "conv1.weight" else v) for k, v in state.items())
    with pytest.raises(UserError, match="1 of the wrong shape \\(conv1.weight\\)"):
        check_trunk_state(one_channel, "resnet18", "x")
    with pytest.raises(UserError, match="missing"):
        pretrained_trunk("resnet50", tmp_path / "good.pth")


def test_precise_batchnorm_statistics_are_the_average_over_the_images():
    """One batch, cumulative average: running mean = the batch mean of the first
    BatchNorm's input, running var = its unbiased variance (by hand, with a hook)."""
    torch.manual_seed(0)
    trunk = torchvision.models.resnet18()
    trunk.fc = torch.nn.Identity()
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    seen = []
    handle = trunk.bn1.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].detach().clone())
    )
    trunk.eval()
    batches = recompute_batchnorm_statistics(trunk, [images], torch.device("cpu"))
    handle.remove()
    x = seen[0].transpose(0, 1).reshape(64, -1)
    torch.testing.assert_close(trunk.bn1.running_mean, x.mean(1))
    torch.testing.assert_close(trunk.bn1.running_var, x.var(1, unbiased=True))
    assert (
        batches == 1 and not trunk.training and trunk.bn1.momentum == 0.1
    )  # mode and momentum restored
