"""A training run's folder, opened before the first step and held until the last.

`open_run` checks everything before it writes anything, and the main process
holds the folder's lock (`cxr.run.outputs`) for the life of the run:
1. the folder must be cxr's (or new), and no other process may be writing it;
2. a folder that holds a run (any of the run's outputs) is continued only with
   --resume (its checkpoint's settings must equal these, `read_resumable`),
   restarted only with --replace (which deletes the run's own outputs and
   nothing else), else refused; a finished run (its final model written)
   cannot be resumed, only replaced;
3. then args.json, the first log line and the image list are written.
Every process reaches the same decision: the main process decides, and an
error it raises is raised on every rank (`agree`). `RunLogger` is the main
process's printer; each line also goes to log.jsonl.
"""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from cxr.data.image_lists import data_fingerprint, write_image_list
from cxr.run.checkpoints import load_torch_file, torch_bytes
from cxr.run.distributed import agree
from cxr.run.engine import TrainingDiverged
from cxr.run.errors import UserError
from cxr.run.layout import ARGS, CHECKPOINT, LOG
from cxr.run.outputs import OutputFolder, open_output_folder


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
    """The main process prints and appends a JSON record per line to log.jsonl."""

    def __init__(self, folder, enabled):
        self.folder, self.enabled = folder, enabled

    def log(self, message, **record):
        if not self.enabled:
            return
        print(message, flush=True)
        line = json.dumps({"time": round(time.time(), 3), "message": message, **record})
        self.folder.append_text(LOG, line + "\n")


def resuming(args, checkpoint_path):
    """--resume, or --auto-resume with a checkpoint to continue (what a group that
    torchrun --max-restarts restarted with the same arguments finds)."""
    if args.replace and (args.resume or args.auto_resume):
        raise UserError("--replace starts over, --resume / --auto-resume continue: pick one")
    return bool(args.resume) or (args.auto_resume and Path(checkpoint_path).is_file())


def check_run_state(folder, *, outputs, final, resume, replace):
    """Refuse what would lose a run: a start over one without --replace, a resume of
    a finished one. With --replace, delete the run's own outputs (nothing else)."""
    found = sorted(name for name in outputs if (folder.path / name).exists())
    finished = (folder.path / final).exists()
    if resume and finished:
        raise UserError(
            f"the run in {folder.path} finished ({final}); there is nothing to resume. Pass "
            "--replace to train it again, or choose another --experiment-name"
        )
    if found and not (resume or replace):
        raise UserError(
            f"run folder {folder.path} already holds a run ({', '.join(found[:4])}); pass "
            "--resume to continue it, --replace to start over, or choose another --experiment-name"
        )
    if replace:
        folder.remove(*found)


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
    if "data_fingerprint" in changed:
        raise UserError(
            f"--resume: the data folder {config.get('data_dir')} was prepared again since "
            f"{checkpoint_path} was written (its split or boxes changed); start over with "
            "--replace, or resume with the data the run started on"
        )
    if changed:
        raise UserError(
            "--resume with different settings than the checkpoint: "
            + ", ".join(f"{k} {state['config'].get(k)} -> {config.get(k)}" for k in changed)
        )
    return state


def write_run_header(run):
    """args.json (with git revision) and a first log line: sorted args, revision, device."""
    args, dist_info = run.args, run.dist_info
    header = {
        "args": dict(sorted(vars(args).items())),
        "git_revision": git_revision(),
        "device": str(dist_info.device),
        "world_size": dist_info.world_size,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }
    if dist_info.is_main:
        run.folder.write_json(ARGS, header, indent=1)
    arguments = " ".join(f"{k}={v}" for k, v in header["args"].items())
    run.logger.log(
        f"git {header['git_revision']} | device {header['device']} x{dist_info.world_size} | "
        f"torch {header['torch']}\nargs: {arguments}",
        event="start",
        **header,
    )


class Run:
    """An opened run folder (`open_run`): its logger (`log`, the main process prints and
    appends to log.jsonl), the checked state to resume from (`resume_state`) and the
    checkpoint writer (`save`, the main process writes)."""

    def __init__(self, folder, *, config, resumed, args, dist_info):
        """resumed: (the checked state to resume from or None, the file it is read from)."""
        self.folder, self.config = folder, config
        self.resumed, self.resumed_from = resumed
        self.args, self.dist_info = args, dist_info
        self.logger = RunLogger(folder, dist_info.is_main)

    @property
    def checkpoint(self):
        return self.folder.inside(CHECKPOINT)

    def log(self, message, **record):
        self.logger.log(message, **record)

    def resume_state(self):
        """The checkpoint's state that --resume continues (None for a new run), its
        settings checked to equal this run's."""
        if self.resumed is not None:
            self.log(
                f"resumed from {self.resumed_from} after epoch {self.resumed['epoch']}",
                event="resume",
                epoch=self.resumed["epoch"],
            )
        return self.resumed

    def save(self, state):
        """checkpoint.pth on the main process: `state` with the run's settings, written
        atomically (tensors and plain values only)."""
        if self.dist_info.is_main:
            self.folder.write_bytes(CHECKPOINT, torch_bytes({**state, "config": self.config}))

    def log_epoch(self, epoch, *, mean_loss, **metrics):
        """The line that closes an epoch (mean loss and any evaluation numbers)."""
        self.log(
            f"epoch {epoch + 1}/{self.args.epochs} done: mean loss {mean_loss:.4f}"
            + "".join(f", {k} {v:.4f}" for k, v in metrics.items()),
            event="epoch",
            epoch=epoch + 1,
            mean_loss=mean_loss,
            **metrics,
        )

    def stopped_early(self, epochs_run):
        """True, and says how to continue, when `epochs_run` (a range) ends before
        --epochs (--stop-after)."""
        if epochs_run.stop >= self.args.epochs:
            return False
        self.log(
            f"stopped after epoch {max(epochs_run.stop, epochs_run.start)} of {self.args.epochs}; "
            "continue with --resume",
            event="stop",
        )
        return True

    def diverged(self, error):
        """`error` (TrainingDiverged) saying whether a checkpoint is kept."""
        kept = (
            f"{self.checkpoint} (after epoch {error.epoch}) is kept"
            if Path(self.checkpoint).is_file()
            else "no checkpoint was written before it"
        )
        return TrainingDiverged(f"{error} {kept}.", epoch=error.epoch)


@contextlib.contextmanager
def open_run(run_dir, *, outputs, final, command, args, dist_info, images, derived=None):
    """Check, open and start the run folder (module docstring), locked for the block.

    outputs: the run's file names (`cxr.run.layout`); final: the one that means the
    run finished; images: (file name, names) of the images the run uses,
    written with the prepared data's fingerprint; derived: settings computed
    from the data (the classes, ...). The fingerprint and derived are saved in
    every checkpoint and checked on --resume like the arguments. A
    TrainingDiverged raised in the block says whether a checkpoint is kept."""
    run_dir = Path(run_dir)
    fingerprint = data_fingerprint(args.data_dir)
    config = {**run_config(args, dist_info), **(derived or {}), "data_fingerprint": fingerprint}
    resume = resuming(args, run_dir / CHECKPOINT)
    with contextlib.ExitStack() as stack:

        def open_on_main():
            inputs = [args.data_dir, *(getattr(args, "extra_images", None) or [])]
            folder = stack.enter_context(
                open_output_folder(run_dir, command=command, inputs=inputs)
            )
            replace = args.replace
            check_run_state(folder, outputs=outputs, final=final, resume=resume, replace=replace)
            return folder

        folder = agree(dist_info, open_on_main) or OutputFolder(run_dir)
        source = Path(args.resume) if isinstance(args.resume, str) else run_dir / CHECKPOINT
        resumed = read_resumable(source, config) if resume else None
        run = Run(folder, config=config, resumed=(resumed, source), args=args, dist_info=dist_info)
        write_run_header(run)
        if dist_info.is_main:
            file_name, names = images
            write_image_list(folder.inside(file_name), names, fingerprint=fingerprint)
        try:
            yield run
        except TrainingDiverged as error:
            raise run.diverged(error) from None
