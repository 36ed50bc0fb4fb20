"""The paper's experiment in one command: data -> SimCLR -> probe -> Faster R-CNN from
the SSL backbone AND from a random one -> mAP -> pictures -> report.

    python -m cxr.experiment                                   # CPU preset, synthetic data
    python -m cxr.experiment --nih NIH --extra-images UNLABELED --out nih_run
    python -m cxr.experiment --preset paper --vinbig vinbigdata --nproc-per-node 8

Every stage is one of cxr's own command lines, run from the experiment folder
(so every path in it and in the report is relative to the report), its output
kept in logs/. For each SSL fraction f and training seed s the detector is
fine-tuned on the same labeled images from the SSL backbone (runs/sslP-sS)
and from a random one (runs/randomP-sS), by one command that differs only in
--experiment-name and --init; --pretrained-init adds a third arm from given
weights. Every cxr module's command is parsed before the first stage runs, and
each training script checks its own command against the prepared data
(`--dry-run`) before the first training stage; --resume skips
the stages that completed.
"""

import argparse
import contextlib
import importlib
import io
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from cxr.data.coco_format import group_pattern
from cxr.nn.resnet import infer_arch
from cxr.pipeline.presets import PRESETS, Settings
from cxr.run import cli
from cxr.run.cli import command_parser, flags
from cxr.run.errors import UserError, exit_on_user_error
from cxr.run.layout import BACKBONE, CHECKPOINT, DETECTOR, PRETRAIN, RunName, percent
from cxr.run.model_files import load_trunk_weights
from cxr.run.outputs import check_output_folder, clear_folder, make_folder, open_output_folder

REPO = Path(__file__).resolve().parents[1]
NIH_BOX_FILE = "BBox_List_2017.csv"
TRAINING_SCRIPTS = ("train_ssl.py", "train_det.py")


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
        return os.path.relpath(Path(path).resolve(), self.out)


def data_source(plan):
    """([stages that make the data], prepare's flags) for the chosen data."""
    args, s = plan.args, plan.settings
    if args.vinbig:
        source = flags(csv=plan.relative(Path(args.vinbig) / "train.csv"))
        return [], [*source, *flags(images=plan.relative(Path(args.vinbig) / "train"))]
    if args.nih:
        source = flags(format="nih", csv=plan.relative(Path(args.nih) / NIH_BOX_FILE))
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
    argv = (*common_flags(plan), *options, *(["--extra-images", *extra] if extra else []))
    description = f"SimCLR pretraining on {percent(fraction)}% of the training images, seed {seed}"
    run_dir = f"runs/{name}/{PRETRAIN}"
    result = f"{run_dir}/{BACKBONE}"
    return Stage(f"pretrain-{name}", description, ("train_ssl.py",), argv, run_dir, True, result)


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
    plan = Plan(args, settings, Path(out).resolve())
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
        stages.append(evaluation_stage(plan, "map", run, description, distributed=True))
    arms = ("ssl", "random", "pretrained") if args.pretrained_init else ("ssl", "random")
    for arm in arms:
        run = RunName(arm, percent(args.fractions[0]), args.train_seeds[0])
        pictures = flags(num_images=settings.pictures, seed=args.seed)
        stages.append(evaluation_stage(plan, "visualize", run, f"pictures of {run}", *pictures))
    stages.append(Stage("report", "report.md with tables and charts", ("-m", "cxr.report"), (".",)))
    return stages


def parse_stage(stage):
    """A cxr module's stage parsed by its own parser; a value it refuses is refused here,
    naming the stage, before any stage runs (the scripts check themselves:
    `check_training_stages`)."""
    errors = io.StringIO()
    module = importlib.import_module(stage.program[1])
    try:
        with contextlib.redirect_stderr(errors):
            return module.get_args_parser().parse_args(list(stage.argv))
    except SystemExit:
        lines = errors.getvalue().strip().splitlines() or ["its command line is refused"]
        raise UserError(f"stage {stage.name}: {lines[-1]}") from None


def stage_environment():
    """The environment of a stage: cxr's checkout first on the Python path."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def check_training_stages(stages, out, nproc):
    """Every training stage's own check of its command line against the prepared data
    (`--dry-run N`: pool and batch sizes, warmup against the run's length, the
    labeled images) for N processes, run before the first training stage."""
    for stage in stages:
        if stage.program[0] not in TRAINING_SCRIPTS:
            continue
        command = [*stage.command(nproc=1), "--dry-run", str(nproc)]
        result = subprocess.run(
            command, cwd=out, env=stage_environment(), capture_output=True, text=True
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
            raise UserError(f"stage {stage.name}: {lines[-1].removeprefix('error: ')}")


def run_command(stage, out, log_path, *, resuming, nproc):
    """Run a stage's command from the experiment folder, echoing its output indented and
    keeping it in log_path; returns the exit status."""
    extra = []
    if stage.run_dir is not None:
        resume = resuming and (out / stage.run_dir / CHECKPOINT).is_file()
        extra = ["--resume" if resume else "--replace"]
    command = stage.command(nproc) + extra
    print(f"  $ {shlex.join(stage.command(nproc, display=True) + extra)}", flush=True)
    env = stage_environment()
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        process = subprocess.Popen(
            command, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in process.stdout:
            print(f"    {line}", end="", flush=True)
            log.write(line)
        return process.wait(), shlex.join(stage.command(nproc, display=True) + extra)


class Experiment:
    """The experiment folder (an OutputFolder, locked) and its record, experiment.json."""

    def __init__(self, folder, record):
        self.folder, self.out, self.record = folder, folder.path, record

    def save(self):
        self.folder.write_json("experiment.json", self.record, indent=1)

    def done(self, stage):
        """Done before: recorded so, or its result written (a run that finished after
        the record was last saved)."""
        if self.record["stages"].get(stage.name, {}).get("status") == "done":
            return True
        return stage.result is not None and (self.out / stage.result).is_file()

    def run(self, stages, *, resuming, nproc):
        make_folder(self.folder.inside("logs"))
        checked = False
        for number, stage in enumerate(stages, 1):
            if resuming and self.done(stage):
                print(f"[{number}/{len(stages)}] {stage.description}: done before, skipped")
                continue
            if stage.program[0] in TRAINING_SCRIPTS and not checked:
                check_training_stages(stages, self.out, nproc)
                checked = True
            print(f"[{number}/{len(stages)}] {stage.description}", flush=True)
            self.run_stage(stage, number, resuming=resuming, nproc=nproc)

    def run_stage(self, stage, number, *, resuming, nproc):
        start = time.perf_counter()
        entry = {"description": stage.description, "status": "running"}
        self.record["stages"][stage.name] = entry
        self.save()
        log_path = self.folder.inside(f"logs/{number:02d}-{stage.name}.log")
        code, entry["command"] = run_command(
            stage, self.out, log_path, resuming=resuming, nproc=nproc
        )
        entry.update(
            status="done" if code == 0 else "failed", seconds=round(time.perf_counter() - start, 1)
        )
        self.save()
        if code != 0:
            raise UserError(
                f"stage {stage.name} failed (exit {code}); its output is in {log_path}. "
                "Fix the cause and rerun with --resume to continue from this stage."
            )
        print(f"  {stage.name} done in {entry['seconds']:.0f} s", flush=True)


def adds_seeds(old, new):
    """True if the seed list new continues old: the finished seeds' runs stay valid."""
    return len(new) > len(old) and new[: len(old)] == old


def experiment_config(args, settings, out):
    """What the experiment computes from; --resume compares it with the record's."""
    plan = Plan(args, settings, out)
    inputs = {
        name: plan.relative(getattr(args, name)) if getattr(args, name) else None
        for name in ("vinbig", "nih", "coco", "coco_images", "pretrained_init")
    }
    return {
        "preset": args.preset,
        "settings": asdict(settings),
        "ssl_fractions": args.fractions,
        "seed": args.seed,
        "train_seeds": args.train_seeds,
        "normal_in_test": args.normal_in_test,
        **inputs,
        "group_by": args.group_by,
        "fuse": args.fuse,
        "extra_images": [plan.relative(p) for p in args.extra_images or []],
        "nproc_per_node": args.nproc_per_node,
        "device": args.device,
    }


def reopen(folder, config, args):
    """The Experiment of --resume: the same settings, or more training seeds."""
    out, record_path = folder.path, folder.path / "experiment.json"
    if not record_path.is_file():
        raise UserError(f"--resume: {record_path} not found; start without --resume")
    record = json.loads(record_path.read_text())
    changed = sorted(k for k in config if record["config"].get(k) != config[k])
    if changed == ["train_seeds"] and adds_seeds(record["config"]["train_seeds"], args.train_seeds):
        record["config"]["train_seeds"] = args.train_seeds
        record["stages"].pop("report", None)
    elif changed:
        raise UserError(
            f"--resume: the settings differ from the run in {out} ({', '.join(changed)}); "
            "rerun with the same flags (--train-seeds may add seeds after the old ones), "
            "or --replace to start over"
        )
    return Experiment(folder, record)


def experiment_inputs(args):
    return [
        p
        for p in (args.vinbig, args.nih, args.coco, args.coco_images, *(args.extra_images or []))
        if p
    ]


def open_experiment(args, settings, folder):
    """The Experiment in the opened --out folder: a new one, replaced, or reopened."""
    out = folder.path
    config = experiment_config(args, settings, out)
    if args.resume:
        return reopen(folder, config, args)
    if (out / "experiment.json").exists() and not args.replace:
        raise UserError(
            f"{out} already holds an experiment; pass --resume to finish it, --replace to start "
            "over, or choose another --out"
        )
    check_output_folder(out, args.replace)
    clear_folder(folder)
    record = {
        "config": config,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": displayed_command(args.argv, out),
        "stages": {},
    }
    return Experiment(folder, record)


def settings_from(args):
    settings = PRESETS[args.preset]
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(Settings)
        if getattr(args, f.name, None) is not None
    }
    return replace(settings, **overrides)


PATH_FLAGS = ("--vinbig", "--nih", "--coco", "--coco-images", "--extra-images", "--pretrained-init")


def displayed_command(argv, out):
    """The experiment's own command line as run from its folder: --out is '.', and every
    input path is relative to the folder, so the report holds no path of the machine."""
    words, flag = ["python", "-m", "cxr.experiment"], None
    for word in argv:
        if word.startswith("--"):
            flag = word.split("=")[0]
            words.append(word)
        elif flag == "--out":
            words[-1:] = []
        elif flag in PATH_FLAGS:
            words.append(os.path.relpath(Path(word).resolve(), out))
        else:
            words.append(word)
    return shlex.join(words + ["--out", "."])


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
        "--extra-images",
        nargs="+",
        default=None,
        metavar="DIR",
        help="unlabeled images added to every SSL pool (train_ssl.py --extra-images; default: "
        "none)",
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
    stages = plan_stages(args, settings, Path(args.out).resolve())
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
        experiment.record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        experiment.save()
    print(
        f"experiment complete in {(time.perf_counter() - start) / 60:.1f} min (this invocation); "
        f"report: {experiment.out / 'report.md'}",
        flush=True,
    )
    return experiment.out


if __name__ == "__main__":
    exit_on_user_error(main)
