"""Every command's --help: the command a user types, and help text with the default for
every flag."""

import argparse

import pytest

import evaluate
import train_det
import train_ssl
from cxr import experiment, prepare, report, synthetic

PARSERS = {
    "train_ssl.py": train_ssl,
    "train_det.py": train_det,
    "evaluate.py": evaluate,
    "python -m cxr.experiment": experiment,
    "python -m cxr.prepare": prepare,
    "python -m cxr.report": report,
    "python -m cxr.synthetic": synthetic,
}


@pytest.mark.parametrize("command", PARSERS)
def test_every_flag_has_help_and_shows_its_default(command):
    parser = PARSERS[command].get_args_parser()
    text = parser.format_help()
    assert text.startswith(f"usage: {command} ")
    flags = [a for a in parser._actions if a.dest != "help"]
    without_help = [a.option_strings[0] for a in flags if not a.help]
    assert without_help == []
    flat = " ".join(text.split())
    missing = [
        a.option_strings[0]
        for a in flags
        if a.default not in (None, False, argparse.SUPPRESS)
        and f"(default: {a.default})" not in flat
    ]
    assert missing == []
    unexplained = [
        a.option_strings[0]
        for a in flags
        if a.default is None
        and not a.required
        and a.nargs != "+"
        and "default" not in a.help
        and "none" not in a.help.lower()
    ]
    assert unexplained == []
