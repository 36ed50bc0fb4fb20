"""The loops' shared utilities: a non-finite loss stops every rank and the run says what
is kept; a checkpoint restores exactly; epochs, schedules and progress lines line up."""

import argparse

import pytest
import torch
from torch import nn

from cxr.data.image_lists import FINGERPRINTED
from cxr.run.distributed import DistInfo
from cxr.run.engine import (
    ProgressMeter,
    TrainingDiverged,
    checkpoint_state,
    epoch_range,
    finite_mean_loss,
    restore,
)
from cxr.run.folder import open_run


def test_a_non_finite_loss_raises_naming_where_and_a_finite_one_is_its_mean():
    assert finite_mean_loss(torch.tensor(2.5), epoch=0, iteration=0, step=0) == 2.5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TrainingDiverged, match="at epoch 2, iteration 4 \\(step 9\\)") as e:
            finite_mean_loss(torch.tensor(bad), epoch=1, iteration=3, step=9)
        assert e.value.epoch == 1


@pytest.mark.parametrize(
    "epochs_saved, kept",
    [(0, "no checkpoint was written before it"), (1, "checkpoint.pth \\(after epoch 1\\) is kept")],
)
def test_the_run_says_whether_a_checkpoint_is_kept(tmp_path, epochs_saved, kept):
    (tmp_path / "data").mkdir()
    for name in FINGERPRINTED:  # what open_run fingerprints of a prepared folder
        (tmp_path / "data" / name).write_text("{}")
    args = argparse.Namespace(
        data_dir=str(tmp_path / "data"), epochs=2, resume=False, auto_resume=False, replace=False
    )
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    dist_info = DistInfo(0, 1, 0, torch.device("cpu"))
    with pytest.raises(TrainingDiverged, match=kept):
        with open_run(
            tmp_path / "run",
            outputs=("checkpoint.pth",),
            final="final.pth",
            command="test",
            args=args,
            dist_info=dist_info,
            images=("images.json", []),
        ) as run:
            for epoch in range(epochs_saved):
                run.save(checkpoint_state(model, optimizer, scaler, epoch=epoch + 1, step=1))
            finite_mean_loss(torch.tensor(float("nan")), epoch=epochs_saved, iteration=0, step=1)


def test_a_checkpoint_restores_model_optimizer_epoch_and_step():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()  # a momentum buffer to restore
    state = checkpoint_state(model, optimizer, scaler, epoch=1, step=2, eval_history=[])
    other = nn.Linear(3, 1)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    assert restore(state, model=other, optimizer=other_optimizer, scaler=scaler, source="c") == (
        1,
        2,
    )
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    buffers = [other_optimizer.state[p]["momentum_buffer"] for p in other.parameters()]
    assert all(
        torch.equal(a, optimizer.state[p]["momentum_buffer"])
        for a, p in zip(buffers, model.parameters())
    )
    assert restore(None, model=other, optimizer=other_optimizer, scaler=scaler, source=None) == (
        0,
        0,
    )


def test_epoch_range_stops_after_the_given_number_of_epochs():
    assert list(epoch_range(0, 5, None)) == [0, 1, 2, 3, 4]
    assert list(epoch_range(1, 5, 2)) == [1, 2]
    assert list(epoch_range(4, 5, 3)) == [4]
    assert list(epoch_range(5, 5, None)) == []


def test_progress_lines_every_print_freq_and_at_the_last_iteration():
    lines = []
    args = argparse.Namespace(epochs=3, print_freq=2)
    meter = ProgressMeter(1, args, iterations=5, steps=15, log=lambda *a, **r: lines.append(r))
    for batch in meter.batches(range(5)):
        meter.update(step=5 + batch + 1, loss=float(batch), lr=0.1 * batch, images=4)
    assert [r["iteration"] for r in lines] == [2, 4, 5]
    assert [r["step"] for r in lines] == [7, 9, 10] and lines[-1]["lr"] == pytest.approx(0.4)
    assert meter.mean_loss == 2.0 and all(r["epoch"] == 2 for r in lines)
