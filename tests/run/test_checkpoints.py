"""A training checkpoint is checked to fit the run before anything is loaded: corrupted at
random, it gives one UserError line naming it, or it loads and the run trains on."""

import copy
import random

import pytest
import torch
from torch import nn

from cxr.run.engine import checkpoint_state, restore, resumed_history
from cxr.run.errors import UserError

SOURCE = "run/checkpoint.pth"


def training_state(seed):
    """(model, optimizer, scaler) of a small network after one fp16-scaled step."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    step(model, optimizer, scaler)
    return model, optimizer, scaler


def step(model, optimizer, scaler):
    optimizer.zero_grad()
    scaler.scale(model(torch.ones(5, 3)).square().mean()).backward()
    scaler.step(optimizer)
    scaler.update()


def nodes(value, path=()):
    """Every (path, value) inside nested dicts and lists (tensors are leaves)."""
    yield path, value
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        children = []
    for key, child in children:
        yield from nodes(child, (*path, key))


def replacement(value, rng):
    """Something else to stand where `value` stood."""
    others = [None, "x", -1, 1.5, True, [], {}, torch.zeros(7), torch.zeros(())]
    if isinstance(value, torch.Tensor) and value.dim():
        others += [
            value.flatten(),  # the same numbers, another shape
            value.unsqueeze(0),
            torch.full_like(value, float("nan")) if value.is_floating_point() else value + 1,
        ]
    return rng.choice(others)


def corrupted(state, rng):
    """A copy of `state` with one node deleted, replaced, or joined by an unknown key."""
    state = copy.deepcopy(state)
    path, value = rng.choice([n for n in nodes(state) if n[0]])
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    how = rng.choice(["delete", "replace", "replace", "add"])
    if how == "delete":
        parent.pop(path[-1])
    elif how == "add" and isinstance(parent, dict):
        parent["unknown"] = torch.zeros(2)
    else:
        parent[path[-1]] = replacement(value, rng)
    return state


def test_a_corrupted_checkpoint_is_one_user_error_or_loads_and_trains():
    model, optimizer, scaler = training_state(0)
    state = checkpoint_state(model, optimizer, scaler, epoch=1, step=1, eval_history=[{"AP": 1}])
    rng, outcomes = random.Random(0), {"error": 0, "trained": 0}
    for _ in range(300):
        bad = corrupted(state, rng)
        model, optimizer, scaler = training_state(1)
        try:
            restore(bad, model=model, optimizer=optimizer, scaler=scaler, source=SOURCE)
            resumed_history(bad, source=SOURCE)
        except UserError as error:
            assert "\n" not in str(error) and SOURCE in str(error), str(error)
            outcomes["error"] += 1
            continue
        step(model, optimizer, scaler)  # what it loaded trains, without another exception
        assert all(torch.isfinite(p).all() for p in model.parameters())
        outcomes["trained"] += 1
    assert outcomes["error"] >= 200, outcomes


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["model"].pop("0.weight"), r"model: tensors 1 missing \(0\.weight\)$"),
        (lambda s: s["model"].update({"2.weight": torch.zeros(4, 1)}), "1 of the wrong shape"),
        (lambda s: s["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(3)),
         r"momentum_buffer of parameter 0 has shape \(3,\), the parameter \(4, 3\)"),
        (lambda s: s.update(epoch=-1), "its epoch -1 is not a whole number"),
        (lambda s: s["scaler"].update(scale=float("nan")), "scaler state"),
        (lambda s: s["optimizer"]["param_groups"][0].update(momentum="0.9"), "optimizer state"),
    ],
)  # fmt: skip
def test_what_does_not_fit_is_named(change, message):
    model, optimizer, scaler = training_state(0)
    state = checkpoint_state(model, optimizer, scaler, epoch=1, step=1)
    change(state)
    with pytest.raises(UserError, match=message):
        restore(state, model=model, optimizer=optimizer, scaler=scaler, source=SOURCE)


def test_a_checkpoint_that_fits_restores_with_its_scaler_state():
    model, optimizer, scaler = training_state(0)
    state = checkpoint_state(model, optimizer, scaler, epoch=3, step=7)
    assert state["scaler"]["_growth_tracker"] == 1  # one finite step counted
    state["scaler"]["_growth_tracker"] = 0  # as after an overflow: a count may be 0
    other, other_optimizer, other_scaler = training_state(1)
    source = SOURCE
    epochs = restore(
        state, model=other, optimizer=other_optimizer, scaler=other_scaler, source=source
    )
    assert epochs == (3, 7) and other_scaler.state_dict() == state["scaler"]
