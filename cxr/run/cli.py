"""What the command lines share: argument types, the help formatter, the flags of
a training run, and the seed project's flag names.

Every flag has a type here that refuses a value it cannot take, so a mistake
ends in argparse's one `error: argument --X: ...` line and exit status 2
before any work. Every command's --help shows each flag's default
(`HelpFormatter`); a flag whose default is None says in its help what
happens without it. Usage lines name the command a user types.
"""

import argparse
import json
import math
import os
import re
import sys
from dataclasses import fields, replace

from cxr.data.names import name_problem
from cxr.data.prepared import prepared_format

MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds up to here alike
MAX_COUNT = 10**6  # epochs, batch sizes, images: more than this is a typo


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with '(default: X)' after every flag that has a real default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """argparse, and defaults that follow from other flags, filled in after parsing
    (each a function of the namespace in `derived_defaults`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.derived_defaults = []

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        for fill in self.derived_defaults:
            fill(namespace)
        return namespace, rest


def command_parser(prog, description):
    """A CommandParser whose usage names `prog` and whose help shows defaults."""
    return CommandParser(prog=prog, description=description, formatter_class=HelpFormatter)


class PresetParser(CommandParser):
    """A command parser with --preset: each preset sets the defaults of some flags, and
    flags given on the command line win over it, wherever they stand."""

    def __init__(self, *, presets, default, **kwargs):
        super().__init__(**kwargs)
        self.presets, self.default_preset = presets, default
        self.add_argument(
            "--preset",
            choices=sorted(presets),
            default=default,
            help="defaults sized for "
            + ", ".join(f"{name}: {PRESET_PURPOSE.get(name, name)}" for name in sorted(presets))
            + "; each flag it sets says its value in both",
        )

    def _mark_preset_flags(self):
        """Each flag a preset sets: its default from the default preset, its help with both."""
        for action in self._actions:
            values = {
                n: chosen[action.dest]
                for n, chosen in self.presets.items()
                if action.dest in chosen
            }
            if values and not getattr(action, "preset_values", None):
                action.preset_values = values
                action.default = values[self.default_preset]
                action.help += " [" + ", ".join(f"{n}: {v}" for n, v in values.items()) + "]"

    def format_help(self):
        self._mark_preset_flags()
        return super().format_help()

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        first.add_argument("--preset", default=self.default_preset)
        preset = first.parse_known_args(args)[0].preset
        self._mark_preset_flags()
        self.set_defaults(**self.presets.get(preset, self.presets[self.default_preset]))
        return super().parse_known_args(args, namespace)  # rejects an unknown preset


PRESET_PURPOSE = {"cpu": "a 2-core CPU in minutes", "paper": "GPUs, the published settings"}


def preset_parser(prog, description, *, presets, default="paper"):
    """command_parser with --preset NAME setting the defaults presets[NAME] ({dest: value})."""
    return PresetParser(
        prog=prog,
        description=description,
        formatter_class=HelpFormatter,
        presets=presets,
        default=default,
    )


# --- argument types ---------------------------------------------------------------------------


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {'whole number' if kind is int else 'number'}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def int_range(low, high=MAX_COUNT, what="a whole number"):
    """argparse type of a whole number in [low, high]."""

    def parse(text):
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not {what} in [{low}, {high}]")
        return value

    parse.__name__ = f"whole number in [{low}, {high}]"
    return parse


def float_range(low, high, *, low_open=False, high_open=False, what="a number"):
    """argparse type of a finite number between low and high (each end closed unless
    said open; an infinite end is open)."""

    def parse(text):
        value = _number(text, float)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{text} is not {what} in {left}{low:g}, {high:g}{right}"
            )
        return value

    parse.__name__ = f"number in [{low}, {high}]"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0.0, math.inf, low_open=True, high_open=True, what="a number")
non_negative_float = float_range(0.0, math.inf, high_open=True)
fraction = float_range(0.0, 1.0, what="a share")
seed = int_range(0, MAX_SEED, what="a seed")
image_size = int_range(32, 8192, what="an image side in pixels")  # the ResNet's stride is 32


def fraction_list(text, *, low_open=False, high_open=False):
    """argparse type of comma-separated shares, e.g. 0.67,0.89."""
    one = float_range(0.0, 1.0, low_open=low_open, high_open=high_open, what="a share")
    parts = [part.strip() for part in str(text).split(",")]
    if not text or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated shares like 0.2,0.4")
    return [one(part) for part in parts]


def seed_list(text):
    """argparse type of comma-separated distinct seeds, e.g. 0,1,2."""
    parts = [part.strip() for part in str(text).split(",")]
    if not text or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated seeds like 0,1,2")
    seeds = [seed(part) for part in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: the seeds must differ")
    return seeds


def bare_name(text):
    """argparse type of a folder name inside another folder (an experiment's name)."""
    problem = name_problem(str(text))
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a folder name: {problem}")
    return text


def device(text):
    """argparse type of a torch device: cpu, cuda or cuda:N."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", str(text)) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda or cuda:N")
    return text


def views_flag(text):
    """argparse type of --views: refused unless `parse_views` can read it; kept as typed."""
    try:
        parse_views(text)
    except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return text


def parse_views(text):
    """A ViewConfig from --views: a preset's name, or a JSON object of fields that
    override a preset (its "preset" key, default simclr); ValueError says why not."""
    from cxr.ssl.views import VIEW_PRESETS, ViewConfig  # here: prepare never imports torch

    if text in VIEW_PRESETS:
        return VIEW_PRESETS[text]
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict):
        raise ValueError(f"expected one of {', '.join(VIEW_PRESETS)} or a JSON object")
    preset = overrides.pop("preset", "simclr")
    if preset not in VIEW_PRESETS:
        raise ValueError(f"no preset {preset!r}; presets: {', '.join(VIEW_PRESETS)}")
    unknown = sorted(set(overrides) - {f.name for f in fields(ViewConfig)})
    if unknown:
        raise ValueError(
            f"unknown field {unknown[0]!r}; fields: {', '.join(f.name for f in fields(ViewConfig))}"
        )
    config = replace(
        VIEW_PRESETS[preset],
        **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()},
    )
    config.check()
    return config


def default_workers():
    """Data-loader processes per training process: the cores this process may use,
    shared by the processes torchrun starts on the node, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(local) if local.isdigit() and int(local) > 0 else 1  # else: resolve_launch says
    return max(0, min(4, (cores or 1) // processes))


# --- the flags the scripts share ---------------------------------------------------------------


def add_folder_flags(parser, *, experiment_help):
    """Where a script reads the prepared data and where its experiment folder is."""
    parser.add_argument(
        "--data-dir", default="data", help="folder written by python -m cxr.prepare"
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="root of the experiment folders (default: named for the prepared data: "
        + ", ".join(OUTPUT_DIRS.values())
        + ")",
    )
    parser.add_argument("--experiment-name", type=bare_name, default="simclr", help=experiment_help)
    parser.derived_defaults.append(_output_dir_for_the_data)


OUTPUT_DIRS = {"vinbigdata": "vinbig_output", "nih": "nih_output", "coco": "coco_output"}


def _output_dir_for_the_data(namespace):
    """--output-dir when not given: named for the format the data folder was prepared from
    (vinbig_output, the seed project's, where the data folder cannot say)."""
    if namespace.output_dir is None:
        namespace.output_dir = OUTPUT_DIRS.get(prepared_format(namespace.data_dir), "vinbig_output")


def add_device_flags(parser):
    """The device and the data-loader processes (they change no result)."""
    parser.add_argument(
        "--device", type=device, default=None, help="cpu, cuda or cuda:N (default: cuda if any)"
    )
    parser.add_argument(
        "--workers",
        type=int_range(0, 256),
        default=default_workers(),
        help="data loader processes per process (default: the cores per process, at most 4)",
    )


def add_training_flags(parser, *, outputs, print_freq):
    """The flags of a training run: precision, clipping, seed, progress lines, and
    those that start, stop, continue or replace it, or only check it."""
    parser.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision: bf16, or fp16 with a GradScaler (on a CPU: to check the CUDA path)",
    )
    parser.add_argument(
        "--clip-grad", type=positive_float, default=None, help="max gradient norm (default: none)"
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="convolutions in the channels_last memory format (GPUs; the same results)",
    )
    parser.add_argument(
        "--seed", type=seed, default=0, help="training seed: weights, data order, augmentations"
    )
    parser.add_argument(
        "--print-freq", type=positive_int, default=print_freq, help="iterations between lines"
    )
    parser.add_argument(
        "--stop-after",
        type=positive_int,
        default=None,
        help="stop after this many epochs of this invocation (default: run to --epochs)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue the run from its checkpoint.pth, or from CHECKPOINT (a cxr checkpoint)",
    )
    parser.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from checkpoint.pth if there is one, else start (torchrun --max-restarts)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help=f"delete this run's outputs ({outputs}, nothing else) and start over",
    )
    parser.add_argument(
        "--dry-run",
        type=positive_int,
        nargs="?",
        const=0,
        default=None,
        metavar="PROCESSES",
        help="check the data and settings for PROCESSES processes (default: this launch's), "
        "write nothing, exit",
    )


def flags(**values):
    """Command-line flags from keyword arguments: name=value -> "--name", "value"
    (underscores as dashes); True gives the bare switch, False and None nothing."""
    items = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        items.append("--" + name.replace("_", "-"))
        if value is not True:
            items.append(str(value))
    return items


# --- the seed project's flag names, so its command lines run unchanged -------------------------

SEED_SHARE_FLAG = "--labeled-dataset-percent"


def add_share_flag(parser, name, *, dest, default, meaning, default_text=""):
    """A share-of-the-images flag that also answers to the seed project's
    --labeled-dataset-percent, which meant the SSL share in its pretraining
    script and the labeled share in its fine-tuning one. The help says so, and
    typing the old name prints what it is read as (once, from rank 0)."""

    class ShareAction(argparse.Action):
        def __call__(self, parser, namespace, value, option_string=None):
            setattr(namespace, self.dest, value)
            if option_string == SEED_SHARE_FLAG and os.environ.get("RANK", "0") == "0":
                note = f"note: {SEED_SHARE_FLAG} {value} is read as {name} {value}: {meaning}"
                print(note, file=sys.stderr)

    parser.add_argument(
        name,
        SEED_SHARE_FLAG,
        dest=dest,
        type=fraction,
        default=default,
        action=ShareAction,
        help=f"{meaning}{default_text}. {SEED_SHARE_FLAG}, the seed project's name, means this "
        "here",
    )


def seed_project_group(parser):
    """The argument group of the flags that exist for the seed project's command lines."""
    return parser.add_argument_group(
        "the seed project's flags", "accepted so that its command lines run unchanged"
    )
