"""Faster R-CNN fine-tuning on the labeled set, from the SSL backbone or a random one.

    python train_det.py --data-dir data --experiment-name simclr_40pct
    torchrun --nproc_per_node=8 --max-restarts=3 train_det.py ... --auto-resume

main -> train: data (the labeled images, checked) -> model (--init trunk) ->
optimizer -> resume -> for each epoch: train_one_epoch (forward, the four
losses, backward, step) -> COCO mAP -> checkpoint; at the end
fasterrcnn_final.pth. The labeled set is the last --labeled-fraction of the
SSL split's seeded permutation (`cxr.data.splits`); an overlap with the
experiment's SSL pool is refused. All five ResNet stages train with global
BatchNorm by default, so a random start trains too and an SSL-vs-random
comparison changes --init only. Training oversamples rare classes by
repeat factors and augments every item with its own seed
(`cxr.detection.samplers`, `cxr.detection.augment`); the schedule counts the
steps of every epoch. Writes <output-dir>/<experiment-name>/ (`cxr.run.layout`).
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from cxr.data.datasets import DetectionDataset
from cxr.data.image_lists import data_fingerprint
from cxr.data.prepared import load_coco, normal_images, read_classes, split_images
from cxr.data.splits import partition, seeded_permutation
from cxr.detection.augment import BoxAugment
from cxr.detection.detector import (
    ANCHOR_SIZES,
    build_detector,
    detection_collate,
    predict,
    transfer_trunk,
)
from cxr.detection.samplers import RepeatFactorSampler, repeat_factors
from cxr.evaluation.coco_metrics import coco_ground_truth, coco_metrics
from cxr.nn.global_batchnorm import convert_to_global_batchnorm
from cxr.nn.optim import build_optimizer, step_schedule, warmup_cosine_schedule
from cxr.nn.resnet import FEATURE_DIMS, infer_arch
from cxr.nn.seeds import stream_seed
from cxr.pipeline.presets import PRESETS, script_presets
from cxr.run import cli, engine, layout
from cxr.run.distributed import gather_to_main, inference_shard, loader_options, process_group
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.folder import open_run
from cxr.run.model_files import backbone_meta, load_trunk_weights, read_trunk, save_detector
from cxr.run.provenance import (
    describe_record,
    keys_of,
    model_record,
    refuse_learnt,
    trained_on_entry,
)


def get_args_parser():
    p = cli.preset_parser(
        "train_det.py",
        "Faster R-CNN fine-tuning (torchrun-able).",
        presets=script_presets("train_det.py"),
    )
    cli.add_folder_flags(p, experiment_help="the run goes to OUTPUT_DIR/EXPERIMENT_NAME/")
    p.add_argument(
        "--init",
        default="ssl",
        help="ssl (the experiment's pretrained backbone), random, or a ResNet state dict's path",
    )
    p.add_argument(
        "--arch",
        default=None,
        choices=sorted(FEATURE_DIMS),
        help="default: the SSL backbone's, or the --init file's; the preset's for --init random",
    )
    p.add_argument("--image-size", type=cli.image_size, help="images are read at this")
    cli.add_share_flag(
        p,
        "--labeled-fraction",
        dest="labeled_fraction",
        default=None,
        meaning="the share of the training images fine-tuned on, with their labels",
        default_text=" (default: 1 - the SSL fraction recorded in pretrain/, else 1)",
    )
    p.add_argument(
        "--split-seed",
        type=cli.seed,
        default=None,
        help="default: the one pretraining used, else 0",
    )
    p.add_argument(
        "--allow-overlap", action="store_true", help="allow labeled images of the SSL pool"
    )
    p.add_argument(
        "--trainable-layers", type=cli.int_range(0, 5), default=5, help="ResNet stages trained, 0-5"
    )
    p.add_argument(
        "--norm",
        default="syncbn",
        choices=["frozen", "bn", "syncbn"],
        help="syncbn: BatchNorm over all processes' batches; bn: per process; frozen",
    )
    p.add_argument("--roi-batch-size", type=cli.positive_int, help="RoIs sampled per image")
    p.add_argument(
        "--rpn-proposals",
        type=cli.positive_int,
        default=2000,
        help="RPN proposals kept in training",
    )
    p.add_argument("--batch-size", type=cli.positive_int, help="images per process")
    p.add_argument("--epochs", type=cli.positive_int, help="passes over the labeled set")
    p.add_argument("--lr", type=cli.positive_float, help="absolute peak learning rate")
    p.add_argument(
        "--warmup-iters",
        type=cli.non_negative_int,
        default=None,
        help="linear warmup (default: a tenth of the run, at most 500 iterations)",
    )
    p.add_argument("--warmup-factor", type=cli.fraction, help="the rate's share as warmup starts")
    p.add_argument(
        "--lr-schedule",
        default="step",
        choices=["step", "cosine"],
        help="after warmup: x0.1 at each of --lr-steps, or cosine decay to 0",
    )
    p.add_argument(
        "--lr-steps", type=lr_steps, default="0.67,0.89", help="rising shares of the run"
    )
    p.add_argument(
        "--weight-decay", type=cli.non_negative_float, default=1e-4, help="on weights, not biases"
    )
    p.add_argument(
        "--repeat-threshold",
        type=cli.fraction,
        default=0.4,
        help="repeat-factor threshold t (0: off)",
    )
    p.add_argument(
        "--repeat-rounding",
        default="stochastic",
        choices=["stochastic", "ceil"],
        help="stochastic (detectron2) or ceil (the seed project, mmdetection)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="box-aware online augmentation",
    )
    p.add_argument(
        "--negatives",
        type=cli.float_range(0.0, 100.0),
        default=0.0,
        help="normal images per labeled image, as box-free negatives (prepare --keep-normal)",
    )
    p.add_argument(
        "--val-fraction",
        type=cli.float_range(0.0, 1.0, high_open=True, what="a share"),
        default=0.0,
        help="evaluate on this held-out share of the labeled images instead of the test split",
    )
    p.add_argument(
        "--eval-every",
        type=cli.non_negative_int,
        default=1,
        help="epochs between evaluations (0: after the last only)",
    )
    p.add_argument(
        "--final-eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate after the last epoch (--no-final-eval: evaluate.py --mode map will)",
    )
    p.add_argument(
        "--eval-batch-size", type=cli.positive_int, default=8, help="images per evaluation pass"
    )
    cli.add_device_flags(p)
    cli.add_training_flags(
        p, outputs=", ".join(layout.DETECTOR_OUTPUTS) + "; never pretrain/ or eval/", print_freq=20
    )
    return p


def lr_steps(text):
    """--lr-steps: rising shares of the run in (0, 1), kept as typed."""
    steps = cli.fraction_list(text, low_open=True, high_open=True)
    if steps != sorted(steps):
        raise argparse.ArgumentTypeError(f"{text!r}: the shares must rise")
    return text


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with process_group(args.device) as dist_info:
        train(args, dist_info)


def train(args, dist_info):
    """Check everything, then fine-tune; each epoch ends in an evaluation and a
    checkpoint."""
    engine.check_amp(args.amp, dist_info.device)
    experiment_dir = Path(args.output_dir) / args.experiment_name
    meta = backbone_meta(experiment_dir / layout.PRETRAIN / layout.BACKBONE)
    args = settle_defaults(args, meta)
    processes = args.dry_run or dist_info.world_size
    log = print if dist_info.is_main else None
    data = choose_data(args, processes, dist_info, meta=meta, log=log)
    if args.dry_run is not None:
        return print(
            f"train_det.py: checked, {describe(args, data)}; {data.checked}; nothing written"
        )
    model, message = build_model(args, dist_info, data.classes)
    optimizer = build_optimizer("sgd", model, lr=args.lr, weight_decay=args.weight_decay)
    scaler = engine.grad_scaler(args.amp, dist_info.device)
    loader = torch.utils.data.DataLoader(
        data.dataset,
        batch_size=args.batch_size,
        sampler=data.sampler,
        collate_fn=detection_collate,
        **loader_options(dist_info.device, args.workers),
    )
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
        state = run.resume_state()
        start_epoch, step = engine.restore(
            state, model=model, optimizer=optimizer, scaler=scaler, source=run.resumed_from
        )
        history = engine.resumed_history(state, source=run.resumed_from)
        ddp_model = DistributedDataParallel(model) if data.processes > 1 else model
        epochs = engine.epoch_range(start_epoch, args.epochs, args.stop_after)
        for epoch in epochs:
            data.sampler.set_epoch(epoch)
            engine.epoch_generator(args.seed, epoch, dist_info)  # the model's own draws (RoIs)
            step, mean_loss = train_one_epoch(
                ddp_model,
                loader,
                optimizer,
                scaler,
                data.schedule,
                epoch=epoch,
                step=step,
                args=args,
                log=run.log,
            )
            metrics = evaluate(model, data, epoch=epoch, args=args, dist_info=dist_info)
            if metrics:
                history.append({"epoch": epoch + 1, **metrics})
            run.log_epoch(epoch, mean_loss=mean_loss, **epoch_metrics(metrics))
            state = engine.checkpoint_state(
                model,
                optimizer,
                scaler,
                epoch=epoch + 1,
                step=step,
                eval_history=history,
                trained_on=data.trained_on,  # evaluate.py checks a checkpoint like a final model
            )
            run.save(state)
            write_history(run, history)  # after the checkpoint, which holds it too
        if not run.stopped_early(epochs):
            save_final(run, model, data=data, message=message, history=history)


def train_one_epoch(model, loader, optimizer, scaler, lr_schedule, *, epoch, step, args, log):
    """One pass over this rank's shard of the oversampled labeled set from global
    step `step`: the sum of Faster R-CNN's four losses (Ren et al., 2015).
    Returns (next global step, mean loss)."""
    device = next(model.parameters()).device
    meter = engine.ProgressMeter(
        epoch, args, iterations=len(loader), steps=len(lr_schedule), log=log
    )
    model.train()
    for images, targets in meter.batches(loader):
        engine.set_learning_rate(optimizer, lr_schedule[step])
        images = [image.to(device, non_blocking=True).expand(3, -1, -1) for image in images]
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        with engine.autocast(args.amp, device):
            losses = model(images, targets)  # RPN and box head: objectness, box, class
        loss = sum(losses.values())
        mean_loss = engine.finite_mean_loss(loss, epoch=epoch, iteration=meter.iteration, step=step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        meter.update(
            step=step, loss=mean_loss, lr=lr_schedule[step - 1], images=len(images), logs=losses
        )
    return step, meter.mean_loss


def evaluate(model, data, *, epoch, args, dist_info):
    """COCO metrics of the evaluation images after `epoch`, on rank 0 (None elsewhere,
    and when no evaluation is due: every --eval-every epochs, and after the last unless
    --no-final-eval)."""
    if epoch + 1 == args.epochs:
        due = args.final_eval
    else:
        due = args.eval_every and (epoch + 1) % args.eval_every == 0
    if not due:
        return None
    shard = torch.utils.data.Subset(
        data.eval_dataset, inference_shard(len(data.eval_dataset), dist_info)
    )
    loader = torch.utils.data.DataLoader(
        shard,
        batch_size=args.eval_batch_size,
        num_workers=args.workers,
        collate_fn=detection_collate,
    )
    results = gather_to_main(predict(model, loader, device=dist_info.device), dist_info)
    return coco_metrics(data.ground_truth, results) if dist_info.is_main else None


@dataclass
class FineTuningData:
    """The images of a run, chosen and checked before anything is written."""

    classes: tuple  # the prepared data's class names, category ids 1..K
    labeled: list  # names of the labeled training images
    processes: int
    dataset: DetectionDataset  # the labeled images (and negatives), augmented per item
    sampler: RepeatFactorSampler
    factors: list  # repeat factor of each training item
    negatives: int
    schedule: object  # (total steps,) learning rate of each global step
    eval_dataset: DetectionDataset
    ground_truth: object  # pycocotools COCO of the evaluation images
    held_out: bool
    trained_on: list  # the detector's `trained_on` entries (`cxr.run.provenance`)
    checked: str  # what its backbone learnt from, as checked against these images


def settle_defaults(args, meta):
    """A copy of `args` with --arch and --split-seed filled in when not given: the
    pretraining's (its JSON, `meta`), or the --init file's architecture."""
    arch = args.arch or default_arch(args.init, meta, fallback=PRESETS[args.preset].arch)
    split_seed = meta.get("split_seed", 0) if args.split_seed is None else args.split_seed
    return argparse.Namespace(**{**vars(args), "arch": arch, "split_seed": split_seed})


def choose_data(args, processes, dist_info, *, meta, log):
    """The labeled images, their sampler and schedule for `processes` processes (this one
    of dist_info), and the evaluation set, checked. meta: the experiment's SSL backbone's,
    or {}."""
    classes = read_classes(args.data_dir)
    labeled, held_out, negatives = choose_images(args, meta)
    dataset = DetectionDataset.split(
        args.data_dir,
        "train",
        names=set(labeled),
        negatives=negatives,
        augment=BoxAugment() if args.augment else None,
    )
    factors = repeat_factors(dataset.image_classes(), args.repeat_threshold)
    sampler = RepeatFactorSampler(
        factors,
        num_replicas=processes,
        rank=dist_info.rank,
        seed=args.seed,
        rounding=args.repeat_rounding,
        batch_size=args.batch_size,
    )
    per_epoch = math.ceil(sum(factors) / (args.batch_size * processes))
    engine.check_run_length(
        args.epochs * per_epoch, f"--epochs {args.epochs}"
    )  # before counting them
    schedule = learning_rates(args, sum(epoch_steps(sampler, args.batch_size, args.epochs)))
    eval_dataset, ground_truth = evaluation_set(args, held_out)
    if not ground_truth.dataset["annotations"]:
        where = "held-out" if held_out is not None else "test"
        raise UserError(
            f"the {len(eval_dataset)} {where} images hold no box: there would be nothing to "
            "evaluate on (prepare with a --test-fraction, or raise --val-fraction)"
        )
    trained_on, checked = learnt_from(  # last: it decodes every image, the checks above none
        args,
        meta,
        labeled=labeled,
        held_out=held_out,
        negatives=negatives,
        log=log,
        dist_info=dist_info,
    )
    return FineTuningData(
        classes=classes,
        labeled=labeled,
        processes=processes,
        dataset=dataset,
        sampler=sampler,
        factors=factors,
        negatives=len(negatives),
        schedule=schedule,
        eval_dataset=eval_dataset,
        ground_truth=ground_truth,
        held_out=held_out is not None,
        trained_on=trained_on,
        checked=checked,
    )


def learnt_from(args, meta, *, labeled, held_out, negatives, log, dist_info):
    """(the detector's `trained_on` entries, a line on what was checked): its backbone's
    record (`cxr.run.provenance`) checked against this data's test images, and its labeled
    ones unless --allow-overlap, then its own fine-tuning images. meta: the SSL backbone's."""

    def keys(images, what):  # shared by the run's processes
        return keys_of(images, what=what, log=log, dist_info=dist_info, workers=args.workers)

    listing = log if args.dry_run is not None else None  # a dry run lists every image learnt

    train_images = split_images(args.data_dir, "train")
    checked = [*labeled, *(held_out or [])]
    images = {**{n: train_images[n] for n in checked}, **{p.stem: p for p in negatives}}
    key = dict(zip(*keys(images, what="the labeled images")))
    trained = [*labeled, *(p.stem for p in negatives)]  # not the held-out ones
    mine = trained_on_entry(
        "fine-tuning images",
        trained,
        torch.stack([key[n] for n in trained]),
        data_dir=args.data_dir,
    )
    if args.init == "random":
        return [mine], "backbone: random, learnt from no image"
    path = initial_trunk_path(args)
    backbone = meta if args.init == "ssl" else backbone_meta(path)
    record = model_record(backbone)
    if record is not None:
        model = f"the backbone {path}"
        test = split_images(args.data_dir, "test")
        refuse_learnt(
            record,
            *keys(test, what="the test images"),
            model=model,
            role=f"test images of {args.data_dir}",
            advice="Its scores on them would not be a test: use a backbone pretrained without "
            "them (--dry-run lists each)",
            listing=listing,
        )
        if not args.allow_overlap:
            refuse_learnt(
                record,
                checked,
                torch.stack([key[n] for n in checked]),
                model=model,
                role="labeled images",
                advice=overlap_advice(backbone, record, args.data_dir) + " (--dry-run lists each)",
                listing=listing,
            )
    entries = backbone["trained_on"] if record is not None else []
    return [*entries, mine], describe_record(record, f"backbone {path}")


def overlap_advice(backbone, record, data_dir):
    """What to do about labeled images a backbone learnt from (its metadata, record)."""
    if data_fingerprint(data_dir) not in {entry.data_fingerprint for entry in record}:
        return (
            "It learnt from another preparation of the data: pretrain on this one, or pass "
            "--allow-overlap"
        )
    share = backbone.get("ssl_fraction")
    most = "" if share is None else f" to at most {1 - share:.3f}"
    return f"Lower --labeled-fraction{most}, or pass --allow-overlap"


def default_arch(init, meta, *, fallback):
    """--arch when not given: the SSL backbone's (its JSON), the architecture of
    an --init PATH's tensors, else the preset's (`fallback`)."""
    if init == "ssl":
        return meta.get("arch", fallback)
    if init == "random":
        return fallback
    return infer_arch(load_trunk_weights(init)) or fallback


def choose_images(args, meta):
    """(labeled training names, held-out names or None for the test split, negative paths)."""
    train_images = split_images(args.data_dir, "train")
    ssl_fraction = meta.get("ssl_fraction", 0.0)
    labeled_fraction = args.labeled_fraction
    if labeled_fraction is None:
        labeled_fraction = 1.0 - ssl_fraction
    labeled = partition(list(train_images), ssl_fraction, labeled_fraction, args.split_seed).labeled
    if labeled and args.val_fraction:
        return held_out_split(args, labeled)
    if not labeled:
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
    return labeled, None, negative_paths(args, labeled)


def held_out_split(args, labeled):
    """choose_images' result with --val-fraction: a seeded share of the labeled images held
    out to evaluate on, the rest trained on."""
    order = seeded_permutation(labeled, stream_seed("held-out", seed=args.split_seed))
    held_out = sorted(order[: round(len(order) * args.val_fraction)])
    kept = sorted(set(labeled) - set(held_out))
    if not held_out or not kept:
        raise UserError(
            f"--val-fraction {args.val_fraction} holds out {len(held_out)} of the "
            f"{len(labeled)} labeled images, leaving {len(kept)} to train on; choose a share "
            "that leaves images on both sides"
        )
    return kept, held_out, negative_paths(args, kept)


def negative_paths(args, labeled):
    """--negatives: a seeded share of the normal images (that many per labeled image)."""
    if not args.negatives:
        return []
    normal = normal_images(args.data_dir, flag=f"--negatives {args.negatives}")
    order = seeded_permutation(list(normal), stream_seed("negatives", seed=args.split_seed))
    return [normal[name] for name in sorted(order[: round(args.negatives * len(labeled))])]


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


def epoch_steps(sampler, batch_size, epochs):
    """The optimizer steps of every epoch: repeat-factor epochs differ in length
    (stochastic rounding) and exceed sum(r) (ceil rounding), so they are counted."""
    return [math.ceil(sampler.shard_length(epoch) / batch_size) for epoch in range(epochs)]


DEFAULT_WARMUP = 500  # iterations, unless a tenth of the run is shorter


def warmup_iters(args, total_steps):
    """--warmup-iters, or by default a tenth of the run, at most DEFAULT_WARMUP."""
    if args.warmup_iters is not None:
        engine.check_warmup(args.warmup_iters, total_steps, f"--warmup-iters {args.warmup_iters}")
        return args.warmup_iters
    return min(DEFAULT_WARMUP, math.ceil(total_steps / 10))


def learning_rates(args, total_steps):
    """The learning rate of every global step of the whole run."""
    engine.check_run_length(
        total_steps, f"--epochs {args.epochs} and --batch-size {args.batch_size}"
    )
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


def build_model(args, dist_info, classes):
    """Faster R-CNN with the --init trunk; returns (model on the device, what was loaded)."""
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
    message = initialize_trunk(model, args)
    if args.norm == "syncbn" and dist_info.world_size > 1:
        model = convert_to_global_batchnorm(model)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model.to(dist_info.device), message


def initial_trunk_path(args):
    """The file --init ssl|PATH loads."""
    if args.init == "ssl":
        return Path(args.output_dir) / args.experiment_name / layout.PRETRAIN / layout.BACKBONE
    return Path(args.init)


def initialize_trunk(model, args):
    """--init ssl|random|PATH into the detector's trunk; returns what was loaded."""
    if args.init == "random":
        return f"backbone: random {args.arch} initialization (torchvision defaults)"
    path = initial_trunk_path(args)
    if args.init == "ssl" and not path.is_file():
        raise UserError(
            f"--init ssl: {path} not found; pretrain with train_ssl.py first, "
            "or use --init random or --init PATH"
        )
    state, _ = read_trunk(path, args.arch)
    return f"{transfer_trunk(model, state, args.arch)} from {path} into backbone.body"


def describe(args, data):
    """One line: what the run trains on, and how."""
    return (
        f"Faster R-CNN {args.arch}-FPN at {args.image_size} px, {len(data.classes)} classes, norm "
        f"{args.norm}, {args.trainable_layers} stages trained: {len(data.labeled)} labeled images, "
        f"{data.negatives} negatives, repeat factors sum {sum(data.factors):.1f} "
        f"(t={args.repeat_threshold}, {args.repeat_rounding}), {len(data.schedule)} iterations "
        f"of {args.batch_size} x {data.processes} in {args.epochs} epochs "
        f"({warmup_iters(args, len(data.schedule))} of warmup); evaluating on "
        f"{len(data.eval_dataset)} {'held-out' if data.held_out else 'test'} images"
    )


def log_start(run, data, message):
    args = run.args
    run.log(message, event="init")
    run.log(data.checked, event="provenance")
    if args.init == "random" and args.norm == "frozen":
        run.log(
            "warning: --init random with --norm frozen normalizes nothing (identity statistics) "
            f"and keeps the {5 - args.trainable_layers} first stages at random weights; the fair "
            "random baseline is --norm syncbn --trainable-layers 5",
            event="warning",
        )
    run.log(
        describe(args, data),
        event="data",
        labeled=len(data.labeled),
        negatives=data.negatives,
        repeat_factor_sum=sum(data.factors),
        scheduled_steps=len(data.schedule),
    )


def epoch_metrics(metrics):
    """The numbers of an evaluation that go into the epoch's log line."""
    if not metrics:
        return {}
    return {k: metrics[k] for k in ("AP", "AP50", "AP40") if metrics[k] is not None}


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
    run.log(f"wrote {run.folder.inside(layout.DETECTOR)}", event="done")


def rebuild_meta(args, classes):
    """What load_detector needs to rebuild the model (cxr.run.model_files.REBUILD_KEYS)."""
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
        "final_metrics": history[-1] if history and history[-1]["epoch"] == args.epochs else None,
        "trained_on": data.trained_on,
    }


if __name__ == "__main__":
    exit_on_user_error(main)
