"""Optimizers and schedules: the schedule, parameter groups and LARS by hand."""

import math

import numpy as np
import torch
from torch import nn

from cxr.nn.optim import (
    LARS,
    build_optimizer,
    parameter_groups,
    step_schedule,
    warmup_cosine_schedule,
)


def test_warmup_then_cosine_by_hand():
    lr = warmup_cosine_schedule(1.0, total_steps=6, warmup_steps=2)
    expected = [0.5, 1.0] + [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    np.testing.assert_allclose(lr, expected)
    assert len(warmup_cosine_schedule(0.1, 10)) == 10 and warmup_cosine_schedule(0.1, 10)[0] == 0.1
    np.testing.assert_allclose(warmup_cosine_schedule(1.0, 3, warmup_steps=10), [1 / 3, 2 / 3, 1.0])


def test_warmup_from_a_start_factor_by_hand():
    rates = step_schedule(2.0, 6, warmup_steps=4, milestones=[5], start_factor=0.2)
    # 0.2 + 0.8 * (s + 1) / 4 for s < 4, then 2.0 until the milestone at step 5
    np.testing.assert_allclose(rates, [2.0 * 0.4, 2.0 * 0.6, 2.0 * 0.8, 2.0, 2.0, 0.2])
    cosine = warmup_cosine_schedule(1.0, 3, warmup_steps=2, start_factor=0.5)
    np.testing.assert_allclose(cosine, [0.75, 1.0, 1.0])


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


def test_cosine_decays_to_a_final_rate_by_hand():
    lr = warmup_cosine_schedule(1.0, total_steps=3, final_lr=0.25)
    np.testing.assert_allclose(
        lr, [0.25 + 0.75 * (1 + math.cos(math.pi * t / 3)) / 2 for t in range(3)]
    )


def test_lars_leaves_a_weight_without_update_as_it_is():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    optimizer = LARS([{"params": [w], "weight_decay": 0.0, "lars": True}], lr=0.5)
    w.grad = torch.zeros(2)  # no update: the trust ratio would be |w| / 0
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]))


def test_the_optimizer_is_the_one_named():
    model = nn.Linear(2, 2)
    assert type(build_optimizer("sgd", model, lr=0.1, weight_decay=0.0)) is torch.optim.SGD
    assert type(build_optimizer("lars", model, lr=0.1, weight_decay=0.0)) is LARS
