"""One epoch of a training script's own loop (train_ssl.train_one_epoch,
train_det.train_one_epoch) over given batches, logging nothing: what the benchmarks
time against the bare loop (bench_det.py, bench_ssl.py)."""

from types import SimpleNamespace

import torch

import train_det
import train_ssl
from cxr.nn.optim import build_optimizer, warmup_cosine_schedule

QUIET = SimpleNamespace(epochs=1, print_freq=10**9, amp="none", clip_grad=None, channels_last=False)


def _one_epoch(script, model, batches, optimizer, **options):
    rate = optimizer.param_groups[0]["lr"]
    schedule = warmup_cosine_schedule(rate, 100 * len(batches))
    scaler = torch.amp.GradScaler(next(model.parameters()).device.type, enabled=False)
    log = lambda *_, **__: None  # noqa: E731
    script.train_one_epoch(
        model, batches, optimizer, scaler, schedule, epoch=0, step=0, log=log, **options
    )


def ssl_epoch(model, batches, *, optimizer, image_size, views, generator):
    """train_ssl.py's loop over `batches` of uint8 images, in one process."""
    args = SimpleNamespace(**vars(QUIET), image_size=image_size, temperature=0.5)
    options = dict(views=views, generator=generator, args=args, rank=0)
    _one_epoch(train_ssl, model, batches, optimizer, **options)


def det_epoch(model, batches, *, optimizer):
    """train_det.py's loop over `batches` of (images, targets), in one process."""
    _one_epoch(train_det, model, batches, optimizer, args=QUIET)


def sgd(model, lr):
    return build_optimizer("sgd", model, lr=lr, weight_decay=1e-4)
