"""What the command lines share: the help formatter and argument types.

Every command's --help shows each flag's default (`HelpFormatter`), except
where the default is None or a switch is off: such a flag's own help says
what happens without it. Usage lines name the command a user types.
"""

import argparse
import os
import sys

SEED_SHARE_FLAG = "--labeled-dataset-percent"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with '(default: X)' after every flag that has a real default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser(prog, description):
    """An ArgumentParser whose usage names `prog` and whose help shows defaults."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter
    )


def add_run_flags(parser, script):
    """The flags that start, stop, continue or replace a training run."""
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this many epochs in this run (time-limited jobs; --resume continues); "
        "default: run to --epochs",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run from its checkpoint.pth"
    )
    parser.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from checkpoint.pth if there is one, else start: for torchrun "
        "--max-restarts, which restarts the group with the same arguments",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help=f"delete this run's outputs ({script}, nothing else) and start over",
    )


def fraction_arg(text):
    """argparse type of a share of the images: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text} is not a share of the images: give a number in [0, 1]"
        )
    return value


def add_share_flag(parser, name, dest, default, meaning, default_text=""):
    """A share-of-the-images flag that also answers to the seed project's
    --labeled-dataset-percent, which meant the SSL share in its pretraining
    script and the labeled share in its fine-tuning one. The help says so, and
    typing the old name prints what it is read as (once, from rank 0)."""

    class ShareAction(argparse.Action):
        def __call__(self, parser, namespace, value, option_string=None):
            setattr(namespace, self.dest, value)
            if option_string == SEED_SHARE_FLAG and os.environ.get("RANK", "0") == "0":
                print(
                    f"note: {SEED_SHARE_FLAG} {value} is read as {name} {value}: {meaning}",
                    file=sys.stderr,
                )

    parser.add_argument(
        name,
        SEED_SHARE_FLAG,
        dest=dest,
        type=fraction_arg,
        default=default,
        action=ShareAction,
        help=f"{meaning}{default_text}. {SEED_SHARE_FLAG}, the seed project's name, means this "
        "here",
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
