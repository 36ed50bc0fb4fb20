"""SimCLR pretraining of a ResNet trunk on the SSL pool of a prepared data folder.

    python train_ssl.py --data-dir data --experiment-name simclr_40pct
    torchrun --nproc_per_node=4 train_ssl.py --data-dir data --experiment-name simclr_40pct

The SSL pool is the first --ssl-fraction of a seeded permutation of the
training images (`cxr.data.splits`), plus the normal images (--include-normal) and
unlabeled --extra-images; train_det.py fine-tunes on the rest. Under torchrun
BatchNorm uses the global batch's statistics (`cxr.nn.global_batchnorm`), as
SimCLR does. Writes <output-dir>/<experiment-name>/pretrain/ (cxr.run.layout):
checkpoint.pth every epoch (--resume continues), and at the end
pretrained-backbone.pth (torchvision ResNet keys) after recomputing its
BatchNorm statistics on clean images (precise BN). --lr is the absolute rate
for the whole batch (batch size x processes).
"""

import argparse
import functools
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from cxr.data.datasets import ImageList, to_network_input
from cxr.data.ssl_pool import extra_images, ssl_pool
from cxr.detection.samplers import ShuffleSampler
from cxr.nn.global_batchnorm import convert_to_global_batchnorm
from cxr.nn.optim import build_optimizer, check_run_length, check_warmup, warmup_cosine_schedule
from cxr.nn.resnet import (
    FEATURE_DIMS,
    build_resnet,
    recompute_batchnorm_statistics,
    save_backbone,
)
from cxr.nn.seeds import stream_seed
from cxr.run import layout
from cxr.run.cli import (
    add_run_flags,
    add_share_flag,
    bare_name,
    default_workers,
    device,
    image_size,
    int_range,
    non_negative_float,
    non_negative_int,
    parser,
    positive_float,
    positive_int,
    seed,
    seed_project_group,
)
from cxr.run.distributed import DistInfo, process_group
from cxr.run.engine import (
    Optimization,
    Step,
    autocast,
    check_amp,
    epoch_range,
    finished,
    grad_scaler,
    log_epoch,
    restore,
    save_checkpoint,
    seed_epoch,
    train_one_epoch,
)
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.folder import open_run
from cxr.ssl.simclr import SimCLR, nt_xent
from cxr.ssl.views import VIEW_PRESETS, ViewConfig, parse_views, simclr_views, views_flag


def get_args_parser():
    p = parser("train_ssl.py", "SimCLR pretraining (torchrun-able).")
    p.add_argument("--data-dir", default="data", help="folder written by python -m cxr.prepare")
    p.add_argument("--output-dir", default="vinbig_output", help="root of the experiment folders")
    p.add_argument(
        "--experiment-name",
        type=bare_name,
        default="simclr",
        help="the run goes to OUTPUT_DIR/EXPERIMENT_NAME/pretrain/",
    )
    p.add_argument(
        "--arch", default="resnet50", choices=sorted(FEATURE_DIMS), help="torchvision ResNet trunk"
    )
    p.add_argument(
        "--image-size", type=image_size, default=512, help="side of the square views in pixels"
    )
    p.add_argument(
        "--batch-size",
        type=int_range(2),
        default=32,
        help="images per process (each gives two views; one image has no negative)",
    )
    p.add_argument("--epochs", type=positive_int, default=100, help="passes over the SSL pool")
    p.add_argument("--lr", type=positive_float, default=0.05, help="absolute peak learning rate")
    p.add_argument(
        "--warmup-epochs",
        type=non_negative_float,
        default=None,
        help="linear warmup of the learning rate, then cosine decay to 0 (default: a tenth of "
        "--epochs, SimCLR's 10 of 100; a value longer than the run is refused)",
    )
    p.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=5e-4,
        help="on weights only; biases and norm parameters are exempt",
    )
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "lars"],
        help="SGD with momentum 0.9, or LARS (SimCLR's, for large batches)",
    )
    p.add_argument(
        "--temperature",
        type=positive_float,
        default=0.5,
        help="NT-Xent temperature (the paper: 0.5)",
    )
    p.add_argument(
        "--projection-dim",
        type=positive_int,
        default=128,
        help="output size of the projection head",
    )
    p.add_argument(
        "--views",
        type=views_flag,
        default="simclr",
        help="view augmentations: a preset (" + ", ".join(VIEW_PRESETS) + ") or JSON overriding "
        'one, e.g. \'{"preset": "cxr", "blur_p": 0.3}\'; keys: '
        + ", ".join(f.name for f in fields(ViewConfig)),
    )
    add_share_flag(
        p,
        "--ssl-fraction",
        dest="ssl_fraction",
        default=0.4,
        meaning="the share of the training images pretrained on",
    )
    p.add_argument(
        "--split-seed", type=seed, default=0, help="seed of the SSL / labeled permutation"
    )
    p.add_argument(
        "--extra-images",
        nargs="+",
        default=None,
        metavar="DIR_OR_FILE",
        help="unlabeled images (PNG/JPEG, any size) added to the SSL pool, e.g. from your own "
        "archive; refused if any is also in the prepared data (default: none)",
    )
    p.add_argument(
        "--include-normal",
        action="store_true",
        help="add the normal images (prepare --keep-normal) to the SSL pool",
    )
    p.add_argument(
        "--workers",
        type=int_range(0, 256),
        default=default_workers(),
        help="data loader processes per training process (default: this machine's cores per "
        "process, at most 4)",
    )
    p.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision: bf16 (CPU or CUDA) or fp16 with a GradScaler (CUDA only)",
    )
    p.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="under torchrun, BatchNorm statistics of the global batch (SimCLR's global BN, "
        "cxr.nn.global_batchnorm, any backend); --no-sync-bn normalizes per process",
    )
    p.add_argument(
        "--clip-grad", type=positive_float, default=None, help="max gradient norm (off by default)"
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="seed of the weights, the data order and the views"
    )
    p.add_argument(
        "--device", type=device, default=None, help="cpu or cuda (default: cuda if available)"
    )
    p.add_argument(
        "--print-freq", type=positive_int, default=10, help="iterations between progress lines"
    )
    p.add_argument(
        "--precise-bn-images",
        type=non_negative_int,
        default=1024,
        help="recompute the trunk's BatchNorm statistics on this many un-augmented SSL images "
        "before saving the backbone (0: keep the running averages of training)",
    )
    add_run_flags(p, ", ".join(layout.PRETRAIN_OUTPUTS))
    seed_project_group(p).add_argument(
        "--devices",
        type=devices_flag,
        default="auto",
        help="'auto' or 1 runs one process here; for N GPUs launch with torchrun "
        "--nproc_per_node=N instead",
    )
    return p


def devices_flag(text):
    """The seed project's --devices: 'auto' or a number of devices."""
    if text != "auto":
        positive_int(text)
    return text


def simclr_step(model, batch, generator, *, args, views, dist_info):
    """Two views of each image on the device, one forward over both, NT-Xent."""
    device = dist_info.device
    images = batch.to(device, non_blocking=True)  # (n, 1, H, W) uint8
    first, second = simclr_views(images, args.image_size, views, generator)
    x = to_network_input(torch.cat([first, second]))  # (2n, 3, size, size)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(args.amp, device):
        z = model(x).float()  # (2n, projection_dim)
    n = len(images)
    return Step(nt_xent(z[:n], z[n:], args.temperature, rank=dist_info.rank), {}, n)


def check_devices_flag(devices, dist_info):  # the seed project's --devices
    if devices not in ("auto", "1") and dist_info.world_size == 1:
        raise UserError(
            f"--devices {devices}: cxr runs one process per device; launch with "
            f"torchrun --nproc_per_node={devices} train_ssl.py ... instead"
        )


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        run(args, dist_info)


@dataclass
class Data:
    """The images of a run and how they are drawn, chosen and checked before anything
    is written."""

    views: ViewConfig
    paths: dict  # {name: path} of the SSL pool
    extra: list  # the --extra-images among them
    dataset: ImageList
    sampler: ShuffleSampler
    loader: torch.utils.data.DataLoader
    schedule: object  # (total steps,) learning rate of each global step
    warmup_steps: int


def choose_data(args, dist_info):
    """The SSL pool, its sampler and loader, the views and the schedule, checked."""
    views = parse_views(args.views)
    log = print if dist_info.is_main else None
    extra = extra_images(args.extra_images, args.data_dir, log) if args.extra_images else []
    paths = ssl_pool(
        args.data_dir,
        ssl_fraction=args.ssl_fraction,
        split_seed=args.split_seed,
        include_normal=args.include_normal,
        extra=extra,
    )
    if len(paths) // dist_info.world_size < args.batch_size:
        raise UserError(
            f"the SSL pool has {len(paths)} images, fewer than --batch-size {args.batch_size} "
            f"x {dist_info.world_size} processes; lower --batch-size or raise --ssl-fraction"
        )
    dataset = ImageList([paths[name] for name in sorted(paths)], args.image_size)
    sampler = ShuffleSampler(
        len(dataset), num_replicas=dist_info.world_size, rank=dist_info.rank, seed=args.seed
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=dist_info.device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    schedule, warmup_steps = learning_rates(args, len(loader))
    return Data(views, paths, extra, dataset, sampler, loader, schedule, warmup_steps)


def check_data(args, nproc):
    """What run() checks of the data before it writes anything, for nproc processes
    (python -m cxr.experiment runs it before its first training stage)."""
    choose_data(args, DistInfo(0, nproc, 0, torch.device("cpu")))


def learning_rates(args, steps_per_epoch):
    """The learning rate of every global step: warmup (a tenth of the run unless
    --warmup-epochs says otherwise), then cosine decay to 0."""
    warmup_epochs = args.epochs / 10 if args.warmup_epochs is None else args.warmup_epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    total_steps = args.epochs * steps_per_epoch
    check_run_length(total_steps, f"--epochs {args.epochs} and --batch-size {args.batch_size}")
    check_warmup(warmup_steps, total_steps, f"--warmup-epochs {warmup_epochs:g}")
    return warmup_cosine_schedule(args.lr, total_steps, warmup_steps=warmup_steps), warmup_steps


def build_model(args, dist_info):
    """The SimCLR model on the device, its BatchNorm global over processes under torchrun
    (unless --no-sync-bn)."""
    torch.manual_seed(stream_seed("weights", seed=args.seed))
    model = SimCLR(build_resnet(args.arch), FEATURE_DIMS[args.arch], args.projection_dim)
    if args.sync_bn and dist_info.world_size > 1:
        model = convert_to_global_batchnorm(model)
    if dist_info.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model.to(dist_info.device)


def run(args, dist_info):
    check_devices_flag(args.devices, dist_info)
    check_amp(args.amp, dist_info.device)
    data = choose_data(args, dist_info)  # everything checked before the run folder is opened
    model = build_model(args, dist_info)
    with open_run(
        Path(args.output_dir) / args.experiment_name / layout.PRETRAIN,
        outputs=layout.PRETRAIN_OUTPUTS,
        final=layout.BACKBONE,
        command="train_ssl.py",
        args=args,
        dist_info=dist_info,
        images=(layout.SSL_IMAGES, data.paths),
    ) as run:
        log_data(run, data)
        optimization = Optimization(
            build_optimizer(args.optimizer, model, lr=args.lr, weight_decay=args.weight_decay),
            grad_scaler(args.amp, dist_info.device),
            data.schedule,
            args.clip_grad,
        )
        start_epoch, step = restore(run, model, optimization)
        wrapped = DistributedDataParallel(model) if dist_info.world_size > 1 else model
        step_fn = functools.partial(simclr_step, args=args, views=data.views, dist_info=dist_info)
        sampler, loader = data.sampler, data.loader
        epochs = epoch_range(start_epoch, args.epochs, args.stop_after)
        for epoch in epochs:
            sampler.set_epoch(epoch)
            rng = seed_epoch(args.seed, epoch, dist_info)
            step, loss = train_one_epoch(
                wrapped,
                step_fn,
                loader,
                optimization,
                step=step,
                epoch=epoch,
                generator=rng,
                run=run,
            )
            log_epoch(run, epoch=epoch, mean_loss=loss)
            save_checkpoint(run, model, optimization, epoch=epoch + 1, step=step)
        if finished(run, epochs):
            save_trunk(run, model, data)


def save_trunk(run, model, data):
    """After the last epoch: precise BatchNorm statistics, then pretrained-backbone.pth."""
    args, dist_info = run.args, run.dist_info
    if args.precise_bn_images:
        precise_batchnorm(model.trunk, data.dataset, args, dist_info, run.logger)
    if dist_info.is_main:
        save_backbone(run.folder, model.trunk_state_dict(), backbone_record(args, data))
    run.logger.log(f"wrote {run.folder.inside(layout.BACKBONE)}", event="done")


def log_data(run, data):
    args, dist_info = run.args, run.dist_info
    images, extra, loader = len(data.paths), len(data.extra), data.loader
    global_bn = args.sync_bn and dist_info.world_size > 1
    normalization = f"global over {dist_info.world_size} processes" if global_bn else "per process"
    run.logger.log(
        f"SimCLR {args.arch} at {args.image_size} px on {images} images ({extra} of them from "
        f"--extra-images) ({len(loader)} iterations of {args.batch_size} x "
        f"{dist_info.world_size} per epoch, {data.warmup_steps} of {len(data.schedule)} steps "
        f"of warmup); BatchNorm statistics {normalization}",
        event="data",
        images=images,
        iterations_per_epoch=len(loader),
        global_batchnorm=global_bn,
    )


def precise_batchnorm(trunk, dataset, args, dist_info, logger):
    """Recompute the trunk's BatchNorm statistics on --precise-bn-images clean images."""
    per_rank = max(1, min(args.precise_bn_images, len(dataset)) // dist_info.world_size)
    shard = torch.utils.data.Subset(
        dataset, range(dist_info.rank * per_rank, (dist_info.rank + 1) * per_rank)
    )
    loader = torch.utils.data.DataLoader(
        shard, batch_size=args.batch_size, num_workers=args.workers
    )
    log = print if dist_info.is_main else None
    batches = recompute_batchnorm_statistics(trunk, loader, dist_info.device, log=log)
    logger.log(
        f"BatchNorm statistics recomputed on {per_rank * dist_info.world_size} un-augmented "
        f"images ({batches} batches per process)",
        event="precise_bn",
    )


def backbone_record(args, data):
    """What pretrained-backbone.json says of the backbone and how it was trained."""
    return {
        "arch": args.arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "data_dir": str(args.data_dir),
        "ssl_images": len(data.paths),
        "ssl_fraction": args.ssl_fraction,
        "split_seed": args.split_seed,
        "include_normal": args.include_normal,
        "extra_images": len(data.extra),
        "temperature": args.temperature,
        "views": data.views.to_dict(),
        "learning_rate": args.lr,
        "optimizer": args.optimizer,
        "batch_size": args.batch_size,
    }


if __name__ == "__main__":
    exit_on_user_error(main)
