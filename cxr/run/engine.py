"""What the two training scripts share around their epoch loops.

Each script writes its loop (build -> restore -> wrap -> for epoch:
set_epoch, seed_epoch, train_one_epoch, evaluate, save_checkpoint) and one
step function, `step(model, batch, generator) -> Step`: the batch's loss
(forward under `autocast`), what to log, the image count. Here:
`train_one_epoch` (the learning rate of every global step from an array; the
loss averaged over ranks every step, so a non-finite loss stops every rank
before the optimizer step; progress lines with images/s and ETA),
`Optimization` (GradScaler for fp16 only, gradient clip), `seed_epoch` (an
epoch's randomness from its own streams, so a resumed run ends with the
uninterrupted run's weights), and `save_checkpoint` / `restore` (one atomic
file of tensors and plain values).
"""

import contextlib
import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from cxr.nn.optim import set_learning_rate
from cxr.nn.seeds import stream_seed
from cxr.run.checkpoints import atomic_torch_save
from cxr.run.distributed import all_reduce_mean
from cxr.run.errors import UserError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Step:
    """What a step function returns for one batch of one process."""

    loss: torch.Tensor  # scalar, to backpropagate
    logs: dict  # {name: scalar tensor} logged with the loss
    images: int  # images in this process's batch


StepFunction = Callable[[torch.nn.Module, object, torch.Generator], Step]


@dataclass
class Optimization:
    """The optimizer side of every step: the optimizer, the GradScaler (enabled for
    fp16 only, `grad_scaler`), the learning rate of each global step, and an
    optional gradient-norm clip."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Sequence[float]  # (total steps,) learning rate of global step s
    clip_grad: Optional[float] = None

    def step(self, loss, model, global_step):
        """Backpropagate `loss` and update the weights at global_step's learning rate."""
        assert global_step < len(self.schedule), f"step {global_step} is past the schedule"
        set_learning_rate(self.optimizer, self.schedule[global_step])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def check_amp(amp, device):
    """Refuse fp16 without CUDA: it needs a GradScaler on a device that has fp16 kernels."""
    if amp == "fp16" and device.type != "cuda":
        raise UserError(
            "--amp fp16 needs a CUDA device (it trains with a GradScaler); "
            "use --amp bf16 on CPU, or --amp none"
        )


def autocast(amp, device):
    """The forward pass's mixed-precision context: none, bf16 or fp16."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(amp, device):
    """A GradScaler, enabled for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def seed_epoch(seed, epoch, dist_info):
    """Reseed torch's global generators for one epoch of this rank, and return a
    generator on the device for the step function's own draws (SimCLR's views).

    The global generators drive what the model samples (Faster R-CNN's anchors
    and RoIs) and the data loader's worker seeds; reseeding them from their
    own stream gives every rank its own draws and makes an epoch's randomness
    independent of the epochs before it."""
    rank = dist_info.rank
    torch.manual_seed(stream_seed("global", seed=seed, epoch=epoch, rank=rank))
    generator = torch.Generator(device=dist_info.device)
    generator.manual_seed(stream_seed("views", seed=seed, epoch=epoch, rank=rank))
    return generator


def epoch_range(start_epoch, epochs, stop_after):
    """The epochs this invocation trains: start_epoch.. up to --epochs, at most
    --stop-after of them."""
    last = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    return range(start_epoch, max(start_epoch, last))


def log_epoch(run, *, epoch, mean_loss, **metrics):
    """The line that closes an epoch (mean loss and any evaluation numbers)."""
    run.logger.log(
        f"epoch {epoch + 1}/{run.args.epochs} done: mean loss {mean_loss:.4f}"
        + "".join(f", {k} {v:.4f}" for k, v in metrics.items()),
        event="epoch",
        epoch=epoch + 1,
        mean_loss=mean_loss,
        **metrics,
    )


def finished(run, epochs_run):
    """True when the last epoch is done; else says how to continue (--stop-after)."""
    if epochs_run.stop < run.args.epochs:
        run.logger.log(
            f"stopped after epoch {max(epochs_run.stop, epochs_run.start)} of {run.args.epochs}; "
            "continue with --resume",
            event="stop",
        )
        return False
    return True


def restore(run, model, optimization):
    """(epochs done, global step) to start from: (0, 0) for a new run, else those of
    the checkpoint `cxr.run.folder.open_run` checked (--resume), whose model,
    optimizer and scaler states are loaded."""
    if run.resumed is None:
        return 0, 0
    state = run.resumed
    model.load_state_dict(state["model"])
    optimization.optimizer.load_state_dict(state["optimizer"])
    optimization.scaler.load_state_dict(state["scaler"])
    run.logger.log(
        f"resumed from {run.checkpoint} after epoch {state['epoch']}",
        event="resume",
        epoch=state["epoch"],
    )
    return state["epoch"], state["step"]


def save_checkpoint(run, model, optimization, *, epoch, step, **extra):
    """On the main process, run.checkpoint after `epoch` epochs: the weights of
    `model` (without its DDP wrapper), the optimizer and scaler states, the run's
    settings and `extra`; tensors and plain values only, written atomically."""
    if not run.dist_info.is_main:
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimization.optimizer.state_dict(),
        "scaler": optimization.scaler.state_dict(),
        "epoch": epoch,
        "step": step,
        "config": run.config,
        **extra,
    }
    atomic_torch_save(run.checkpoint, state)


def _eta(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


def _diverged(loss, *, epoch, iteration, step, run):
    kept = (
        f"{run.checkpoint} (after epoch {epoch}) is kept"
        if Path(run.checkpoint).is_file()
        else "no checkpoint was written before it"
    )
    return TrainingDiverged(
        f"loss is {loss} at epoch {epoch + 1}, iteration {iteration + 1} (step {step}); "
        "stopped before the optimizer step. Try a lower --lr, --clip-grad, or --amp none / "
        f"bf16 instead of fp16. {kept}."
    )


def train_one_epoch(model, step_fn, loader, optimization, *, step, epoch, run, generator=None):
    """One pass over `loader` from global step `step`; returns (next global step,
    mean loss).

    model: the model to train (DDP-wrapped under torchrun); step_fn: the
    script's step function; run: the opened run folder (`cxr.run.folder.Run`),
    for the logger, the checkpoint named if the loss stops being finite, the
    processes, and the flags both scripts share (--epochs, --print-freq)."""
    dist_info, args = run.dist_info, run.args
    model.train()
    losses, started = [], time.perf_counter()
    tick, data_time, images_seen = started, 0.0, 0
    for iteration, batch in enumerate(loader):
        data_time += time.perf_counter() - tick
        out = step_fn(model, batch, generator)
        images_seen += out.images * dist_info.world_size
        # Host synchronisation: every rank needs the mean loss to stop at the same step.
        mean_loss = all_reduce_mean(out.loss.detach().float()).item()
        if not math.isfinite(mean_loss):
            raise _diverged(mean_loss, epoch=epoch, iteration=iteration, step=step, run=run)
        optimization.step(out.loss, model, step)
        losses.append(mean_loss)
        step += 1
        tick = time.perf_counter()
        if (iteration + 1) % args.print_freq == 0 or iteration + 1 == len(loader):
            elapsed = tick - started
            record = {
                "epoch": epoch + 1,
                "iteration": iteration + 1,
                "step": step,
                "loss": mean_loss,
                "lr": float(optimization.schedule[step - 1]),
                "images_per_s": images_seen / elapsed,
                "data_s": data_time / (iteration + 1),
                **_mean_over_ranks(out.logs),
            }
            eta = _eta(elapsed / (iteration + 1) * max(len(optimization.schedule) - step, 0))
            run.logger.log(
                f"epoch {epoch + 1}/{args.epochs} iter {iteration + 1}/{len(loader)} "
                f"loss {mean_loss:.4f} lr {record['lr']:.5f} img/s {record['images_per_s']:.1f} "
                f"data {record['data_s']:.3f}s eta {eta}",
                event="train",
                **record,
            )
    return step, sum(losses) / max(len(losses), 1)


def _mean_over_ranks(logs):
    """{name: mean over ranks} of scalar tensors, in one stacked all-reduce (one host
    synchronisation for all of them)."""
    if not logs:
        return {}
    means = all_reduce_mean(torch.stack([v.detach().float() for v in logs.values()]))
    return dict(zip(logs, means.tolist()))
