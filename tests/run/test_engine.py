"""The engine's safety nets: a non-finite loss stops before the optimizer step and
says what is kept; epochs, schedule steps and checkpoints line up."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cxr.nn.optim import warmup_cosine_schedule
from cxr.run.distributed import DistInfo
from cxr.run.engine import (
    Optimization,
    Step,
    TrainingDiverged,
    epoch_range,
    restore,
    save_checkpoint,
    train_one_epoch,
)
from cxr.run.folder import Run, RunLogger
from cxr.run.outputs import OutputFolder


def nan_on_negative_inputs(model, batch, generator):
    """A step whose loss is NaN on a batch of negative numbers."""
    loss = model(batch).pow(2).mean()
    return Step(loss * float("nan") if batch[0, 0] < 0 else loss, {}, len(batch))


def tiny_run(tmp_path, epochs=1):
    args = SimpleNamespace(epochs=epochs, print_freq=10)
    dist_info = DistInfo(0, 1, 0, torch.device("cpu"))
    folder = OutputFolder(tmp_path)
    return Run(folder, RunLogger(folder, False), {"lr": 0.1}, None, args, dist_info)


def optimization(model, steps):
    return Optimization(
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.amp.GradScaler("cpu", enabled=False),
        warmup_cosine_schedule(0.1, steps),
    )


def test_non_finite_loss_stops_before_the_optimizer_step(tmp_path):
    model = nn.Linear(3, 1)
    batches = [torch.ones(2, 3), -torch.ones(2, 3), torch.ones(2, 3)]
    after_first = {}

    class Recorder(list):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == 1:
                    after_first.update({k: v.clone() for k, v in model.state_dict().items()})
                yield batch

    with pytest.raises(
        TrainingDiverged, match="loss is nan at epoch 1, iteration 2 .*stopped before the optimizer"
    ):
        train_one_epoch(
            model,
            nan_on_negative_inputs,
            Recorder(batches),
            optimization(model, 3),
            step=0,
            epoch=0,
            run=tiny_run(tmp_path),
        )
    for key, value in model.state_dict().items():
        assert torch.equal(value, after_first[key]), key


@pytest.mark.parametrize(
    "bad_epoch, kept",
    [(0, "no checkpoint was written before it"), (1, "checkpoint.pth \\(after epoch 1\\) is kept")],
)
def test_divergence_says_whether_a_checkpoint_is_kept(tmp_path, bad_epoch, kept):
    model, run = nn.Linear(3, 1), tiny_run(tmp_path, epochs=2)
    steps = optimization(model, 2)
    step = 0
    with pytest.raises(TrainingDiverged, match=kept):
        for epoch in epoch_range(0, 2, None):
            batch = -torch.ones(2, 3) if epoch == bad_epoch else torch.ones(2, 3)
            step, _ = train_one_epoch(
                model, nan_on_negative_inputs, [batch], steps, step=step, epoch=epoch, run=run
            )
            save_checkpoint(run, model, steps, epoch=epoch + 1, step=step)


def test_a_checkpoint_restores_model_optimizer_epoch_and_step(tmp_path):
    model, run = nn.Linear(3, 1), tiny_run(tmp_path, epochs=2)
    steps = optimization(model, 4)
    batches = [torch.ones(2, 3)] * 2
    step, _ = train_one_epoch(
        model, nan_on_negative_inputs, batches, steps, step=0, epoch=0, run=run
    )
    save_checkpoint(run, model, steps, epoch=1, step=step)
    state = torch.load(run.checkpoint, weights_only=True)
    assert (state["epoch"], state["step"], state["config"]) == (1, 2, {"lr": 0.1})
    other = nn.Linear(3, 1)
    resumed = Run(run.folder, run.logger, run.config, state, run.args, run.dist_info)
    assert restore(resumed, other, optimization(other, 4)) == (1, 2)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values())
    )
    assert restore(run, other, optimization(other, 4)) == (0, 0)  # a new run starts at 0


def test_epoch_range_stops_after_the_given_number_of_epochs():
    assert list(epoch_range(0, 5, None)) == [0, 1, 2, 3, 4]
    assert list(epoch_range(1, 5, 2)) == [1, 2]
    assert list(epoch_range(4, 5, 3)) == [4]
    assert list(epoch_range(5, 5, None)) == []
