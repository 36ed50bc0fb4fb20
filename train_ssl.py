"""SimCLR pretraining of a ResNet trunk on the SSL pool of a prepared data folder.

    python train_ssl.py --data-dir data --experiment-name simclr_40pct
    torchrun --nproc_per_node=4 train_ssl.py --data-dir data --experiment-name simclr_40pct

main -> train: data (the SSL pool, checked) -> model -> optimizer -> resume ->
for each epoch: train_one_epoch (views, forward, NT-Xent, backward, step) ->
checkpoint; at the end, precise BatchNorm and pretrained-backbone.pth. The
SSL pool is the first --ssl-fraction of a seeded permutation of the training
images (`cxr.data.splits`), plus the normal images (--include-normal) and
unlabeled --extra-images; train_det.py fine-tunes on the rest. Under
torchrun BatchNorm uses the global batch's statistics
(`cxr.nn.global_batchnorm`), as SimCLR does. --lr is the absolute rate for
the whole batch (batch size x processes). Writes
<output-dir>/<experiment-name>/pretrain/ (`cxr.run.layout`).
"""

import argparse
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from cxr.data.datasets import ImageList
from cxr.data.ssl_pool import extra_images, ssl_pool
from cxr.nn.global_batchnorm import convert_to_global_batchnorm
from cxr.nn.optim import build_optimizer, warmup_cosine_schedule
from cxr.nn.resnet import (
    FEATURE_DIMS,
    build_resnet,
    recompute_batchnorm_statistics,
    to_network_input,
)
from cxr.nn.seeds import stream_seed
from cxr.pipeline.presets import script_presets
from cxr.run import cli, engine, layout
from cxr.run.distributed import loader_options, process_group
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.folder import open_run
from cxr.run.model_files import save_backbone
from cxr.run.progress import progress
from cxr.run.provenance import keys_of, trained_on_entry
from cxr.ssl.sampler import ShuffleSampler
from cxr.ssl.simclr import SimCLR, nt_xent
from cxr.ssl.views import VIEW_PRESETS, ViewConfig, simclr_views


def get_args_parser():
    p = cli.preset_parser(
        "train_ssl.py",
        "SimCLR pretraining (torchrun-able).",
        presets=script_presets("train_ssl.py"),
    )
    cli.add_folder_flags(p, experiment_help="the run goes to OUTPUT_DIR/EXPERIMENT_NAME/pretrain/")
    p.add_argument("--arch", choices=sorted(FEATURE_DIMS), help="torchvision ResNet trunk")
    p.add_argument("--image-size", type=cli.image_size, help="side of the views in px")
    p.add_argument(
        "--batch-size",
        type=cli.int_range(2),
        help="images per process (two views each)",
    )
    p.add_argument("--epochs", type=cli.positive_int, help="passes over the SSL pool")
    p.add_argument("--lr", type=cli.positive_float, help="absolute peak learning rate")
    p.add_argument(
        "--warmup-epochs",
        type=cli.non_negative_float,
        default=None,
        help="linear warmup, then cosine decay to 0 (default: a tenth of --epochs)",
    )
    p.add_argument(
        "--weight-decay", type=cli.non_negative_float, default=5e-4, help="on weights, not biases"
    )
    p.add_argument(
        "--optimizer", default="sgd", choices=["sgd", "lars"], help="SGD with momentum, or LARS"
    )
    p.add_argument("--temperature", type=cli.positive_float, help="NT-Xent temperature")
    p.add_argument(
        "--projection-dim", type=cli.positive_int, default=128, help="output size of the head"
    )
    p.add_argument(
        "--views",
        type=cli.views_flag,
        help=f"a preset ({', '.join(VIEW_PRESETS)}) or JSON overriding one; keys: "
        + ", ".join(f.name for f in fields(ViewConfig)),
    )
    cli.add_share_flag(
        p,
        "--ssl-fraction",
        dest="ssl_fraction",
        default=0.4,
        meaning="the share of the training images pretrained on",
    )
    p.add_argument("--split-seed", type=cli.seed, default=0, help="seed of the SSL / labeled split")
    p.add_argument(
        "--extra-images",
        nargs="+",
        default=None,
        metavar="DIR_OR_FILE",
        help="unlabeled images (PNG/JPEG, any size) added to the SSL pool (default: none)",
    )
    p.add_argument(
        "--drop-prepared",
        action="store_true",
        help="leave out the --extra-images that are prepared images or films of test patients "
        "(default: refuse them), each listed in the run's log",
    )
    p.add_argument(
        "--include-normal", action="store_true", help="add the normal images to the SSL pool"
    )
    p.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="under torchrun, BatchNorm statistics of the global batch (SimCLR's global BN)",
    )
    p.add_argument(
        "--precise-bn-images",
        type=cli.non_negative_int,
        default=1024,
        help="recompute BatchNorm statistics on this many clean images before saving (0: off)",
    )
    cli.add_device_flags(p)
    cli.add_training_flags(p, outputs=", ".join(layout.PRETRAIN_OUTPUTS), print_freq=10)
    cli.seed_project_group(p).add_argument(
        "--devices",
        type=devices_flag,
        default="auto",
        help="'auto' or 1 (for N GPUs: torchrun --nproc_per_node=N)",
    )
    return p


def devices_flag(text):
    """The seed project's --devices: 'auto' or a number of devices."""
    if text != "auto":
        cli.positive_int(text)
    return text


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        train(args, dist_info)


def train(args, dist_info):
    """Check everything, then pretrain; each epoch ends in a checkpoint."""
    check_devices_flag(args.devices, dist_info)
    engine.check_amp(args.amp, dist_info.device)
    log = print if dist_info.is_main else None
    data = choose_data(args, dist_info, log)  # before any write
    if args.dry_run is not None:
        for path, why in data.dropped.items():  # --drop-prepared: the whole list
            print(f"left out: {path} ({why})")
        return print(f"train_ssl.py: checked, {describe(args, data)}; nothing written")
    device, rank = dist_info.device, dist_info.rank
    model = build_model(args, dist_info)
    optimizer = build_optimizer(args.optimizer, model, lr=args.lr, weight_decay=args.weight_decay)
    scaler = engine.grad_scaler(args.amp, device)
    sampler = ShuffleSampler(
        len(data.dataset), num_replicas=data.processes, rank=rank, seed=args.seed
    )
    loader = torch.utils.data.DataLoader(
        data.dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=True,
        **loader_options(device, args.workers),
    )
    with open_run(
        Path(args.output_dir) / args.experiment_name / layout.PRETRAIN,
        outputs=layout.PRETRAIN_OUTPUTS,
        final=layout.BACKBONE,
        command="train_ssl.py",
        args=args,
        dist_info=dist_info,
        images=(layout.SSL_IMAGES, data.paths),
    ) as run:
        run.log(
            describe(args, data),
            event="data",
            images=len(data.paths),
            iterations_per_epoch=len(loader),
            global_batchnorm=args.sync_bn and data.processes > 1,
        )
        if data.dropped:
            run.log(
                f"--drop-prepared: left out {len(data.dropped)} --extra-images (this log lists "
                "them)",
                event="extra_images_dropped",
                dropped={str(path): why for path, why in data.dropped.items()},
            )
        start_epoch, step = engine.restore(
            run.resume_state(),
            model=model,
            optimizer=optimizer,
            scaler=scaler,
            source=run.resumed_from,
        )
        decode_once(data.dataset, args.workers, run.log)
        ddp_model = DistributedDataParallel(model) if data.processes > 1 else model
        epochs = engine.epoch_range(start_epoch, args.epochs, args.stop_after)
        for epoch in epochs:
            sampler.set_epoch(epoch)
            step, mean_loss = train_one_epoch(
                ddp_model,
                loader,
                optimizer,
                scaler,
                data.schedule,
                epoch=epoch,
                step=step,
                views=data.views,
                generator=engine.epoch_generator(args.seed, epoch, dist_info),
                args=args,
                rank=rank,
                log=run.log,
            )
            run.log_epoch(epoch, mean_loss=mean_loss)
            run.save(engine.checkpoint_state(model, optimizer, scaler, epoch=epoch + 1, step=step))
        if not run.stopped_early(epochs):
            save_trunk(run, model, data)


DECODE_ONCE_BYTES = 2**30  # per process: the SSL pool at --image-size kept in memory up to this


def decode_once(dataset, workers, log):
    """Decode the SSL pool once when it fits DECODE_ONCE_BYTES, so that no epoch decodes
    again (at 64 px one worker's decoding is a third of a CPU step: docs/benchmarks.md)."""
    size = dataset.decoded_bytes()
    if size > DECODE_ONCE_BYTES:
        log(f"images decoded every epoch: the pool would take {size / 2**30:.1f} GiB in memory")
        return
    start = time.perf_counter()
    dataset.decode_once(workers=workers)
    log(
        f"decoded the {len(dataset)} images once ({size / 2**20:.0f} MiB in memory, "
        f"{time.perf_counter() - start:.1f} s); epochs read them from memory",
        event="decode_once",
    )


def train_one_epoch(
    model, loader, optimizer, scaler, lr_schedule, *, epoch, step, views, generator, args, rank, log
):
    """One pass over this rank's share of the SSL pool from global step `step`:
    two views of each image, NT-Xent over the views of every rank (Chen et al.,
    2020, eq. 1). Returns (next global step, mean loss)."""
    device = next(model.parameters()).device
    meter = engine.ProgressMeter(
        epoch, args, iterations=len(loader), steps=len(lr_schedule), log=log
    )
    model.train()
    for images in meter.batches(loader):
        engine.set_learning_rate(optimizer, lr_schedule[step])
        images = images.to(device, non_blocking=True)  # (n, 1, H, W) uint8
        first, second = simclr_views(images, args.image_size, views, generator)
        x = to_network_input(torch.cat([first, second]))  # (2n, 3, size, size)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with engine.autocast(args.amp, device):
            z = model(x)  # (2n, projection_dim)
        n = len(images)
        loss = nt_xent(z[:n], z[n:], args.temperature, rank=rank)  # float32
        mean_loss = engine.finite_mean_loss(loss, epoch=epoch, iteration=meter.iteration, step=step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        meter.update(step=step, loss=mean_loss, lr=lr_schedule[step - 1], images=n)
    return step, meter.mean_loss


def check_devices_flag(devices, dist_info):  # the seed project's --devices
    if devices not in ("auto", "1") and dist_info.world_size == 1:
        raise UserError(
            f"--devices {devices}: cxr runs one process per device; launch with "
            f"torchrun --nproc_per_node={devices} train_ssl.py ... instead"
        )


@dataclass
class PretrainingData:
    """The images of a run and how they are drawn, chosen and checked before anything
    is written."""

    views: ViewConfig
    paths: dict  # {name: path} of the SSL pool
    extra: list  # the --extra-images among them
    dropped: dict  # {--extra-images left out by --drop-prepared: why}
    dataset: ImageList
    processes: int
    schedule: object  # (total steps,) learning rate of each global step
    warmup_steps: int


def choose_data(args, dist_info, log):
    """The SSL pool, the views and the schedule for this run's processes (--dry-run's
    number, or dist_info's), checked; log: where progress lines go (None: nowhere)."""
    processes = args.dry_run or dist_info.world_size
    extra, dropped = [], {}
    if args.extra_images:
        extra, dropped = extra_images(
            args.extra_images,
            args.data_dir,
            drop_prepared=args.drop_prepared,
            log=log,
            dist_info=dist_info,
            workers=args.workers,
        )
    paths = ssl_pool(
        args.data_dir,
        ssl_fraction=args.ssl_fraction,
        split_seed=args.split_seed,
        include_normal=args.include_normal,
        extra=extra,
    )
    steps_per_epoch = len(paths) // processes // args.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"the SSL pool has {len(paths)} images, fewer than --batch-size {args.batch_size} "
            f"x {processes} processes; lower --batch-size or raise --ssl-fraction"
        )
    dataset = ImageList([paths[name] for name in sorted(paths)], args.image_size)
    schedule, warmup_steps = learning_rates(args, steps_per_epoch)
    views = cli.parse_views(args.views)
    return PretrainingData(views, paths, extra, dropped, dataset, processes, schedule, warmup_steps)


def learning_rates(args, steps_per_epoch):
    """(the learning rate of every global step, warmup steps): warmup (a tenth of the
    run unless --warmup-epochs says otherwise), then cosine decay to 0."""
    warmup_epochs = args.epochs / 10 if args.warmup_epochs is None else args.warmup_epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    total_steps = args.epochs * steps_per_epoch
    engine.check_run_length(
        total_steps, f"--epochs {args.epochs} and --batch-size {args.batch_size}"
    )
    engine.check_warmup(warmup_steps, total_steps, f"--warmup-epochs {warmup_epochs:g}")
    return warmup_cosine_schedule(args.lr, total_steps, warmup_steps=warmup_steps), warmup_steps


def describe(args, data):
    """One line: what the run trains on, and how."""
    global_bn = args.sync_bn and data.processes > 1
    normalization = f"global over {data.processes} processes" if global_bn else "per process"
    return (
        f"SimCLR {args.arch} at {args.image_size} px on {len(data.paths)} images "
        f"({len(data.extra)} of them from --extra-images) ({len(data.schedule) // args.epochs} "
        f"iterations of {args.batch_size} x {data.processes} per epoch, {data.warmup_steps} of "
        f"{len(data.schedule)} steps of warmup); BatchNorm statistics {normalization}"
    )


def build_model(args, dist_info):
    """The SimCLR model on the device, its BatchNorm global over processes under torchrun
    (unless --no-sync-bn)."""
    torch.manual_seed(stream_seed("weights", seed=args.seed))
    model = SimCLR(build_resnet(args.arch), FEATURE_DIMS[args.arch], args.projection_dim)
    if args.sync_bn and dist_info.world_size > 1:
        model = convert_to_global_batchnorm(model)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model.to(dist_info.device)


def save_trunk(run, model, data):
    """After the last epoch: precise BatchNorm statistics, then pretrained-backbone.pth."""
    args, dist_info = run.args, run.dist_info
    if args.precise_bn_images:
        precise_batchnorm(model.trunk, data.dataset, run)
    log = print if dist_info.is_main else None
    names, keys = keys_of(
        data.paths, what="the SSL pool", log=log, dist_info=dist_info, workers=args.workers
    )
    if dist_info.is_main:
        trained_on = [trained_on_entry("SSL pool", names, keys, data_dir=args.data_dir)]
        meta = {**backbone_record(args, data), "trained_on": trained_on}
        save_backbone(run.folder, model.trunk_state_dict(), meta)
    run.log(f"wrote {run.folder.inside(layout.BACKBONE)}", event="done")


def precise_batchnorm(trunk, dataset, run):
    """Recompute the trunk's BatchNorm statistics on --precise-bn-images clean images,
    each rank on its own equal share."""
    args, dist_info = run.args, run.dist_info
    per_rank = max(1, min(args.precise_bn_images, len(dataset)) // dist_info.world_size)
    start = dist_info.rank * per_rank
    shard = torch.utils.data.Subset(dataset, range(start, start + per_rank))
    loader = torch.utils.data.DataLoader(
        shard, batch_size=args.batch_size, num_workers=args.workers
    )
    log = print if dist_info.is_main else None
    batches = progress(loader, "precise BatchNorm", log=log)
    count = recompute_batchnorm_statistics(trunk, batches, dist_info.device)
    run.log(
        f"BatchNorm statistics recomputed on {per_rank * dist_info.world_size} un-augmented "
        f"images ({count} batches per process)",
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
