"""The paper's experiment in one command: data -> SimCLR -> probe -> Faster R-CNN
from the SSL backbone AND from a random one -> mAP -> pictures -> report.

    python -m cxr.experiment                           # CPU preset, synthetic data (15 min)
    python -m cxr.experiment --ssl-fractions 0.2,0.4,0.6,0.8           # the paper's sweep
    python -m cxr.experiment --preset paper --vinbig vinbigdata --nproc-per-node 8 --out paper_run
    python -m cxr.experiment --nih nih --extra-images nih_unlabeled --out nih_run   # NIH images

Every stage is one of the project's own command lines (python -m
cxr.synthetic, python -m cxr.prepare, train_ssl.py, train_det.py,
evaluate.py), run as a subprocess from the repository root; its output is
shown and kept in logs/, and the exact command goes into experiment.json and
the report, so any stage can be rerun by hand. With --nproc-per-node N the
training and evaluation stages run under torchrun.

For each SSL fraction f (the share of the training images pretrained on, as
in Bencevic et al., 2022) and each training seed s, the detector is
fine-tuned twice on the same labeled images (the last 1 - f of the seeded
permutation, cxr.splits): from the SSL backbone (runs/sslP-sS) and from a
random one (runs/randomP-sS). The two fine-tuning commands are one command
that differs only in --experiment-name and --init: same flags, same labeled
images, same seed, and a protocol under which a random start trains (all
stages, BatchNorm global across processes: train_det.py's defaults). With
more than one fraction, a random-init detector on all labeled images
(runs/random100-sS) gives the all-labels baseline. The report compares the
arms with paired bootstrap intervals over the test images and the seeds.

Everything goes into --out. A rerun refuses an existing folder unless
--replace (start over) or --resume (skip the stages that completed; a
training stage that was interrupted continues from its checkpoint). A
--resume may add training seeds after the old ones (--train-seeds 0 ->
0,1,2) when the intervals are too wide: only the new seeds' runs and the
report are computed.
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .cli import flags, parser
from .errors import UserError, exit_on_user_error
from .outputs import atomic_write_json, check_output_folder, make_folder, mark_as_ours
from .report import percent, run_name, write_report

REPO = Path(__file__).resolve().parents[1]
NIH_BOX_FILE = "BBox_List_2017.csv"


def _setting(text):
    return field(metadata={"help": text})


@dataclass(frozen=True)
class Settings:
    """What each stage is given; the presets below fill it in."""

    synthetic_images: int = _setting("synthetic training images (python -m cxr.synthetic --images)")
    synthetic_size: int = _setting("synthetic PNG side in pixels")
    arch: str = _setting("ResNet of SimCLR and the detector backbone")
    ssl_image_size: int = _setting("SimCLR view size in pixels (and the probe's)")
    ssl_epochs: int = _setting("SimCLR epochs")
    ssl_batch_size: int = _setting("SimCLR images per process")
    ssl_lr: float = _setting("SimCLR peak learning rate")
    ssl_warmup_epochs: float = _setting("SimCLR warmup epochs")
    ssl_views: str = _setting("SimCLR view preset or JSON (train_ssl.py --views)")
    ssl_temperature: float = _setting("NT-Xent temperature")
    det_image_size: int = _setting("detector image size in pixels")
    det_epochs: int = _setting("detector epochs")
    det_batch_size: int = _setting("detector images per process")
    det_lr: float = _setting("detector peak learning rate")
    det_warmup_iters: int = _setting("detector warmup iterations")
    det_warmup_factor: float = _setting("detector learning rate's share at the start of warmup")
    det_clip_grad: float = _setting("detector gradient-norm clip (none: off)")
    det_roi_batch_size: int = _setting("RoIs sampled per image for the box head")
    workers: int = _setting("data loader processes per training process")
    pictures: int = _setting("test images drawn per arm")


PRESETS = {
    # Sized for a 2-core CPU: about 20 minutes for one SSL fraction. SimCLR
    # runs 210 steps of 32 images (it ran 50 of 64): more steps lifted the
    # linear probe (docs/experiments.md).
    "cpu": Settings(
        synthetic_images=800,
        synthetic_size=128,
        arch="resnet18",
        ssl_image_size=128,
        ssl_epochs=10,
        ssl_batch_size=32,
        ssl_lr=0.05,
        ssl_warmup_epochs=1,
        ssl_views="cxr",
        ssl_temperature=0.2,
        det_image_size=128,
        det_epochs=4,
        det_batch_size=4,
        det_lr=0.01,
        det_warmup_iters=20,
        det_warmup_factor=0.0,
        det_clip_grad=None,
        det_roi_batch_size=64,
        workers=1,
        pictures=4,
    ),
    # The seed project's published commands (ResNet-50, 512 px), for GPUs.
    "paper": Settings(
        synthetic_images=15000,
        synthetic_size=512,
        arch="resnet50",
        ssl_image_size=512,
        ssl_epochs=100,
        ssl_batch_size=8,
        ssl_lr=0.05,
        ssl_warmup_epochs=10,
        ssl_views="simclr",
        ssl_temperature=0.5,
        det_image_size=512,
        det_epochs=100,
        det_batch_size=8,
        det_lr=0.01,
        det_warmup_iters=500,
        det_warmup_factor=0.0,
        det_clip_grad=None,
        det_roi_batch_size=512,
        workers=8,
        pictures=8,
    ),
}


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    command: list = None  # a subprocess, run from the repository root
    run_dir: Path = None  # a training run: resumable from run_dir/checkpoint.pth


def parse_seeds(text):
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--train-seeds {text!r}: expected comma-separated whole numbers like 0,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--train-seeds {text!r}: give distinct non-negative seeds")
    return seeds


def parse_fractions(text):
    try:
        fractions = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--ssl-fractions {text!r}: expected comma-separated numbers like 0.2,0.4,0.6"
        ) from None
    if (
        not fractions
        or not all(0 < f < 1 for f in fractions)
        or len(set(map(percent, fractions))) != len(fractions)
    ):
        raise UserError(
            f"--ssl-fractions {text!r}: each must be in (0, 1) and distinct to the percent"
        )
    return fractions


def plan_stages(args, settings, out):
    """Every stage of the experiment, in order."""
    s, python, data, runs = settings, sys.executable, out / "data", out / "runs"
    launcher = [python]
    if args.nproc_per_node > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={args.nproc_per_node}"]
    stages = []
    if args.vinbig:
        csv, images = Path(args.vinbig) / "train.csv", Path(args.vinbig) / "train"
    elif args.nih:
        csv, images = Path(args.nih) / NIH_BOX_FILE, Path(args.nih) / "images"
    else:
        csv, images = out / "vinbigdata" / "train.csv", out / "vinbigdata" / "train"
        synthetic = flags(
            out=out / "vinbigdata",
            images=s.synthetic_images,
            size=s.synthetic_size,
            seed=args.seed,
            replace=True,
        )
        stages.append(
            Stage(
                "synthetic",
                f"synthetic VinBigData: {s.synthetic_images} images at {s.synthetic_size} px",
                [python, "-m", "cxr.synthetic", *synthetic],
            )
        )
    prepare = flags(
        format="nih" if args.nih else None,
        csv=csv,
        images=images,
        out=data,
        keep_normal=True,
        normal_in_test=args.normal_in_test,
        replace=True,
    )
    what = (
        "validate NIH's boxes, split train/test by patient"
        if args.nih
        else "validate, fuse the readers' boxes (WBF), split train/test"
    )
    stages.append(Stage("prepare", f"prepare: {what}", [python, "-m", "cxr.prepare", *prepare]))
    both = flags(data_dir=data, output_dir=runs, workers=s.workers, device=args.device)
    training = [*both, *flags(arch=s.arch)]
    evaluation = [*both, *flags(replace=True)]
    extra = ["--extra-images", *map(str, args.extra_images)] if args.extra_images else []

    def pretraining(name, fraction, seed):
        options = flags(
            experiment_name=name,
            ssl_fraction=fraction,
            split_seed=args.seed,
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
        )
        return [*launcher, "train_ssl.py", *training, *options, *extra]

    def detector(name, init, labeled_fraction, seed):
        """The one fine-tuning command: the arms differ in --experiment-name and --init only."""
        options = flags(
            experiment_name=name,
            init=init,
            labeled_fraction=labeled_fraction,
            split_seed=args.seed,
            image_size=s.det_image_size,
            epochs=s.det_epochs,
            batch_size=s.det_batch_size,
            lr=s.det_lr,
            warmup_iters=s.det_warmup_iters,
            warmup_factor=s.det_warmup_factor,
            clip_grad=s.det_clip_grad,
            roi_batch_size=s.det_roi_batch_size,
            seed=seed,
            print_freq=5,
        )
        return [*launcher, "train_det.py", *training, *options]

    def evaluate(mode, name, *more, launch=(python,)):
        return [
            *launch,
            "evaluate.py",
            "--mode",
            mode,
            *evaluation,
            "--experiment-name",
            name,
            *more,
        ]

    for i, fraction in enumerate(args.fractions):
        p = percent(fraction)
        for seed in args.train_seeds:
            ssl, random = run_name("ssl", p, seed), run_name("random", p, seed)
            stages.append(
                Stage(
                    f"pretrain-{ssl}",
                    f"SimCLR pretraining on {p}% of the training images (+ normal images), "
                    f"seed {seed}",
                    pretraining(ssl, fraction, seed),
                    runs / ssl / "pretrain",
                )
            )
            stages.append(
                Stage(f"probe-{ssl}", f"linear probe of the {ssl} backbone", evaluate("probe", ssl))
            )
            if i == 0:
                name = run_name("random", None, seed)
                baseline = flags(
                    backbone="random", seed=seed, arch=s.arch, image_size=s.ssl_image_size
                )
                stages.append(
                    Stage(
                        f"probe-{name}",
                        f"linear probe of a random backbone, seed {seed} (the baseline)",
                        evaluate("probe", name, *baseline),
                    )
                )
            labeled = round(1 - fraction, 6)
            for init, name in (("ssl", ssl), ("random", random)):
                start = "the SSL backbone" if init == "ssl" else "a random backbone"
                stages.append(
                    Stage(
                        f"det-{name}",
                        f"Faster R-CNN from {start} on the labeled {100 - p}%, seed {seed}",
                        detector(name, init, labeled, seed),
                        runs / name,
                    )
                )
    if len(args.fractions) > 1:
        for seed in args.train_seeds:
            name = run_name("random", 100, seed)
            stages.append(
                Stage(
                    f"det-{name}",
                    f"Faster R-CNN from a random backbone on all labeled images, seed {seed}",
                    detector(name, "random", 1.0, seed),
                    runs / name,
                )
            )
    for name in detector_runs(args.fractions, args.train_seeds):
        stages.append(
            Stage(
                f"map-{name}",
                f"COCO mAP of {name} on the test split",
                evaluate("map", name, launch=launcher),
            )
        )
    for init in ("ssl", "random"):
        name = run_name(init, percent(args.fractions[0]), args.train_seeds[0])
        pictures = flags(num_images=s.pictures, seed=args.seed)
        stages.append(
            Stage(
                f"pictures-{name}",
                f"pictures of {name}'s detections",
                evaluate("visualize", name, *pictures),
            )
        )
    stages.append(Stage("report", "report.md with tables and charts"))
    return stages


def detector_runs(fractions, seeds):
    names = [
        run_name(init, percent(f), seed)
        for f in fractions
        for seed in seeds
        for init in ("ssl", "random")
    ]
    return names + ([run_name("random", 100, seed) for seed in seeds] if len(fractions) > 1 else [])


def run_command(stage, log_path, resuming):
    """Run a stage's command, echoing its output indented and keeping it in log_path."""
    command = list(stage.command)
    if stage.run_dir is not None:
        command.append(
            "--resume" if resuming and (stage.run_dir / "checkpoint.pth").is_file() else "--replace"
        )
    print(f"  $ {shlex.join(command)}", flush=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in process.stdout:
            print(f"    {line}", end="", flush=True)
            log.write(line)
        code = process.wait()
    return command, code


class Experiment:
    """The experiment folder and its record, experiment.json."""

    def __init__(self, out, record):
        self.out, self.record = out, record

    @property
    def record_path(self):
        return self.out / "experiment.json"

    def save(self):
        atomic_write_json(self.record_path, self.record, indent=1)

    def done(self, name):
        return self.record["stages"].get(name, {}).get("status") == "done"

    def run(self, stages, resuming):
        make_folder(self.out / "logs")
        for number, stage in enumerate(stages, 1):
            if resuming and self.done(stage.name):
                print(
                    f"[{number}/{len(stages)}] {stage.description}: done before, skipped",
                    flush=True,
                )
                continue
            print(f"[{number}/{len(stages)}] {stage.description}", flush=True)
            start = time.perf_counter()
            entry = {"description": stage.description, "status": "running"}
            self.record["stages"][stage.name] = entry
            self.save()
            if stage.command is None:
                path = write_report(self.out)
                entry["command"] = (
                    "python -c 'from cxr.report import write_report; write_report(OUT)'"
                )
                print(f"  wrote {path}", flush=True)
            else:
                log_path = self.out / "logs" / f"{number:02d}-{stage.name}.log"
                command, code = run_command(stage, log_path, resuming)
                entry["command"] = shlex.join(command)
                if code != 0:
                    entry.update(
                        status="failed",
                        exit_code=code,
                        seconds=round(time.perf_counter() - start, 1),
                    )
                    self.save()
                    raise UserError(
                        f"stage {stage.name} failed (exit {code}); its output is in {log_path}. "
                        f"Fix the cause and rerun with --resume to continue from this stage."
                    )
            entry.update(status="done", seconds=round(time.perf_counter() - start, 1))
            self.save()
            print(f"  {stage.name} done in {entry['seconds']:.0f} s", flush=True)


def adds_seeds(old, new):
    """True if the seed list new continues old: the finished seeds' runs stay valid."""
    return len(new) > len(old) and new[: len(old)] == old


def open_experiment(args, settings):
    """Create, replace or reopen --out; returns the Experiment."""
    out = Path(args.out).resolve()
    config = {
        "preset": args.preset,
        "settings": asdict(settings),
        "ssl_fractions": args.fractions,
        "seed": args.seed,
        "train_seeds": args.train_seeds,
        "normal_in_test": args.normal_in_test,
        "vinbig": str(Path(args.vinbig).resolve()) if args.vinbig else None,
        "nih": str(Path(args.nih).resolve()) if args.nih else None,
        "extra_images": [str(Path(p).resolve()) for p in args.extra_images or []],
        "nproc_per_node": args.nproc_per_node,
        "device": args.device,
    }
    record_path = out / "experiment.json"
    if args.resume:
        if not record_path.is_file():
            raise UserError(f"--resume: {record_path} not found; start without --resume")
        record = json.loads(record_path.read_text())
        changed = sorted(k for k in config if record["config"].get(k) != config[k])
        if changed == ["train_seeds"] and adds_seeds(
            record["config"]["train_seeds"], args.train_seeds
        ):
            record["config"]["train_seeds"] = args.train_seeds
            record["stages"].pop("report", None)
        elif changed:
            raise UserError(
                f"--resume: the settings differ from the run in {out} ({', '.join(changed)}); "
                "rerun with the same flags (--train-seeds may add seeds after the old ones), "
                "or --replace to start over"
            )
        return Experiment(out, record)
    inputs = [p for p in (args.vinbig, args.nih, *(args.extra_images or [])) if p]
    if out.is_dir() and any(out.iterdir()) and not args.replace:
        raise UserError(
            f"{out} already holds an experiment; pass --resume to finish it, --replace to start "
            "over, or choose another --out"
        )
    check_output_folder(out, args.replace, inputs)
    if out.is_dir():
        shutil.rmtree(out)
    make_folder(out)
    mark_as_ours(out, "python -m cxr.experiment")
    record = {
        "config": config,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([sys.executable, "-m", "cxr.experiment", *args.argv]),
        "stages": {},
    }
    return Experiment(out, record)


def settings_from(args):
    settings = PRESETS[args.preset]
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(Settings)
        if getattr(args, f.name, None) is not None
    }
    return replace(settings, **overrides)


def get_args_parser():
    p = parser(
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
    p.add_argument(
        "--extra-images",
        nargs="+",
        default=None,
        metavar="DIR",
        help="unlabeled images added to every SSL pool (train_ssl.py --extra-images; default: "
        "none)",
    )
    p.add_argument(
        "--ssl-fractions",
        default="0.6",
        help="shares of the training images to pretrain on, e.g. 0.1,0.2,...,0.9 for the paper's "
        "sweep",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data: the synthetic images and the SSL / labeled split",
    )
    p.add_argument(
        "--train-seeds",
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
        "--nproc-per-node", type=int, default=1, help="run training and mAP under torchrun with N"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (None: cuda if available)")
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
            type={str: str, float: float}.get(setting.type, int),
            help=f"{setting.metadata['help']} ({presets})",
        )
    return p


def parse_args(argv):
    """The parsed command line, with the fraction and seed lists checked."""
    args = get_args_parser().parse_args(argv)
    args.argv, args.fractions = list(argv), parse_fractions(args.ssl_fractions)
    args.train_seeds = parse_seeds(args.train_seeds)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
    settings = settings_from(args)
    experiment = open_experiment(args, settings)
    stages = plan_stages(args, settings, experiment.out)
    print(
        f"cxr experiment in {experiment.out}: {len(stages)} stages, preset {args.preset}, "
        f"SSL fractions {', '.join(f'{percent(f)}%' for f in args.fractions)}",
        flush=True,
    )
    start = time.perf_counter()
    experiment.run(stages, args.resume)
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
