"""The stages of the paper's experiment, in order: data -> prepare -> per SSL fraction
and training seed: SimCLR -> probes -> Faster R-CNN from the SSL backbone AND from a
random one (and from --pretrained-init weights) -> mAP -> pictures -> report.

Every stage is one of cxr's own command lines, run from the experiment folder
(so every path in it and in the report is relative to the report). For each
SSL fraction f and training seed s the detector is fine-tuned on the same
labeled images from the SSL backbone (runs/sslP-sS) and from a random one
(runs/randomP-sS), by one command that differs only in --experiment-name
and --init.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cxr.pipeline.presets import Settings
from cxr.run.cli import flags
from cxr.run.layout import BACKBONE, DETECTOR, PRETRAIN, RunName, percent

REPO = Path(__file__).resolve().parents[2]  # the checkout: the scripts are at its top
NIH_BOX_FILE = "BBox_List_2017.csv"


@dataclass(frozen=True)
class Stage:
    """One step: a cxr command (`program` is (script,) or ("-m", module)),
    run with `argv` from the experiment folder."""

    name: str
    description: str
    program: tuple
    argv: tuple = ()
    run_dir: str = None  # a training run's folder: resumable from its checkpoint
    distributed: bool = False  # under torchrun with --nproc-per-node > 1
    result: str = None  # the file whose presence means the stage is done

    def command(self, nproc, display=False):
        """The command line; display: as the report shows it (python, <cxr>/script)."""
        python = "python" if display else sys.executable
        script = [f"<cxr>/{p}" if display else str(REPO / p) for p in self.program]
        if self.program[0] == "-m":
            script = list(self.program)
        launcher = [python]
        if self.distributed and nproc > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone"]
            launcher += [f"--nproc_per_node={nproc}"]
        return [*launcher, *script, *self.argv]


@dataclass(frozen=True)
class Plan:
    """What the stage builders need: the parsed command line and the settings."""

    args: argparse.Namespace
    settings: Settings
    out: Path

    def relative(self, path):
        """A path the user gave, as the experiment folder's commands see it."""
        return path_from(self.out, path)


def path_from(folder, path):
    """`path` as a command run in `folder` reaches it: relative, as the user wrote it (no
    symbolic link resolved), where that reaches the same file; else absolute."""
    written = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    if (Path(folder) / written).resolve() == Path(path).resolve():
        return written
    return os.path.abspath(path)


def data_source(plan):
    """([stages that make the data], prepare's flags) for the chosen data."""
    args, s = plan.args, plan.settings
    if args.vinbig:
        source = flags(csv=plan.relative(Path(args.vinbig) / "train.csv"))
        return [], [*source, *flags(images=plan.relative(Path(args.vinbig) / "train"))]
    if args.nih:
        source = flags(
            format="nih",
            csv=plan.relative(Path(args.nih) / NIH_BOX_FILE),
            nih_classes=args.nih_classes,
        )
        return [], [*source, *flags(images=plan.relative(Path(args.nih) / "images"))]
    if args.coco:
        source = flags(format="coco", annotations=plan.relative(args.coco), fuse=args.fuse)
        images = flags(images=plan.relative(args.coco_images), group_by=args.group_by)
        return [], [*source, *images]
    synthetic = flags(
        out="vinbigdata", images=s.synthetic_images, size=s.synthetic_size, seed=args.seed
    )
    what = f"synthetic VinBigData: {s.synthetic_images} images at {s.synthetic_size} px"
    stage = Stage("synthetic", what, ("-m", "cxr.synthetic"), (*synthetic, "--replace"))
    return [stage], flags(csv="vinbigdata/train.csv", images="vinbigdata/train")


def prepare_stage(plan, source_flags):
    options = flags(out="data", keep_normal=True, normal_in_test=plan.args.normal_in_test)
    description = "prepare: validate the boxes (fuse several readers'), split train/test"
    return Stage("prepare", description, ("-m", "cxr.prepare"), (*source_flags, *options))


def common_flags(plan):
    return flags(data_dir="data", output_dir="runs", workers=plan.settings.workers)


def pretrain_stage(plan, fraction, seed):
    s, name = plan.settings, str(RunName("ssl", percent(fraction), seed))
    extra = [plan.relative(p) for p in plan.args.extra_images or []]
    options = flags(
        experiment_name=name,
        arch=s.arch,
        ssl_fraction=fraction,
        split_seed=plan.args.seed,
        include_normal=True,
        image_size=s.ssl_image_size,
        epochs=s.ssl_epochs,
        batch_size=s.ssl_batch_size,
        lr=s.ssl_lr,
        warmup_epochs=s.ssl_warmup_epochs,
        views=s.ssl_views,
        temperature=s.ssl_temperature,
        seed=seed,
        print_freq=5,
        device=plan.args.device,
    )
    if extra:
        options += ["--extra-images", *extra, *flags(drop_prepared=plan.args.drop_prepared)]
    argv = (*common_flags(plan), *options)
    description = f"SimCLR pretraining on {percent(fraction)}% of the training images, seed {seed}"
    run_dir = f"runs/{name}/{PRETRAIN}"
    result = f"{run_dir}/{BACKBONE}"
    return Stage(f"pretrain-{name}", description, ("train_ssl.py",), argv, run_dir, True, result)


def charted(plan, run):
    """The runs the report draws (per-epoch mAP, pictures): the first fraction's and seed's."""
    return (run.percent, run.seed) == (percent(plan.args.fractions[0]), plan.args.train_seeds[0])


def detector_stage(plan, run, *, init, labeled_fraction, what):
    """The one fine-tuning command: the arms differ in --experiment-name and --init only."""
    s = plan.settings
    options = flags(
        experiment_name=str(run),
        init=init,
        arch=s.arch,
        labeled_fraction=labeled_fraction,
        split_seed=plan.args.seed,
        image_size=s.det_image_size,
        epochs=s.det_epochs,
        batch_size=s.det_batch_size,
        lr=s.det_lr,
        warmup_iters=s.det_warmup_iters,
        warmup_factor=s.det_warmup_factor,
        clip_grad=s.det_clip_grad,
        roi_batch_size=s.det_roi_batch_size,
        seed=run.seed,
        print_freq=5,
        device=plan.args.device,
        # The mAP stage scores every run; only the charted runs are scored per epoch.
        eval_every=1 if charted(plan, run) else 0,
        no_final_eval=True,
    )
    description = f"Faster R-CNN from {what}, seed {run.seed}"
    argv = (*common_flags(plan), *options)
    run_dir = f"runs/{run}"
    return Stage(
        f"det-{run}", description, ("train_det.py",), argv, run_dir, True, f"{run_dir}/{DETECTOR}"
    )


def evaluation_stage(plan, mode, run, description, *more, distributed=False):
    argv = (*common_flags(plan), "--mode", mode, "--experiment-name", str(run), *more)
    options = flags(device=plan.args.device, replace=True)
    return Stage(
        f"{mode}-{run}", description, ("evaluate.py",), (*argv, *options), None, distributed
    )


def probe_stages(plan, fraction, seed, first):
    s = plan.settings
    ssl = RunName("ssl", percent(fraction), seed)
    stages = [evaluation_stage(plan, "probe", ssl, f"linear probe of the {ssl} backbone")]
    baseline = flags(arch=s.arch, image_size=s.ssl_image_size)
    if first:
        random = RunName("random", None, seed)
        what = f"linear probe of a random backbone, seed {seed} (the baseline)"
        more = [*flags(backbone="random", seed=seed), *baseline]
        stages.append(evaluation_stage(plan, "probe", random, what, *more))
    if first and plan.args.pretrained_init:
        pretrained = RunName("pretrained", None, seed)
        what = f"linear probe of the --pretrained-init backbone ({pretrained})"
        weights = plan.relative(plan.args.pretrained_init)
        stages.append(
            evaluation_stage(plan, "probe", pretrained, what, "--backbone", weights, *baseline)
        )
    return stages


def detector_stages(plan, fraction, seed):
    """The arms at one SSL fraction and seed: SSL, random, and --pretrained-init's."""
    p, labeled = percent(fraction), round(1 - fraction, 6)
    arms = [("ssl", "ssl", "the SSL backbone"), ("random", "random", "a random backbone")]
    if plan.args.pretrained_init:
        weights = plan.relative(plan.args.pretrained_init)
        arms.append(("pretrained", weights, f"the --pretrained-init weights {weights}"))
    return [
        detector_stage(
            plan,
            RunName(arm, p, seed),
            init=init,
            labeled_fraction=labeled,
            what=f"{what} on the labeled {100 - p}%",
        )
        for arm, init, what in arms
    ]


def detector_runs(args):
    """Every fine-tuned run of the experiment, in the order they are trained."""
    arms = ("ssl", "random", "pretrained") if args.pretrained_init else ("ssl", "random")
    runs = [
        RunName(arm, percent(f), seed)
        for f in args.fractions
        for seed in args.train_seeds
        for arm in arms
    ]
    if len(args.fractions) > 1:
        runs += [RunName("random", 100, seed) for seed in args.train_seeds]
    return runs


def plan_stages(args, settings, out):
    """Every stage of the experiment, in order."""
    plan = Plan(args, settings, Path(os.path.abspath(out)))
    stages, source_flags = data_source(plan)
    stages.append(prepare_stage(plan, source_flags))
    for i, fraction in enumerate(args.fractions):
        for seed in args.train_seeds:
            stages.append(pretrain_stage(plan, fraction, seed))
            stages += probe_stages(plan, fraction, seed, first=i == 0)
            stages += detector_stages(plan, fraction, seed)
    if len(args.fractions) > 1:
        for seed in args.train_seeds:
            stages.append(
                detector_stage(
                    plan,
                    RunName("random", 100, seed),
                    init="random",
                    labeled_fraction=1.0,
                    what="a random backbone on all labeled images",
                )
            )
    for run in detector_runs(args):
        description = f"COCO mAP of {run} on the test split"
        pictures = []
        if charted(plan, run):
            description += ", and pictures of its predictions"
            pictures = flags(pictures=settings.pictures, seed=args.seed)
        stages.append(evaluation_stage(plan, "map", run, description, *pictures, distributed=True))
    stages.append(Stage("report", "report.md with tables and charts", ("-m", "cxr.report"), (".",)))
    return stages
