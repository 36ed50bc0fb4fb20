"""Faster R-CNN fine-tuning on the labeled set, from the SSL backbone or a random one.

    python train_det.py --data-dir data --experiment-name simclr_40pct
    torchrun --nproc_per_node=8 --max-restarts=3 train_det.py ... --auto-resume

The labeled set is the last --labeled-fraction of the SSL split's seeded
permutation (`cxr.data.splits`); an overlap with the experiment's SSL pool is
refused. All five ResNet stages train with global BatchNorm by default, so a
random start trains too and an SSL-vs-random comparison changes --init only.
Training oversamples rare classes by repeat factors and augments every item
with its own seed (`cxr.detection.samplers`, `cxr.detection.augment`); the schedule
counts the steps of every epoch. Every --eval-every epochs COCO mAP is
measured on the test split (or a held-out --val-fraction). Writes
<output-dir>/<experiment-name>/ (cxr.run.layout): checkpoint.pth every epoch,
eval_history.json, and at the end fasterrcnn_final.pth with its JSON.
"""

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from cxr.data.datasets import DetectionDataset, load_coco, read_classes, split_images
from cxr.data.image_lists import data_fingerprint, read_image_list
from cxr.data.splits import partition, seeded_permutation
from cxr.detection.augment import BoxAugment
from cxr.detection.detector import (
    ANCHOR_SIZES,
    build_detector,
    detection_collate,
    initialize_backbone,
    predict,
    save_detector,
)
from cxr.detection.samplers import RepeatFactorSampler, repeat_factors
from cxr.evaluation.coco_metrics import coco_ground_truth, coco_metrics
from cxr.nn.global_batchnorm import convert_to_global_batchnorm
from cxr.nn.optim import (
    build_optimizer,
    check_run_length,
    check_warmup,
    step_schedule,
    warmup_cosine_schedule,
)
from cxr.nn.resnet import FEATURE_DIMS, backbone_meta, infer_arch, load_trunk_weights
from cxr.nn.seeds import stream_seed
from cxr.run import layout
from cxr.run.cli import (
    add_run_flags,
    add_share_flag,
    bare_name,
    default_workers,
    device,
    float_range,
    fraction,
    fraction_list,
    image_size,
    int_range,
    non_negative_float,
    non_negative_int,
    parser,
    positive_float,
    positive_int,
    seed,
)
from cxr.run.distributed import DistInfo, gather_to_main, inference_shard, process_group
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


def get_args_parser():
    p = parser("train_det.py", "Faster R-CNN fine-tuning (torchrun-able).")
    p.add_argument("--data-dir", default="data", help="folder written by python -m cxr.prepare")
    p.add_argument("--output-dir", default="vinbig_output", help="root of the experiment folders")
    p.add_argument(
        "--experiment-name",
        type=bare_name,
        default="simclr",
        help="the run goes to OUTPUT_DIR/EXPERIMENT_NAME/, beside pretrain/",
    )
    p.add_argument(
        "--init",
        default="ssl",
        help="ssl (the experiment's pretrain/pretrained-backbone.pth), random, or a path to any "
        "torchvision ResNet state dict (e.g. ImageNet weights)",
    )
    p.add_argument(
        "--arch",
        default=None,
        choices=sorted(FEATURE_DIMS),
        help="default: the SSL backbone's, or the architecture of the --init file's tensors; "
        "resnet50 for --init random",
    )
    p.add_argument(
        "--image-size",
        type=image_size,
        default=512,
        help="images are read at this size, not upscaled",
    )
    add_share_flag(
        p,
        "--labeled-fraction",
        dest="labeled_fraction",
        default=None,
        meaning="the share of the training images fine-tuned on, with their labels",
        default_text=" (default: 1 - the SSL fraction recorded in pretrain/, else 1)",
    )
    p.add_argument(
        "--split-seed", type=seed, default=None, help="default: the one pretraining used, else 0"
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="allow labeled images that were also in the SSL pool",
    )
    p.add_argument(
        "--trainable-layers",
        type=int_range(0, 5),
        default=5,
        help="ResNet stages trained, 0-5; 5 (all) trains a random start too (torchvision's "
        "fine-tuning recipe for ImageNet weights is 3 with --norm frozen)",
    )
    p.add_argument(
        "--norm",
        default="syncbn",
        choices=["frozen", "bn", "syncbn"],
        help="syncbn: BatchNorm with statistics over all processes' batches "
        "(cxr.nn.global_batchnorm; plain BatchNorm on one process); bn: per process; "
        "frozen: FrozenBatchNorm2d",
    )
    p.add_argument(
        "--roi-batch-size",
        type=positive_int,
        default=512,
        help="proposals sampled per image to train the box head (torchvision: 512); "
        "lower it to train faster on a CPU",
    )
    p.add_argument(
        "--rpn-proposals",
        type=positive_int,
        default=2000,
        help="proposals the RPN keeps per image in training (torchvision: 2000); lower it to train "
        "faster on a CPU",
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per process")
    p.add_argument(
        "--epochs", type=positive_int, default=26, help="passes over the oversampled labeled set"
    )
    p.add_argument("--lr", type=positive_float, default=0.01, help="absolute peak learning rate")
    p.add_argument(
        "--warmup-iters",
        type=non_negative_int,
        default=None,
        help="iterations of linear warmup (default: a tenth of the run, at most 500; a value "
        "longer than the run is refused)",
    )
    p.add_argument(
        "--warmup-factor",
        type=fraction,
        default=0.0,
        help="the learning rate's share at the start of warmup (torchvision's detection "
        "recipe: 0.001); it rises linearly to 1",
    )
    p.add_argument(
        "--lr-schedule",
        default="step",
        choices=["step", "cosine"],
        help="after warmup: x0.1 at each of --lr-steps, or cosine decay to 0",
    )
    p.add_argument(
        "--lr-steps",
        type=lr_steps,
        default="0.67,0.89",
        help="step schedule: rising shares of the run at which the rate decays x0.1",
    )
    p.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=1e-4,
        help="on weights; biases and norms are exempt",
    )
    p.add_argument(
        "--repeat-threshold",
        type=fraction,
        default=0.4,
        help="LVIS repeat-factor threshold t (0: no oversampling)",
    )
    p.add_argument(
        "--repeat-rounding",
        default="stochastic",
        choices=["stochastic", "ceil"],
        help="stochastic (detectron2) or ceil (the seed project / mmdetection)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="box-aware online augmentation (--no-augment to turn off)",
    )
    p.add_argument(
        "--negatives",
        type=float_range(0.0, 100.0),
        default=0.0,
        help="add this many normal images per labeled image as box-free negatives "
        "(needs prepare --keep-normal)",
    )
    p.add_argument(
        "--val-fraction",
        type=float_range(0.0, 1.0, high_open=True, what="a share"),
        default=0.0,
        help="evaluate on this held-out share of the labeled images instead of the test split",
    )
    p.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=1,
        help="epochs between evaluations (0: only at the end)",
    )
    p.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=8,
        help="images per forward pass when evaluating",
    )
    p.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision: bf16 (CPU or CUDA) or fp16 with a GradScaler (CUDA only)",
    )
    p.add_argument(
        "--clip-grad", type=positive_float, default=None, help="max gradient norm (off by default)"
    )
    p.add_argument(
        "--workers",
        type=int_range(0, 256),
        default=default_workers(),
        help="data loader processes per training process (default: this machine's cores per "
        "process, at most 4)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the head weights, the epoch order and the augmentations",
    )
    p.add_argument(
        "--device", type=device, default=None, help="cpu or cuda (default: cuda if available)"
    )
    p.add_argument(
        "--print-freq", type=positive_int, default=20, help="iterations between progress lines"
    )
    add_run_flags(p, ", ".join(layout.DETECTOR_OUTPUTS) + "; never pretrain/ or eval/")
    return p


def lr_steps(text):
    """--lr-steps: rising shares of the run in (0, 1), kept as typed."""
    steps = fraction_list(text, low_open=True, high_open=True)
    if steps != sorted(steps):
        raise argparse.ArgumentTypeError(f"{text!r}: the shares must rise")
    return text


def pretrain_record(args):
    """(metadata of the experiment's SSL backbone or {}, the names in its SSL pool or
    None). A pool drawn from another preparation of the data is refused: its
    names could be this preparation's labeled or test images."""
    folder = Path(args.output_dir) / args.experiment_name / layout.PRETRAIN
    pool = read_image_list(folder / layout.SSL_IMAGES)
    if pool is not None and pool.data_fingerprint != data_fingerprint(args.data_dir):
        raise UserError(
            f"the SSL pool of {folder} was drawn from another preparation of the data than "
            f"{args.data_dir} holds now (prepared again, with another seed or table?): fine-tune "
            "on the data it was pretrained with, or pretrain again"
        )
    return backbone_meta(folder / layout.BACKBONE), (pool.names if pool else None)


def choose_images(args, meta, ssl_pool):
    """(labeled training names, held-out names or None for the test split, negative paths)."""
    train = split_images(args.data_dir, "train")
    labeled_fraction = args.labeled_fraction
    if labeled_fraction is None:
        labeled_fraction = 1.0 - meta.get("ssl_fraction", 0.0)
    labeled = partition(
        list(train), meta.get("ssl_fraction", 0.0), labeled_fraction, args.split_seed
    ).labeled
    overlap = sorted(set(labeled) & set(ssl_pool or ()))
    if overlap and not args.allow_overlap:
        raise UserError(
            f"{len(overlap)} of the {len(labeled)} labeled images (e.g. {overlap[0]}) were in the "
            f"SSL pool of {args.experiment_name}/pretrain; lower --labeled-fraction to at most "
            f"{1 - meta.get('ssl_fraction', 0.0):.3f}, or pass --allow-overlap"
        )
    held_out = None
    if args.val_fraction:
        order = seeded_permutation(labeled, stream_seed("held-out", seed=args.split_seed))
        held_out = sorted(order[: round(len(order) * args.val_fraction)])
        labeled = sorted(set(labeled) - set(held_out))
    negatives = []
    if args.negatives:
        normal = split_images(args.data_dir, "normal")
        order = seeded_permutation(list(normal), stream_seed("negatives", seed=args.split_seed))
        negatives = [normal[name] for name in sorted(order[: round(args.negatives * len(labeled))])]
    if not labeled:
        ssl_fraction = meta.get("ssl_fraction", 0.0)
        raise UserError(
            f"no labeled images are left: the SSL pool took {ssl_fraction:.0%} of the training "
            "images"
            + (
                " (all of them); pretrain on a smaller --ssl-fraction, or fine-tune on them with "
                "--allow-overlap --labeled-fraction F"
                if ssl_fraction >= 1
                else "; raise --labeled-fraction"
            )
        )
    return labeled, held_out, negatives


def default_arch(init, meta):
    """--arch when not given: the SSL backbone's (its JSON), the architecture of
    an --init PATH's tensors, else resnet50."""
    if init == "ssl":
        return meta.get("arch", "resnet50")
    if init == "random":
        return "resnet50"
    return infer_arch(load_trunk_weights(init)) or "resnet50"


def evaluation_set(args, held_out):
    """(dataset, pycocotools COCO) of the evaluation images: the test split, or the
    held-out labeled images."""
    split = "test" if held_out is None else "train"
    coco = load_coco(Path(args.data_dir) / f"{split}_annotations.json")
    if held_out is not None:
        names = set(held_out)
        keep = {image["id"] for image in coco["images"] if Path(image["file_name"]).stem in names}
        coco = {
            **coco,
            "images": [i for i in coco["images"] if i["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
        }
    return DetectionDataset(coco, Path(args.data_dir) / split), coco_ground_truth(coco)


def detection_step(model, batch, generator, *, amp, device):
    """Images and targets to the device; the sum of Faster R-CNN's four losses."""
    images, targets = batch
    images = [image.to(device, non_blocking=True).expand(3, -1, -1) for image in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    with autocast(amp, device):
        losses = model(images, targets)
    return Step(sum(losses.values()), losses, len(images))


def training_loader(dataset, factors, args, dist_info):
    """(sampler, loader) of the oversampled, sharded, per-item-seeded training epochs."""
    sampler = RepeatFactorSampler(
        factors,
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
        seed=args.seed,
        rounding=args.repeat_rounding,
        batch_size=args.batch_size,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=detection_collate,
        pin_memory=dist_info.device.type == "cuda",
    )
    return sampler, loader


def epoch_steps(sampler, batch_size, epochs):
    """The optimizer steps of every epoch: repeat-factor epochs differ in length
    (stochastic rounding) and exceed sum(r) (ceil rounding), so they are counted."""
    return [math.ceil(sampler.shard_length(epoch) / batch_size) for epoch in range(epochs)]


DEFAULT_WARMUP = 500  # iterations, unless a tenth of the run is shorter


def warmup_iters(args, total_steps):
    """--warmup-iters, or by default a tenth of the run, at most DEFAULT_WARMUP."""
    if args.warmup_iters is not None:
        check_warmup(args.warmup_iters, total_steps, f"--warmup-iters {args.warmup_iters}")
        return args.warmup_iters
    return min(DEFAULT_WARMUP, math.ceil(total_steps / 10))


def learning_rates(args, total_steps):
    """The learning rate of every global step of the whole run."""
    check_run_length(total_steps, f"--epochs {args.epochs} and --batch-size {args.batch_size}")
    warmup = warmup_iters(args, total_steps)
    if args.lr_schedule == "cosine":
        return warmup_cosine_schedule(
            args.lr, total_steps, warmup_steps=warmup, start_factor=args.warmup_factor
        )
    milestones = [round(float(f) * total_steps) for f in args.lr_steps.split(",")]
    return step_schedule(
        args.lr,
        total_steps,
        warmup_steps=warmup,
        milestones=milestones,
        start_factor=args.warmup_factor,
    )


@dataclass
class Data:
    """The images of a run, chosen and checked before anything is written."""

    classes: tuple  # the prepared data's class names, category ids 1..K
    labeled: list  # names of the labeled training images
    sampler: RepeatFactorSampler
    loader: torch.utils.data.DataLoader
    factors: list  # repeat factor of each training item
    negatives: int
    schedule: object  # (total steps,) learning rate of each global step
    eval_dataset: DetectionDataset
    ground_truth: object  # pycocotools COCO of the evaluation images
    held_out: bool


def choose_data(args, dist_info, meta, ssl_pool):
    """Phase 1: the labeled images, their sampler and schedule, the evaluation set."""
    classes = read_classes(args.data_dir)
    labeled, held_out, negatives = choose_images(args, meta, ssl_pool)
    dataset = DetectionDataset.split(
        args.data_dir,
        "train",
        names=set(labeled),
        negatives=negatives,
        augment=BoxAugment() if args.augment else None,
    )
    factors = repeat_factors(dataset.image_classes(), args.repeat_threshold)
    sampler, loader = training_loader(dataset, factors, args, dist_info)
    per_epoch = math.ceil(sum(factors) / (args.batch_size * dist_info.world_size))
    check_run_length(args.epochs * per_epoch, f"--epochs {args.epochs}")  # before counting them
    schedule = learning_rates(args, sum(epoch_steps(sampler, args.batch_size, args.epochs)))
    eval_dataset, ground_truth = evaluation_set(args, held_out)
    if not ground_truth.dataset["annotations"]:
        where = "held-out" if held_out is not None else "test"
        raise UserError(
            f"the {len(eval_dataset)} {where} images hold no box: there would be nothing to "
            "evaluate on (prepare with a --test-fraction, or raise --val-fraction)"
        )
    return Data(
        classes=classes,
        labeled=labeled,
        sampler=sampler,
        loader=loader,
        factors=factors,
        negatives=len(negatives),
        schedule=schedule,
        eval_dataset=eval_dataset,
        ground_truth=ground_truth,
        held_out=held_out is not None,
    )


def settle_defaults(args, meta):
    """--arch and --split-seed when not given: the pretraining's (`default_arch`)."""
    args.arch = args.arch or default_arch(args.init, meta)
    args.split_seed = meta.get("split_seed", 0) if args.split_seed is None else args.split_seed


def check_data(args, nproc):
    """What run() checks of the data before it writes anything, for nproc processes
    (python -m cxr.experiment runs it before its first training stage, when the
    SSL backbone may not exist yet)."""
    meta, ssl_pool = pretrain_record(args)
    settle_defaults(args, meta)
    choose_data(args, DistInfo(0, nproc, 0, torch.device("cpu")), meta, ssl_pool)


def build_model(args, dist_info, classes, ssl_backbone):
    """Phase 2: Faster R-CNN with the --init trunk; returns (model on the device, message)."""
    torch.manual_seed(stream_seed("weights", seed=args.seed))
    model = build_detector(
        arch=args.arch,
        image_size=args.image_size,
        num_classes=len(classes),
        norm=args.norm,
        trainable_layers=args.trainable_layers,
        roi_batch_size=args.roi_batch_size,
        rpn_proposals=args.rpn_proposals,
    )
    message = initialize_backbone(model, args.init, args.arch, ssl_backbone)
    if args.norm == "syncbn" and dist_info.world_size > 1:
        model = convert_to_global_batchnorm(model)
    return model.to(dist_info.device), message


def evaluate(model, data, *, epoch, run):
    """Phase 3: COCO metrics of the evaluation images after `epoch`, on rank 0 (None
    elsewhere, and when no evaluation is due: every --eval-every epochs and after
    the last)."""
    args, dist_info = run.args, run.dist_info
    last = epoch + 1 == args.epochs
    if not (last or (args.eval_every and (epoch + 1) % args.eval_every == 0)):
        return None
    shard = inference_shard(len(data.eval_dataset), dist_info)
    results = predict(
        model,
        data.eval_dataset,
        indices=shard,
        device=dist_info.device,
        batch_size=args.eval_batch_size,
        workers=args.workers,
    )
    results = gather_to_main(results, dist_info)
    return coco_metrics(data.ground_truth, results) if dist_info.is_main else None


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        run(args, dist_info)


def run(args, dist_info):
    check_amp(args.amp, dist_info.device)
    experiment_dir = Path(args.output_dir) / args.experiment_name
    meta, ssl_pool = pretrain_record(args)
    settle_defaults(args, meta)
    data = choose_data(args, dist_info, meta, ssl_pool)  # checked before the folder is opened
    ssl_backbone = experiment_dir / layout.PRETRAIN / layout.BACKBONE
    model, message = build_model(args, dist_info, data.classes, ssl_backbone)
    with open_run(
        experiment_dir,
        outputs=layout.DETECTOR_OUTPUTS,
        final=layout.DETECTOR,
        command="train_det.py",
        args=args,
        dist_info=dist_info,
        images=(layout.LABELED_IMAGES, data.labeled),
        derived=rebuild_meta(args, data.classes),
    ) as run:
        log_start(run, data, message)
        optimization = Optimization(
            build_optimizer("sgd", model, lr=args.lr, weight_decay=args.weight_decay),
            grad_scaler(args.amp, dist_info.device),
            data.schedule,
            args.clip_grad,
        )
        start_epoch, step = restore(run, model, optimization)
        history = run.resumed["eval_history"] if run.resumed else []
        wrapped = DistributedDataParallel(model) if dist_info.world_size > 1 else model
        step_fn = functools.partial(detection_step, amp=args.amp, device=dist_info.device)
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
            metrics = evaluate(model, data, epoch=epoch, run=run)
            if metrics:
                history.append({"epoch": epoch + 1, **metrics})
            log_epoch(run, epoch=epoch, mean_loss=loss, **headline(metrics))
            save_checkpoint(
                run, model, optimization, epoch=epoch + 1, step=step, eval_history=history
            )
            write_history(run, history)  # after the checkpoint, which holds it too
        if finished(run, epochs):
            save_final(run, model, data=data, message=message, history=history)


def write_history(run, history):
    if run.dist_info.is_main:
        run.folder.write_json(layout.EVAL_HISTORY, history, indent=1)


def save_final(run, model, *, data, message, history):
    """After the last epoch: fasterrcnn_final.pth and its metadata."""
    if run.dist_info.is_main:
        meta = {
            **rebuild_meta(run.args, data.classes),
            **final_meta(run.args, data, message, history),
        }
        save_detector(run.folder, model, meta)
    run.logger.log(f"wrote {run.folder.inside(layout.DETECTOR)}", event="done")


def headline(metrics):
    """The numbers of an evaluation that go into the epoch's log line."""
    if not metrics:
        return {}
    return {k: metrics[k] for k in ("AP", "AP50", "AP40") if metrics[k] is not None}


def log_start(run, data, message):
    args, dist_info = run.args, run.dist_info
    run.logger.log(message, event="init")
    if args.init == "random" and args.norm == "frozen":
        run.logger.log(
            "warning: --init random with --norm frozen normalizes nothing (identity statistics) "
            f"and keeps the {5 - args.trainable_layers} first stages at random weights; the fair "
            "random baseline is --norm syncbn --trainable-layers 5",
            event="warning",
        )
    run.logger.log(
        f"Faster R-CNN {args.arch}-FPN at {args.image_size} px, {len(data.classes)} classes, norm "
        f"{args.norm}, {args.trainable_layers} stages trained: {len(data.labeled)} labeled images, "
        f"{data.negatives} negatives, repeat factors sum {sum(data.factors):.1f} "
        f"(t={args.repeat_threshold}, {args.repeat_rounding}), {len(data.schedule)} iterations "
        f"of {args.batch_size} x {dist_info.world_size} in {args.epochs} epochs "
        f"({warmup_iters(args, len(data.schedule))} of warmup); evaluating on "
        f"{len(data.eval_dataset)} {'held-out' if data.held_out else 'test'} images",
        event="data",
        labeled=len(data.labeled),
        negatives=data.negatives,
        repeat_factor_sum=sum(data.factors),
        scheduled_steps=len(data.schedule),
    )


def rebuild_meta(args, classes):
    """What load_detector needs to rebuild the model (cxr.detection.detector.REBUILD_KEYS)."""
    return {
        "arch": args.arch,
        "image_size": args.image_size,
        "classes": list(classes),
        "norm": args.norm,
        "trainable_layers": args.trainable_layers,
        "anchor_sizes": list(ANCHOR_SIZES),
    }


def final_meta(args, data, message, history):
    """What else fasterrcnn_final.json records: the init, the data, the last metrics."""
    return {
        "num_classes": len(data.classes) + 1,
        "label_is": "COCO category_id (1..K); 0 is background",
        "init": args.init,
        "init_message": message,
        "data_dir": str(args.data_dir),
        "labeled_images": len(data.labeled),
        "labeled_fraction": args.labeled_fraction,
        "split_seed": args.split_seed,
        "negatives": data.negatives,
        "repeat_threshold": args.repeat_threshold,
        "epochs": args.epochs,
        "final_metrics": history[-1] if history else None,
    }


if __name__ == "__main__":
    exit_on_user_error(main)
