"""What the two training scripts' loops share, as small utilities.

Each script writes its own `train_one_epoch` (forward, loss, backward, step
in one screen). Here: mixed precision (`autocast`, and `grad_scaler`, a
GradScaler enabled for fp16 only); the loss averaged over ranks every step,
so a non-finite loss stops every rank before the optimizer step
(`finite_mean_loss`); an epoch's randomness from its own streams
(`epoch_generator`), so a resumed run ends with the uninterrupted run's
weights; the state a checkpoint holds (`checkpoint_state`, `restore`); the
progress record of an epoch (`ProgressMeter`); and the guards on a schedule.
"""

import contextlib
import datetime
import math
import time
import warnings

import torch

from cxr.nn.collectives import all_reduce_mean, world_size
from cxr.nn.seeds import stream_seed
from cxr.run.checkpoints import check_resumable
from cxr.run.errors import UserError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_STEPS = 10**8  # a schedule of float64 rates: 800 MB


class TrainingDiverged(UserError):
    """The loss became NaN or infinite during epoch `epoch` (0-based: the epochs done)."""

    def __init__(self, message, *, epoch):
        super().__init__(message)
        self.epoch = epoch


def check_amp(amp, device):
    """Refuse a precision this torch cannot autocast to on `device` (it would silently
    run in float32). fp16 runs on a CPU too, with its GradScaler: slowly, but it checks
    the CUDA path where no GPU is."""
    if amp == "none":
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp]):
            pass
    if any("autocast" in str(w.message).lower() for w in caught):
        raise UserError(
            f"--amp {amp}: torch {torch.__version__} cannot autocast to it on {device.type}; "
            "use --amp bf16 or --amp none"
        )


def autocast(amp, device):
    """The forward pass's mixed-precision context: none, bf16 or fp16."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(amp, device):
    """A GradScaler, enabled for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def finite_mean_loss(loss, *, epoch, iteration, step):
    """The loss's mean over ranks, a float; raises TrainingDiverged on every rank at
    once when it is not finite (a host synchronisation: every rank must stop at the
    same step, before its optimizer step)."""
    mean = all_reduce_mean(loss.detach().float()).item()
    if not math.isfinite(mean):
        raise TrainingDiverged(
            f"loss is {mean} at epoch {epoch + 1}, iteration {iteration + 1} (step {step}); "
            "stopped before the optimizer step. Try a lower --lr, --clip-grad, or --amp none / "
            "bf16 instead of fp16.",
            epoch=epoch,
        )
    return mean


def epoch_generator(seed, epoch, dist_info):
    """Reseed torch's global generators for one epoch of this rank, and return a
    generator on the device for the loop's own draws (SimCLR's views).

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


def checkpoint_state(model, optimizer, scaler, *, epoch, step, **extra):
    """What a checkpoint holds after `epoch` epochs and `step` optimizer steps: the
    weights of `model` (without its DDP wrapper), the optimizer and scaler states,
    and `extra`; tensors and plain values only."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step": step,
        **extra,
    }


def restore(state, *, model, optimizer, scaler, source):
    """(epochs done, global step) to start from: (0, 0) without a state to resume,
    else those of `state` (`checkpoint_state`, read from the file `source`), whose
    weights and optimizer and scaler states are checked to fit and loaded."""
    if state is None:
        return 0, 0
    check_resumable(state, model=model, optimizer=optimizer, scaler=scaler, source=source)
    model.load_state_dict(state["model"])
    settings = [set(group) for group in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])  # fills settings this torch added since
    if any(not mine <= set(group) for mine, group in zip(settings, optimizer.param_groups)):
        raise UserError(f"{source}: its optimizer state lacks settings of this run's optimizer")
    scaler.load_state_dict(state["scaler"])
    return state["epoch"], state["step"]


def resumed_history(state, *, source):
    """The evaluations a resumed detector run saved (`eval_history`: one dict per
    evaluation), [] for a new run."""
    if state is None:
        return []
    history = state.get("eval_history")
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise UserError(f"{source}: its eval_history is not the list of evaluations cxr saves")
    return history


def set_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


class ProgressMeter:
    """An epoch's progress record: every --print-freq iterations (and at the last), a
    line with the loss, learning rate, images/s over all ranks, data-loading time and
    ETA, logged with the means over ranks of `logs` (one stacked all-reduce)."""

    def __init__(self, epoch, args, *, iterations, steps, log):
        """epoch: this one (0-based); args: the run's (--epochs, --print-freq);
        iterations: this epoch's; steps: the whole run's (for the ETA)."""
        self.epoch, self.epochs, self.iterations = epoch, args.epochs, iterations
        self.total_steps, self.print_freq, self.log = steps, args.print_freq, log
        self.losses, self.images, self.data_time = [], 0, 0.0
        self.iteration = -1

    def batches(self, loader):
        """The loader's batches, timing how long each one was waited for."""
        self.started = tick = time.perf_counter()
        for self.iteration, batch in enumerate(loader):
            self.data_time += time.perf_counter() - tick
            yield batch
            tick = time.perf_counter()

    def update(self, *, step, loss, lr, images, logs=None):
        """Record one step: `loss` the mean over ranks, `images` this rank's batch."""
        self.losses.append(loss)
        self.images += images * world_size()
        done = self.iteration + 1
        if done % self.print_freq and done != self.iterations:
            return
        elapsed = time.perf_counter() - self.started
        record = {
            "epoch": self.epoch + 1,
            "iteration": done,
            "step": step,
            "loss": loss,
            "lr": float(lr),
            "images_per_s": self.images / elapsed,
            "data_s": self.data_time / done,
            **_mean_over_ranks(logs or {}),
        }
        eta = datetime.timedelta(seconds=int(elapsed / done * max(self.total_steps - step, 0)))
        self.log(
            f"epoch {self.epoch + 1}/{self.epochs} iter {done}/{self.iterations} "
            f"loss {loss:.4f} lr {record['lr']:.5f} img/s {record['images_per_s']:.1f} "
            f"data {record['data_s']:.3f}s eta {eta}",
            event="train",
            **record,
        )

    @property
    def mean_loss(self):
        return sum(self.losses) / max(len(self.losses), 1)


def _mean_over_ranks(logs):
    """{name: mean over ranks} of scalar tensors, in one stacked all-reduce (one host
    synchronisation for all of them)."""
    if not logs:
        return {}
    means = all_reduce_mean(torch.stack([v.detach().float() for v in logs.values()]))
    return dict(zip(logs, means.tolist()))


def check_run_length(total_steps, flags):
    """Refuse a run too long to schedule (a typo in --epochs, most likely)."""
    if total_steps > MAX_STEPS:
        raise UserError(
            f"{flags} make {total_steps} optimizer steps, more than {MAX_STEPS}; check --epochs"
        )


def check_warmup(warmup_steps, total_steps, flag):
    """Refuse a warmup longer than the run: its learning rate would never reach
    the base rate, and the decay the schedule promises would never happen."""
    if warmup_steps > total_steps:
        raise UserError(
            f"{flag} is longer than the whole run ({warmup_steps} warmup steps, {total_steps} "
            "steps in all); lower it, or train for more epochs"
        )
