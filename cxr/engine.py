"""The one training loop of cxr: AMP, DDP, logging, checkpoints, resume.

A script supplies a `task` with three methods:
  task.inputs(batch, generator) -> inputs    on the device, outside autocast
                                              (augmentations run here)
  task.loss(model, inputs) -> (loss, logs)   run under autocast
  task.batch_images(inputs) -> int           images in the batch, for images/s
bundles it with the model, optimizer, scaler, learning-rate schedule, AMP
mode, process group and logger in one `Training`, and calls
`fit(training, loader, ...)`, which does the rest the same way for SimCLR
and Faster R-CNN:

- one AMP path (as in nanoGPT): autocast with bf16 or fp16, a GradScaler
  enabled only for fp16; fp16 needs CUDA, bf16 also runs on CPU;
- the learning rate of every global step read from a precomputed array;
- the loss averaged over ranks every step, so that a non-finite loss stops
  every rank at the same step, with a clear message, before the optimizer
  step and without touching the last good checkpoint;
- rank 0 prints a progress line (epoch, iteration, loss, lr, images/s, data
  time, ETA) and appends every line it logs to log.jsonl;
- after each epoch an atomic checkpoint.pth (model, optimizer, scaler, epoch,
  step: tensors and primitives only, weights_only-loadable). All randomness
  of an epoch is seeded from (seed, epoch, rank) when it starts (`seed_epoch`),
  so ranks draw differently and a run resumed after epoch k ends with
  exactly the weights of an uninterrupted one.
"""

import contextlib
import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from .checkpoint_io import atomic_torch_save
from .distributed import DistInfo, all_reduce_mean
from .errors import UserError
from .optim import build_optimizer, set_learning_rate
from .seeds import stream_seed

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def check_amp(amp, device):
    if amp not in ("none", *AMP_DTYPES):
        raise UserError(f"--amp {amp}: expected none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise UserError(
            "--amp fp16 needs a CUDA device (it trains with a GradScaler); "
            "use --amp bf16 on CPU, or --amp none"
        )


def autocast(amp, device):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def restore(state, model, optimizer, scaler, logger, checkpoint_path):
    """Load a checkpoint's model, optimizer and scaler; returns (epoch, step) done."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    logger.log(
        f"resumed from {checkpoint_path} after epoch {state['epoch']}",
        event="resume",
        epoch=state["epoch"],
    )
    return state["epoch"], state["step"]


def seed_epoch(seed, epoch, rank, device):
    """Reseed torch's global generators for one epoch of one rank, and return a
    generator on the device for the task's own draws (SimCLR's views).

    The global generators drive what the model samples (Faster R-CNN's
    anchors and RoIs) and the data loader's worker seeds; reseeding them from
    (seed, epoch, rank) gives every rank its own draws and makes an epoch's
    randomness independent of the epochs before it, so a resumed run needs no
    saved generator state."""
    torch.manual_seed(stream_seed("global", seed=seed, epoch=epoch, rank=rank))
    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed("views", seed=seed, epoch=epoch, rank=rank))
    return generator


def _eta(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


@dataclass
class Training:
    """What every step of a run uses, built once by the script.

    model runs forward and backward (DDP-wrapped when distributed); task is
    the script's task (see the module docstring); schedule holds the learning
    rate of every global step; amp is "none", "bf16" or "fp16"."""

    model: torch.nn.Module
    task: Any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Sequence[float]
    amp: str
    dist_info: DistInfo
    logger: Any
    clip_grad: Optional[float] = None
    print_freq: int = 10


def train_one_epoch(training, loader, *, epoch, epochs, step, generator=None):
    """One pass over `loader` from global step `step`; returns (next global step,
    mean loss)."""
    t = training
    t.model.train()
    total_steps = len(t.schedule)
    losses, started = [], time.perf_counter()
    tick = started
    data_time, images_seen = 0.0, 0
    for iteration, batch in enumerate(loader):
        data_time += time.perf_counter() - tick
        lr = float(t.schedule[min(step, total_steps - 1)])
        set_learning_rate(t.optimizer, lr)
        inputs = t.task.inputs(batch, generator)
        images_seen += t.task.batch_images(inputs) * t.dist_info.world_size
        with autocast(t.amp, t.dist_info.device):
            loss, logs = t.task.loss(t.model, inputs)
        mean_loss = all_reduce_mean(loss.detach().float()).item()
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss is {mean_loss} at epoch {epoch + 1}, iteration {iteration + 1} "
                f"(step {step}); stopped before the optimizer step. "
                "Try a lower --lr, --clip-grad, or --amp none / bf16 instead of fp16."
            )
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        if t.clip_grad:
            t.scaler.unscale_(t.optimizer)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.clip_grad)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        losses.append(mean_loss)
        step += 1
        tick = time.perf_counter()
        if (iteration + 1) % t.print_freq == 0 or iteration + 1 == len(loader):
            elapsed = tick - started
            record = {
                "epoch": epoch + 1,
                "iteration": iteration + 1,
                "step": step,
                "loss": mean_loss,
                "lr": lr,
                "images_per_s": images_seen / elapsed,
                "data_s": data_time / (iteration + 1),
                **{k: all_reduce_mean(v.detach().float()).item() for k, v in logs.items()},
            }
            eta = _eta(elapsed / (iteration + 1) * max(total_steps - step, 0))
            t.logger.log(
                f"epoch {epoch + 1}/{epochs} iter {iteration + 1}/{len(loader)} "
                f"loss {mean_loss:.4f} lr {lr:.5f} img/s {record['images_per_s']:.1f} "
                f"data {record['data_s']:.3f}s eta {eta}",
                event="train",
                **record,
            )
    return step, sum(losses) / max(len(losses), 1)


def fit(
    training,
    loader,
    *,
    sampler,
    unwrapped,
    epochs,
    seed,
    checkpoint_path,
    checkpoint_extra=None,
    start_epoch=0,
    start_step=0,
    stop_after=None,
    after_epoch=None,
):
    """Train epochs start_epoch..epochs-1 (at most stop_after of them in this run),
    saving checkpoint_path after each: the weights of `unwrapped` (the model
    without its DDP wrapper), the optimizer, the scaler, and checkpoint_extra.
    sampler.set_epoch(epoch) is called first when there is a sampler;
    after_epoch(epoch), e.g. an evaluation, may return a dict of numbers to
    log. Returns the number of epochs completed."""
    dist_info, logger = training.dist_info, training.logger
    step = start_step
    last_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, last_epoch):
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator = seed_epoch(seed, epoch, dist_info.rank, dist_info.device)
        try:
            step, mean_loss = train_one_epoch(
                training, loader, epoch=epoch, epochs=epochs, step=step, generator=generator
            )
        except TrainingDiverged as error:
            kept = (
                f"{checkpoint_path} (after epoch {epoch}) is kept"
                if Path(checkpoint_path).is_file()
                else "no checkpoint was written before it"
            )
            raise TrainingDiverged(f"{error} {kept}.") from None
        extra = (after_epoch(epoch) if after_epoch else None) or {}
        logger.log(
            f"epoch {epoch + 1}/{epochs} done: mean loss {mean_loss:.4f}"
            + "".join(f", {k} {v:.4f}" for k, v in extra.items()),
            event="epoch",
            epoch=epoch + 1,
            mean_loss=mean_loss,
            **extra,
        )
        if dist_info.is_main:
            atomic_torch_save(
                checkpoint_path,
                {
                    "model": unwrapped.state_dict(),
                    "optimizer": training.optimizer.state_dict(),
                    "scaler": training.scaler.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    **(checkpoint_extra or {}),
                },
            )
    return max(start_epoch, last_epoch)


def train(
    model,
    task,
    loader,
    sampler,
    schedule,
    run,
    dist_info,
    args,
    *,
    optimizer_name,
    after_epoch=None,
):
    """What train_ssl.py and train_det.py share once their model, data and
    schedule are built: the optimizer and GradScaler, resuming from
    run.resumed, the DDP wrapper, and `fit` with checkpoints in run.checkpoint.

    run: a `cxr.run_folder.Run`; args: the parsed command line, for the flags
    both scripts have (lr, weight_decay, amp, clip_grad, print_freq, epochs,
    seed, stop_after). Returns True when the last epoch is done, False when
    --stop-after ended the run early (and says how to continue)."""
    optimizer = build_optimizer(optimizer_name, model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler(dist_info.device.type, enabled=args.amp == "fp16")
    start_epoch = start_step = 0
    if run.resumed is not None:
        start_epoch, start_step = restore(
            run.resumed, model, optimizer, scaler, run.logger, run.checkpoint
        )
    wrapped = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    training = Training(
        wrapped,
        task,
        optimizer,
        scaler,
        schedule,
        args.amp,
        dist_info,
        run.logger,
        clip_grad=args.clip_grad,
        print_freq=args.print_freq,
    )
    completed = fit(
        training,
        loader,
        sampler=sampler,
        unwrapped=model,
        epochs=args.epochs,
        seed=args.seed,
        checkpoint_path=run.checkpoint,
        checkpoint_extra={"config": run.config},
        start_epoch=start_epoch,
        start_step=start_step,
        stop_after=args.stop_after,
        after_epoch=after_epoch,
    )
    if completed < args.epochs:
        run.logger.log(
            f"stopped after epoch {completed} of {args.epochs}; continue with --resume",
            event="stop",
        )
    return completed == args.epochs
