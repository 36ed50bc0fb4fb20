"""A training run's folder: what happens before the first step and around it.

`open_run` does a script's whole bookkeeping before training, in this order,
so that nothing is written until every check has passed:

1. `run_config`: every argument that changes what the run computes (all but
   RESUME_MAY_CHANGE) and the number of processes; saved in each checkpoint;
2. with --resume (or --auto-resume and a checkpoint present) the checkpoint
   is read and its settings compared with these (`read_resumable`); any
   difference is refused;
3. `prepare_run_dir`: a fresh start in a folder that holds a run (a
   checkpoint) needs --replace, which deletes the run's own files (`outputs`)
   and nothing else; files of a start that failed before its first
   checkpoint are simply overwritten; temp files of a killed write go;
4. args.json (arguments, git revision, device, command), the first log line,
   and the list of images the run uses.

`RunLogger` is rank 0's printer: each line also goes to log.jsonl.
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint_io import load_torch_file
from .distributed import DistInfo
from .errors import UserError
from .image_lists import data_fingerprint, write_image_list
from .layout import CHECKPOINT
from .outputs import atomic_write_json, make_folder


def git_revision():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class RunLogger:
    """Rank 0 prints and appends a JSON record per line to run_dir/log.jsonl."""

    def __init__(self, run_dir, enabled):
        self.path = Path(run_dir) / "log.jsonl"
        self.enabled = enabled

    def log(self, message, **record):
        if not self.enabled:
            return
        print(message, flush=True)
        with open(self.path, "a") as f:
            f.write(
                json.dumps({"time": round(time.time(), 3), "message": message, **record}) + "\n"
            )


def resuming(args, checkpoint_path):
    """--resume, or --auto-resume with a checkpoint to continue (what a group that
    torchrun --max-restarts restarted with the same arguments finds)."""
    if args.replace and (args.resume or args.auto_resume):
        raise UserError("--replace starts over, --resume / --auto-resume continue: pick one")
    return args.resume or (args.auto_resume and Path(checkpoint_path).is_file())


def _leftover_temp_files(run_dir, outputs):
    """Temp files of `outputs` (cxr.outputs.atomic_path names them .NAME.PID.tmp)
    that a process killed while writing left behind."""
    names = {f".{name}" for name in outputs}
    return [p for p in Path(run_dir).glob(".*.tmp") if p.name.rsplit(".", 2)[0] in names]


def prepare_run_dir(run_dir, outputs, resume, replace, dist_info):
    """Make run_dir ready for a run that writes `outputs` (file names); returns
    the checkpoint path. Deletes only those files, never anything else in it.

    A folder holds a run once it holds checkpoint.pth: then a fresh start needs
    --replace, and a resumed run (`read_resumable` checked the checkpoint)
    continues in place. Without a checkpoint, outputs of a start that failed
    early (args.json, log.jsonl) are simply overwritten. Temp files that a
    killed write left behind are removed in either case."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint.pth"
    found = sorted(name for name in outputs if (run_dir / name).exists())
    if not resume and checkpoint.exists() and not replace:
        raise UserError(
            f"run folder {run_dir} already holds a run ({', '.join(found[:4])}); pass --resume to "
            "continue it, --replace to start over, or choose another --experiment-name"
        )
    if dist_info.is_main:
        make_folder(run_dir)
        stale = _leftover_temp_files(run_dir, outputs) + (
            [] if resume else [run_dir / name for name in found]
        )
        for path in stale:
            path.unlink()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return checkpoint


def write_run_header(logger, run_dir, args, dist_info):
    """args.json (with git revision) and a first log line: sorted args, revision, device."""
    header = {
        "args": dict(sorted(vars(args).items())),
        "git_revision": git_revision(),
        "device": str(dist_info.device),
        "world_size": dist_info.world_size,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }
    if dist_info.is_main:
        atomic_write_json(Path(run_dir) / "args.json", header, indent=1)
    arguments = " ".join(f"{k}={v}" for k, v in header["args"].items())
    logger.log(
        f"git {header['git_revision']} | device {header['device']} x{dist_info.world_size} | "
        f"torch {header['torch']}\nargs: {arguments}",
        event="start",
        **header,
    )


# Arguments that do not change what a run computes: they may differ on --resume.
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "auto_resume",
        "replace",
        "stop_after",
        "print_freq",
        "workers",
        "device",
        "devices",
        "output_dir",
        "experiment_name",
        "eval_every",
        "eval_batch_size",
    }
)


def run_config(args, dist_info):
    """Every setting that changes a run's result: all arguments but RESUME_MAY_CHANGE,
    and the number of processes. Saved in each checkpoint and compared on --resume."""
    config = {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_MAY_CHANGE}
    return {**config, "world_size": dist_info.world_size}


def read_resumable(checkpoint_path, config):
    """The checkpoint's state, after checking that `config` is the one it was
    started with (called before anything of the run folder is rewritten)."""
    if not Path(checkpoint_path).is_file():
        raise UserError(f"--resume: no checkpoint at {checkpoint_path}; start without --resume")
    state = load_torch_file(checkpoint_path, "a cxr training checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise UserError(
            f"{checkpoint_path} is not a cxr training checkpoint (it has no saved settings)"
        )
    changed = [
        k
        for k in sorted(set(config) | set(state["config"]))
        if state["config"].get(k) != config.get(k)
    ]
    if changed:
        raise UserError(
            "--resume with different settings than the checkpoint: "
            + ", ".join(f"{k} {state['config'].get(k)} -> {config.get(k)}" for k in changed)
        )
    return state


@dataclass
class Run:
    """An opened run folder: where to checkpoint, the logger, the settings to
    save with each checkpoint, the checked state to resume from (or None), the
    parsed command line and the processes."""

    checkpoint: Path
    logger: RunLogger
    config: dict
    resumed: dict
    args: argparse.Namespace
    dist_info: DistInfo


def open_run(run_dir, *, outputs, args, dist_info, images, derived=None):
    """Check, prepare and start the run folder (module docstring).

    images: (file name, names) of the images the run uses, written as an image
    list with the prepared data's fingerprint; derived: settings computed from
    the data (the classes, ...). Both the fingerprint and derived are saved in
    every checkpoint and checked on --resume like the arguments."""
    run_dir = Path(run_dir)
    fingerprint = data_fingerprint(args.data_dir)
    config = {**run_config(args, dist_info), **(derived or {}), "data_fingerprint": fingerprint}
    resume = resuming(args, run_dir / CHECKPOINT)
    resumed = read_resumable(run_dir / CHECKPOINT, config) if resume else None
    checkpoint = prepare_run_dir(run_dir, outputs, resume, args.replace, dist_info)
    logger = RunLogger(run_dir, dist_info.is_main)
    write_run_header(logger, run_dir, args, dist_info)
    if dist_info.is_main:
        file_name, names = images
        write_image_list(run_dir / file_name, names, fingerprint=fingerprint)
    return Run(checkpoint, logger, config, resumed, args, dist_info)
