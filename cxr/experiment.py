"""The paper's experiment in one command: data -> SimCLR -> probe -> Faster R-CNN from
the SSL backbone AND from a random one -> mAP -> pictures -> report.

    python -m cxr.experiment                                   # CPU preset, synthetic data
    python -m cxr.experiment --nih NIH --extra-images UNLABELED --out nih_run
    python -m cxr.experiment --preset paper --vinbig vinbigdata --nproc-per-node 8

Every stage is one of cxr's own command lines (`cxr.pipeline.stages`), run
from the experiment folder (so every path in it and in the report is
relative to the report), its output kept in logs/ (`cxr.pipeline.runner`).
For each SSL fraction f and training seed s the detector is fine-tuned on
the same labeled images from the SSL backbone (runs/sslP-sS) and from a
random one (runs/randomP-sS), by one command that differs only in
--experiment-name and --init; --pretrained-init adds a third arm from given
weights. Every cxr module's command is parsed before the first stage runs,
and each training script checks its own command against the prepared data
(`--dry-run`) before the first training stage; --resume skips the stages
that completed.
"""

import argparse
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from cxr.data.coco_format import group_pattern
from cxr.nn.resnet import infer_arch
from cxr.pipeline.presets import PRESETS, Settings
from cxr.pipeline.runner import experiment_inputs, open_experiment, parse_stage
from cxr.pipeline.stages import NIH_BOX_FILE, plan_stages
from cxr.run import cli
from cxr.run.cli import command_parser
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.layout import percent
from cxr.run.model_files import load_trunk_weights
from cxr.run.outputs import now_iso, open_output_folder


def settings_from(args):
    settings = PRESETS[args.preset]
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(Settings)
        if getattr(args, f.name, None) is not None
    }
    return replace(settings, **overrides)


def get_args_parser():
    p = command_parser(
        "python -m cxr.experiment", "The whole cxr experiment and its report in one command."
    )
    p.add_argument("--out", default="experiment", help="folder for everything the run makes")
    p.add_argument(
        "--preset",
        default="cpu",
        choices=sorted(PRESETS),
        help="cpu: small, synthetic, under 20 min on 2 cores; paper: the real settings, for GPUs",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--vinbig",
        default=None,
        help="the real 512 px download (train.csv, train/); default: synthetic data",
    )
    source.add_argument(
        "--nih",
        default=None,
        help=f"NIH ChestX-ray14 ({NIH_BOX_FILE} and images/) instead of synthetic data "
        "(default: none)",
    )
    source.add_argument(
        "--coco",
        default=None,
        metavar="FILE",
        help="a COCO detection file with its own classes (with --coco-images; default: none)",
    )
    p.add_argument(
        "--coco-images", default=None, help="--coco: the folder of its images (default: none)"
    )
    p.add_argument(
        "--group-by",
        type=group_pattern,
        default=None,
        metavar="REGEX",
        help="--coco: the patient in an image's name (prepare --group-by; default: none)",
    )
    p.add_argument("--fuse", action="store_true", help="--coco: fuse several readers' boxes")
    p.add_argument(
        "--nih-classes",
        default="nih",
        choices=("nih", "vinbigdata"),
        help="--nih: NIH's eight findings as classes, or mapped onto VinBigData's "
        "(prepare --nih-classes)",
    )
    p.add_argument(
        "--extra-images",
        nargs="+",
        default=None,
        metavar="DIR",
        help="unlabeled images added to every SSL pool (train_ssl.py --extra-images; default: "
        "none)",
    )
    p.add_argument(
        "--drop-prepared",
        action="store_true",
        help="leave out the --extra-images that are prepared images or films of test patients "
        "(train_ssl.py --drop-prepared; default: refuse them)",
    )
    p.add_argument(
        "--pretrained-init",
        default=None,
        metavar="FILE",
        help="a torchvision ResNet state dict (e.g. ImageNet weights): a third arm fine-tuned "
        "from it with the same settings, compared as SSL - pretrained (default: none)",
    )
    p.add_argument(
        "--ssl-fractions",
        type=ssl_fractions,
        default="0.6",
        help="shares of the training images to pretrain on, e.g. 0.1,0.2,...,0.9 for the paper's "
        "sweep",
    )
    p.add_argument(
        "--seed",
        type=cli.seed,
        default=0,
        help="seed of the data: the synthetic images and the SSL / labeled split",
    )
    p.add_argument(
        "--train-seeds",
        type=cli.seed_list,
        default="0",
        help="training seeds, e.g. 0,1,2: each pretrains and fine-tunes both arms once (runs "
        "ssl60-s0, random60-s0, ...); the report's intervals then cover training randomness too",
    )
    p.add_argument(
        "--normal-in-test",
        action="store_true",
        help="prepare --normal-in-test: normal films in the test split, competition-like mAP",
    )
    p.add_argument(
        "--nproc-per-node",
        type=cli.int_range(1, 1024),
        default=1,
        help="run training and mAP under torchrun with N",
    )
    p.add_argument(
        "--device", type=cli.device, default=None, help="cpu or cuda (None: cuda if available)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted experiment in --out, or add --train-seeds after its old ones",
    )
    p.add_argument("--replace", action="store_true", help="delete --out and start over")
    overrides = p.add_argument_group("overrides of the preset (default: the preset's value)")
    for setting in fields(Settings):
        presets = ", ".join(
            f"{name}: {getattr(preset, setting.name)}" for name, preset in PRESETS.items()
        )
        overrides.add_argument(
            f"--{setting.name.replace('_', '-')}",
            dest=setting.name,
            default=argparse.SUPPRESS,
            type=setting.metadata["type"],
            help=f"{setting.metadata['help']} ({presets})",
        )
    return p


def ssl_fractions(text):
    """--ssl-fractions: shares in (0, 1) that name distinct runs (distinct to the percent)."""
    fractions = cli.fraction_list(text, low_open=True, high_open=True)
    if len({percent(f) for f in fractions}) != len(fractions):
        raise argparse.ArgumentTypeError(f"{text!r}: the shares must differ to the percent")
    return fractions


def parse_args(argv):
    """The parsed command line (argv kept: the record shows the command)."""
    args = get_args_parser().parse_args(argv)
    args.argv = list(argv)
    args.fractions = (
        args.ssl_fractions
        if isinstance(args.ssl_fractions, list)
        else ssl_fractions(args.ssl_fractions)
    )
    args.train_seeds = (
        args.train_seeds if isinstance(args.train_seeds, list) else cli.seed_list(args.train_seeds)
    )
    return args


def check_inputs(args):
    """The data folders hold what their flags promise."""
    if args.resume and args.replace:
        raise UserError("--resume and --replace contradict each other; pick one")
    if args.vinbig and not (Path(args.vinbig) / "train.csv").is_file():
        raise UserError(
            f"--vinbig {args.vinbig}: no train.csv there (expected the 512 px download's layout)"
        )
    if args.nih and not (
        (Path(args.nih) / NIH_BOX_FILE).is_file() and (Path(args.nih) / "images").is_dir()
    ):
        raise UserError(
            f"--nih {args.nih}: expected {NIH_BOX_FILE} and images/ there (NIH's download layout)"
        )
    if args.coco and not args.coco_images:
        raise UserError("--coco needs --coco-images, the folder of its images")
    if (args.coco_images or args.group_by or args.fuse) and not args.coco:
        raise UserError("--coco-images, --group-by and --fuse go with --coco")


def check_pretrained(args, settings):
    """--pretrained-init must hold the preset's architecture: the arms differ only in init."""
    if not args.pretrained_init:
        return
    arch = infer_arch(load_trunk_weights(args.pretrained_init))
    if arch != settings.arch:
        raise UserError(
            f"--pretrained-init {args.pretrained_init} holds a {arch or 'non-ResNet'} trunk, but "
            f"the arms train a {settings.arch}; pass --arch {arch}, or {settings.arch} weights"
        )


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_inputs(args)
    settings = settings_from(args)
    check_pretrained(args, settings)
    stages = plan_stages(args, settings, args.out)
    for stage in stages:
        if stage.program[0] == "-m":
            parse_stage(stage)
    command, inputs = "python -m cxr.experiment", experiment_inputs(args)
    with open_output_folder(Path(args.out).resolve(), command=command, inputs=inputs) as folder:
        experiment = open_experiment(args, settings, folder)
        print(
            f"cxr experiment in {experiment.out}: {len(stages)} stages, preset {args.preset}, "
            f"SSL fractions {', '.join(f'{percent(f)}%' for f in args.fractions)}",
            flush=True,
        )
        start = time.perf_counter()
        experiment.run(stages, resuming=args.resume, nproc=args.nproc_per_node)
        experiment.record["finished"] = now_iso()
        experiment.save()
    print(
        f"experiment complete in {(time.perf_counter() - start) / 60:.1f} min (this invocation); "
        f"report: {experiment.out / 'report.md'}",
        flush=True,
    )
    return experiment.out


if __name__ == "__main__":
    exit_on_user_error(main)
