"""Faster R-CNN fine-tuning on the labeled set, from the SSL backbone or a random one.

One process:
    python train_det.py --data-dir data --experiment-name simclr_40pct
Several GPUs / nodes (DDP), surviving a lost worker:
    torchrun --nproc_per_node=8 --max-restarts=3 train_det.py --data-dir data \
        --experiment-name simclr_40pct --auto-resume

The labeled set is the last --labeled-fraction of the seeded permutation of
the training images (`cxr.splits.partition`, the split seed recorded by
train_ssl.py); if it overlaps the SSL pool recorded in the experiment's
pretrain folder the run stops, unless --allow-overlap. By default all five
ResNet stages train, with BatchNorm global across processes, so that a
random start trains as well as a pretrained one: an SSL-vs-random comparison
changes --init and nothing else. Training oversamples images with rare
classes by repeat factors (LVIS) and augments each image online with
box-aware transforms (`cxr.detection_augment`), every item with its own seed from
the sampler, so ranks never share draws; the learning-rate schedule counts
the steps of every (variable-length) epoch. Every --eval-every
epochs the model is evaluated (COCO mAP with pycocotools) on the test split,
or on a held-out --val-fraction of the labeled images, with exact shards
under DDP. Writes into <output-dir>/<experiment-name>/: args.json,
log.jsonl, labeled_images.txt, checkpoint.pth (each epoch; --resume),
eval_history.json, and at the end fasterrcnn_final.pth (the FasterRCNN state
dict) with fasterrcnn_final.json. --lr is absolute for the total batch.
"""

import argparse
import json
import math
from pathlib import Path

import torch

from cxr.backbone import infer_arch, load_trunk_weights
from cxr.checkpoint_io import atomic_torch_save
from cxr.classes import CLASS_NAMES
from cxr.cli import add_run_flags, add_share_flag, fraction_arg, parser
from cxr.coco_metrics import (
    coco_ground_truth,
    coco_metrics,
    detection_collate,
    gather_to_main,
    predict,
)
from cxr.data import DetectionDataset, load_coco, split_images
from cxr.detection_augment import BoxAugment
from cxr.detector import ANCHORS, anchor_sizes, build_detector, initialize_backbone
from cxr.distributed import process_group
from cxr.engine import check_amp, train
from cxr.errors import UserError, exit_on_user_error
from cxr.global_batchnorm import convert_to_global_batchnorm
from cxr.optim import check_warmup, step_schedule, warmup_cosine_schedule
from cxr.outputs import atomic_write_json
from cxr.run_folder import open_run
from cxr.samplers import RepeatFactorSampler, inference_shard, repeat_factors
from cxr.seeds import stream_seed
from cxr.splits import partition, seeded_permutation

# The files a run writes in its folder: --replace deletes these and nothing else.
RUN_OUTPUTS = (
    "args.json",
    "log.jsonl",
    "labeled_images.txt",
    "checkpoint.pth",
    "eval_history.json",
    "fasterrcnn_final.pth",
    "fasterrcnn_final.json",
)


def get_args_parser():
    p = parser("train_det.py", "Faster R-CNN fine-tuning (torchrun-able).")
    p.add_argument("--data-dir", default="data", help="folder written by python -m cxr.prepare")
    p.add_argument("--output-dir", default="vinbig_output", help="root of the experiment folders")
    p.add_argument(
        "--experiment-name",
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
        help="default: the SSL backbone's, or the architecture of the --init file's tensors; "
        "resnet50 for --init random",
    )
    p.add_argument(
        "--image-size", type=int, default=512, help="images are read at this size, not upscaled"
    )
    add_share_flag(
        p,
        "--labeled-fraction",
        "labeled_fraction",
        None,
        "the share of the training images fine-tuned on, with their labels",
        default_text=" (default: 1 - the SSL fraction recorded in pretrain/, else 1)",
    )
    p.add_argument(
        "--split-seed", type=int, default=None, help="default: the one pretraining used, else 0"
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="allow labeled images that were also in the SSL pool",
    )
    p.add_argument(
        "--trainable-layers",
        type=int,
        default=5,
        help="ResNet stages trained, 0-5; 5 (all) trains a random start too (torchvision's "
        "fine-tuning recipe for ImageNet weights is 3 with --norm frozen)",
    )
    p.add_argument(
        "--norm",
        default="syncbn",
        choices=["frozen", "bn", "syncbn"],
        help="syncbn: BatchNorm with statistics over all processes' batches (cxr.global_batchnorm; "
        "plain BatchNorm on one process); bn: per process; frozen: FrozenBatchNorm2d",
    )
    p.add_argument(
        "--anchors",
        default="torchvision",
        choices=list(ANCHORS),
        help="torchvision: 32-512 px (8 strides per FPN level) whatever the image size; scaled: "
        "times image-size / 800 (measured worse: half the mAP at 128 px)",
    )
    p.add_argument(
        "--roi-batch-size",
        type=int,
        default=512,
        help="proposals sampled per image to train the box head (torchvision: 512); "
        "lower it to train faster on a CPU",
    )
    p.add_argument(
        "--rpn-proposals",
        type=int,
        default=2000,
        help="proposals the RPN keeps per image in training (torchvision: 2000); lower it to train "
        "faster on a CPU",
    )
    p.add_argument("--batch-size", type=int, default=4, help="images per process")
    p.add_argument("--epochs", type=int, default=26, help="passes over the oversampled labeled set")
    p.add_argument("--lr", type=float, default=0.01, help="absolute peak learning rate")
    p.add_argument(
        "--warmup-iters",
        type=int,
        default=500,
        help="iterations of linear warmup; refused if longer than the run",
    )
    p.add_argument(
        "--warmup-factor",
        type=float,
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
        "--lr-steps", default="0.67,0.89", help="step schedule: fractions of training to decay x0.1"
    )
    p.add_argument(
        "--weight-decay", type=float, default=1e-4, help="on weights; biases and norms are exempt"
    )
    p.add_argument(
        "--repeat-threshold", type=float, default=0.4, help="LVIS repeat-factor threshold t"
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
        type=float,
        default=0.0,
        help="add this many normal images per labeled image as box-free negatives "
        "(needs prepare --keep-normal)",
    )
    p.add_argument(
        "--val-fraction",
        type=fraction_arg,
        default=0.0,
        help="evaluate on this held-out share of the labeled images instead of the test split",
    )
    p.add_argument(
        "--eval-every", type=int, default=1, help="epochs between evaluations (0: only at the end)"
    )
    p.add_argument(
        "--eval-batch-size", type=int, default=8, help="images per forward pass when evaluating"
    )
    p.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision: bf16 (CPU or CUDA) or fp16 with a GradScaler (CUDA only)",
    )
    p.add_argument(
        "--clip-grad", type=float, default=None, help="max gradient norm (off by default)"
    )
    p.add_argument(
        "--workers", type=int, default=4, help="data loader processes per training process"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the head weights, the epoch order and the augmentations",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--print-freq", type=int, default=20, help="iterations between progress lines")
    add_run_flags(p, "train_det.py; never pretrain/ or eval/")
    return p


def pretrain_record(experiment_dir):
    """(metadata of the SSL backbone or {}, its SSL image list or None)."""
    folder = experiment_dir / "pretrain"
    meta_path, pool_path = folder / "pretrained-backbone.json", folder / "ssl_images.txt"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return meta, (pool_path.read_text().split() if pool_path.is_file() else None)


def choose_images(args, meta, ssl_pool):
    """(training names, evaluation names or None for the test split, negative paths)."""
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
        chosen = seeded_permutation(list(normal), stream_seed("negatives", seed=args.split_seed))[
            : round(args.negatives * len(labeled))
        ]
        negatives = [normal[name] for name in sorted(chosen)]
    if not labeled:
        raise UserError("no labeled images: raise --labeled-fraction")
    return labeled, held_out, negatives


def default_arch(init, meta):
    """--arch when not given: the SSL backbone's (its JSON), the architecture of
    an --init PATH's tensors, else resnet50."""
    if init == "ssl":
        return meta.get("arch", "resnet50")
    if init == "random":
        return "resnet50"
    return infer_arch(load_trunk_weights(init)) or "resnet50"


def evaluation_ground_truth(args, held_out):
    """(dataset, pycocotools COCO) of the evaluation images."""
    split = "test" if held_out is None else "train"
    names = None if held_out is None else set(held_out)
    coco = load_coco(Path(args.data_dir) / f"{split}_annotations.json")
    if held_out is not None:
        keep = {image["id"] for image in coco["images"] if Path(image["file_name"]).stem in names}
        coco = {
            **coco,
            "images": [i for i in coco["images"] if i["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
        }
    dataset = DetectionDataset(coco, Path(args.data_dir) / split)
    return dataset, coco_ground_truth(coco)


class DetectionTask:
    """Images and targets to the device; the sum of Faster R-CNN's four losses."""

    def __init__(self, device):
        self.device = device

    def inputs(self, batch, generator):
        images, targets = batch
        images = [image.to(self.device, non_blocking=True).expand(3, -1, -1) for image in images]
        targets = [
            {"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)}
            for t in targets
        ]
        return images, targets

    def loss(self, model, inputs):
        losses = model(*inputs)
        return sum(losses.values()), losses

    def batch_images(self, inputs):
        return len(inputs[0])


def training_loader(dataset, factors, args, dist_info):
    """(sampler, loader) of the oversampled, sharded, per-item-seeded training epochs."""
    sampler = RepeatFactorSampler(
        factors, dist_info.world_size, dist_info.rank, seed=args.seed, rounding=args.repeat_rounding
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


def learning_rates(args, total_steps):
    """The learning rate of every global step of the whole run."""
    check_warmup(args.warmup_iters, total_steps, f"--warmup-iters {args.warmup_iters}")
    if args.lr_schedule == "cosine":
        return warmup_cosine_schedule(
            args.lr, total_steps, args.warmup_iters, start_factor=args.warmup_factor
        )
    milestones = [round(float(f) * total_steps) for f in args.lr_steps.split(",")]
    return step_schedule(
        args.lr, total_steps, args.warmup_iters, milestones, start_factor=args.warmup_factor
    )


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        run(args, dist_info)


def run(args, dist_info):
    check_amp(args.amp, dist_info.device)
    experiment_dir = Path(args.output_dir) / args.experiment_name
    meta, ssl_pool = pretrain_record(experiment_dir)
    args.arch = args.arch or default_arch(args.init, meta)
    args.split_seed = meta.get("split_seed", 0) if args.split_seed is None else args.split_seed
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
    steps = epoch_steps(sampler, args.batch_size, args.epochs)
    schedule = learning_rates(args, sum(steps))
    eval_dataset, ground_truth = evaluation_ground_truth(args, held_out)
    torch.manual_seed(stream_seed("weights", seed=args.seed))
    model = build_detector(
        args.arch,
        args.image_size,
        args.norm,
        args.trainable_layers,
        args.roi_batch_size,
        args.anchors,
        args.rpn_proposals,
    )
    message = initialize_backbone(
        model, args.init, args.arch, experiment_dir / "pretrain" / "pretrained-backbone.pth"
    )
    run = open_run(experiment_dir, RUN_OUTPUTS, args, dist_info, ("labeled_images.txt", labeled))
    logger = run.logger
    logger.log(message, event="init")
    if args.init == "random" and args.norm == "frozen":
        logger.log(
            "warning: --init random with --norm frozen normalizes nothing (identity statistics) "
            f"and keeps the {5 - args.trainable_layers} first stages at random weights; the fair "
            "random baseline is --norm syncbn --trainable-layers 5",
            event="warning",
        )
    if args.norm == "syncbn" and dist_info.world_size > 1:
        model = convert_to_global_batchnorm(model)
    model.to(dist_info.device)
    history = []
    if run.resumed is not None:
        history_path = experiment_dir / "eval_history.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else []
    logger.log(
        f"Faster R-CNN {args.arch}-FPN at {args.image_size} px (anchors "
        f"{', '.join(str(s[0]) for s in anchor_sizes(args.image_size, args.anchors))} px, norm "
        f"{args.norm}, {args.trainable_layers} stages trained): {len(labeled)} labeled images, "
        f"{len(negatives)} negatives, repeat factors sum {sum(factors):.1f} "
        f"(t={args.repeat_threshold}, {args.repeat_rounding}), {sum(steps)} iterations of "
        f"{args.batch_size} x {dist_info.world_size} in {args.epochs} epochs; evaluating on "
        f"{len(eval_dataset)} {'held-out' if held_out else 'test'} images",
        event="data",
        labeled=len(labeled),
        negatives=len(negatives),
        repeat_factor_sum=sum(factors),
        scheduled_steps=sum(steps),
    )

    def evaluate(epoch):
        last = epoch + 1 == args.epochs
        if not (last or (args.eval_every and (epoch + 1) % args.eval_every == 0)):
            return {}
        shard = inference_shard(len(eval_dataset), dist_info.world_size, dist_info.rank)
        results = gather_to_main(
            predict(
                model, eval_dataset, shard, dist_info.device, args.eval_batch_size, args.workers
            )
        )
        if not dist_info.is_main:
            return {}
        metrics = coco_metrics(ground_truth, results)
        history.append({"epoch": epoch + 1, **metrics})
        atomic_write_json(experiment_dir / "eval_history.json", history, indent=1)
        return {k: metrics[k] for k in ("AP", "AP50", "AP40") if metrics[k] is not None}

    finished = train(
        model,
        DetectionTask(dist_info.device),
        loader,
        sampler,
        schedule,
        run,
        dist_info,
        args,
        optimizer_name="sgd",
        after_epoch=evaluate,
    )
    if not finished:
        return
    if dist_info.is_main:
        atomic_torch_save(experiment_dir / "fasterrcnn_final.pth", model.state_dict())
        atomic_write_json(
            experiment_dir / "fasterrcnn_final.json",
            {
                "arch": args.arch,
                "image_size": args.image_size,
                "num_classes": len(CLASS_NAMES) + 1,
                "classes": list(CLASS_NAMES),
                "label_is": "COCO category_id = class_id + 1 (0 is background)",
                "init": args.init,
                "init_message": message,
                "norm": args.norm,
                "trainable_layers": args.trainable_layers,
                "anchors": args.anchors,
                "data_dir": str(args.data_dir),
                "labeled_images": len(labeled),
                "labeled_fraction": args.labeled_fraction,
                "split_seed": args.split_seed,
                "negatives": len(negatives),
                "repeat_threshold": args.repeat_threshold,
                "epochs": args.epochs,
                "final_metrics": history[-1] if history else None,
            },
            indent=1,
        )
    logger.log(f"wrote {experiment_dir / 'fasterrcnn_final.pth'}", event="done")


if __name__ == "__main__":
    exit_on_user_error(main)
