"""One epoch of cxr's training engine over given batches, for the benchmarks that time
the engine against the bare loop (bench_det.py, bench_ssl.py)."""

import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from cxr.nn.optim import build_optimizer, warmup_cosine_schedule
from cxr.run.distributed import DistInfo
from cxr.run.engine import Optimization, train_one_epoch
from cxr.run.folder import Run, RunLogger
from cxr.run.outputs import OutputFolder


def engine_epoch(model, step_fn, batches, *, optimizer, device, generator=None):
    """train_one_epoch over `batches` in one process, logging nothing."""
    optimization = Optimization(
        optimizer,
        torch.amp.GradScaler(device.type, enabled=False),
        warmup_cosine_schedule(optimizer.param_groups[0]["lr"], 100 * len(batches)),
    )
    folder = OutputFolder(Path(tempfile.gettempdir()))
    run = Run(
        folder,
        RunLogger(folder, enabled=False),
        {},
        None,
        SimpleNamespace(epochs=1, print_freq=10**9),
        DistInfo(0, 1, 0, device),
    )
    train_one_epoch(
        model, step_fn, batches, optimization, step=0, epoch=0, run=run, generator=generator
    )


def sgd(model, lr):
    return build_optimizer("sgd", model, lr=lr, weight_decay=1e-4)
