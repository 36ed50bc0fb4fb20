"""Running an experiment's stages: each one of cxr's own command lines, run from the
experiment folder with its output kept in logs/, and the record of what ran
(experiment.json), which --resume continues.
"""

import contextlib
import importlib
import io
import os
import shlex
import subprocess
import time
from dataclasses import asdict

from cxr.pipeline.results import read_experiment_record
from cxr.pipeline.stages import REPO, Plan, path_from
from cxr.run.errors import UserError
from cxr.run.layout import CHECKPOINT
from cxr.run.outputs import check_output_folder, clear_folder, make_folder, now_iso

TRAINING_SCRIPTS = ("train_ssl.py", "train_det.py")


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
        try:
            for line in process.stdout:
                print(f"    {line}", end="", flush=True)
                log.write(line)
            return process.wait(), shlex.join(stage.command(nproc, display=True) + extra)
        finally:
            stop(process)


STOP_GRACE_SECONDS = 60


def stop(process):
    """End a stage the experiment leaves early (SIGTERM, Ctrl-C, an error): SIGTERM, which
    cxr's commands (and torchrun, for its workers) turn into a clean stop, then SIGKILL
    after STOP_GRACE_SECONDS; no stage outlives the experiment."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        "nih_classes": args.nih_classes if args.nih else None,
        "fuse": args.fuse,
        "extra_images": [plan.relative(p) for p in args.extra_images or []],
        "drop_prepared": args.drop_prepared,
        "nproc_per_node": args.nproc_per_node,
        "device": args.device,
    }


def reopen(folder, config, args):
    """The Experiment of --resume: the same settings, or more training seeds."""
    out, record_path = folder.path, folder.path / "experiment.json"
    if not record_path.is_file():
        raise UserError(f"--resume: {record_path} not found; start without --resume")
    record = read_experiment_record(out)
    changed = changed_flags(record["config"], config)
    if changed == ["--train-seeds"] and adds_seeds(
        record["config"]["train_seeds"], args.train_seeds
    ):
        record["config"]["train_seeds"] = args.train_seeds
        record["stages"].pop("report", None)
    elif changed:
        raise UserError(
            f"--resume: the settings differ from the run in {out}: {', '.join(changed)} "
            "changed; rerun with the same flags (--train-seeds may add seeds after the old "
            "ones), or --replace to start over"
        )
    record["config"]["settings"].update(
        {key: config["settings"][key] for key in RESULT_FREE_SETTINGS}
    )
    return Experiment(folder, record)


RESULT_FREE_SETTINGS = ("workers",)  # may change on --resume: no result depends on them


def changed_flags(old, new):
    """The flags whose values differ between two experiment configs, each setting by its
    own flag; a key the old record lacks counts as unchanged while it is off."""

    def flatten(config):
        items = {k: v for k, v in config.items() if k != "settings"}
        items.update(config.get("settings", {}))
        return {k: v for k, v in items.items() if k not in RESULT_FREE_SETTINGS}

    def changed(key):
        if key not in before:  # a setting the record predates: changed only when it is on
            return bool(after[key])
        return before[key] != after[key]

    before, after = flatten(old), flatten(new)
    return ["--" + key.replace("_", "-") for key in sorted(after) if changed(key)]


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
        "started": now_iso(),
        "command": displayed_command(args.argv, out),
        "stages": {},
    }
    return Experiment(folder, record)


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
            words.append(path_from(out, word))
        else:
            words.append(word)
    return shlex.join(words + ["--out", "."])
