"""Every flag of every command refuses the values it cannot take: exit status 2, one
`error: argument --X` line, no traceback, nothing written (a table, checked to
cover every flag)."""

import argparse

import pytest

import evaluate
import train_det
import train_ssl
from cxr import experiment, prepare, report, synthetic

VALUES = {
    "zero": "0",
    "negative": "-1",
    "nan": "nan",
    "inf": "inf",
    "word": "abc",
    "huge": "1" + "0" * 30,
    "fraction": "0.5",
}
ANY_TEXT = set()  # paths and names checked against the file system when the command runs
COUNT = {"zero", "negative", "nan", "inf", "word", "huge", "fraction"}  # whole numbers >= 1
CAN_BE_ZERO = COUNT - {"zero"}
SEED = CAN_BE_ZERO
POSITIVE = {"zero", "negative", "nan", "inf", "word"}  # positive finite numbers
NON_NEGATIVE = {"negative", "nan", "inf", "word"}
SHARE = {"negative", "nan", "inf", "word", "huge"}
SHARE_BELOW_ONE = SHARE  # [0, 1): 1 itself is tested below
CHOICE = {"zero", "negative", "nan", "inf", "word", "huge", "fraction"}
SIDE = COUNT  # image sides: whole numbers in [32, 8192]

TABLE = {
    "train_ssl.py": {
        "--preset": CHOICE,
        "--data-dir": ANY_TEXT,
        "--output-dir": ANY_TEXT,
        "--experiment-name": ANY_TEXT,
        "--arch": CHOICE,
        "--image-size": SIDE,
        "--batch-size": COUNT,
        "--epochs": COUNT,
        "--lr": POSITIVE,
        "--warmup-epochs": NON_NEGATIVE,
        "--weight-decay": NON_NEGATIVE,
        "--optimizer": CHOICE,
        "--temperature": POSITIVE,
        "--projection-dim": COUNT,
        "--views": CHOICE,
        "--ssl-fraction": SHARE,
        "--split-seed": SEED,
        "--extra-images": ANY_TEXT,
        "--workers": CAN_BE_ZERO,
        "--amp": CHOICE,
        "--clip-grad": POSITIVE,
        "--seed": SEED,
        "--device": CHOICE,
        "--print-freq": COUNT,
        "--precise-bn-images": CAN_BE_ZERO,
        "--stop-after": COUNT,
        "--dry-run": COUNT,
        "--resume": ANY_TEXT,
        "--devices": {"zero", "negative", "nan", "inf", "word", "huge", "fraction"},
    },
    "train_det.py": {
        "--preset": CHOICE,
        "--data-dir": ANY_TEXT,
        "--output-dir": ANY_TEXT,
        "--experiment-name": ANY_TEXT,
        "--init": ANY_TEXT,
        "--arch": CHOICE,
        "--image-size": SIDE,
        "--labeled-fraction": SHARE,
        "--split-seed": SEED,
        "--trainable-layers": {"negative", "nan", "inf", "word", "huge", "fraction"},
        "--norm": CHOICE,
        "--roi-batch-size": COUNT,
        "--rpn-proposals": COUNT,
        "--batch-size": COUNT,
        "--epochs": COUNT,
        "--lr": POSITIVE,
        "--warmup-iters": CAN_BE_ZERO,
        "--warmup-factor": SHARE,
        "--lr-schedule": CHOICE,
        "--lr-steps": {"zero", "negative", "nan", "inf", "word", "huge"},
        "--weight-decay": NON_NEGATIVE,
        "--repeat-threshold": SHARE,
        "--repeat-rounding": CHOICE,
        "--negatives": {"negative", "nan", "inf", "word", "huge"},
        "--val-fraction": SHARE_BELOW_ONE,
        "--eval-every": CAN_BE_ZERO,
        "--eval-batch-size": COUNT,
        "--amp": CHOICE,
        "--clip-grad": POSITIVE,
        "--workers": CAN_BE_ZERO,
        "--seed": SEED,
        "--device": CHOICE,
        "--print-freq": COUNT,
        "--stop-after": COUNT,
        "--dry-run": COUNT,
        "--resume": ANY_TEXT,
    },
    "evaluate.py": {
        "--mode": CHOICE,
        "--output-dir": ANY_TEXT,
        "--experiment-name": ANY_TEXT,
        "--data-dir": ANY_TEXT,
        "--device": CHOICE,
        "--batch-size": COUNT,
        "--workers": CAN_BE_ZERO,
        "--checkpoint": ANY_TEXT,
        "--eval-dir": ANY_TEXT,
        "--score-threshold": SHARE,
        "--num-images": COUNT,
        "--pictures": CAN_BE_ZERO,
        "--image-ids": ANY_TEXT,
        "--images": ANY_TEXT,
        "--original-sizes": ANY_TEXT,
        "--backbone": ANY_TEXT,
        "--arch": CHOICE,
        "--image-size": SIDE,
        "--C": POSITIVE,
        "--seed": SEED,
        "--test-data-dir": ANY_TEXT,
        "--test-ann-file": ANY_TEXT,
    },
    "python -m cxr.prepare": {
        "--format": CHOICE,
        "--csv": ANY_TEXT,
        "--annotations": ANY_TEXT,
        "--images": ANY_TEXT,
        "--out": ANY_TEXT,
        "--original-size": COUNT,
        "--nih-classes": CHOICE,
        "--group-by": {"zero", "negative", "nan", "inf", "word", "huge", "fraction"},
        "--iou-thr": SHARE,
        "--skip-box-thr": SHARE,
        "--test-fraction": SHARE_BELOW_ONE,
        "--seed": SEED,
    },
    "python -m cxr.synthetic": {
        "--out": ANY_TEXT,
        "--images": COUNT,
        "--test-images": CAN_BE_ZERO,
        "--size": SIDE,
        "--seed": SEED,
    },
    "python -m cxr.experiment": {
        "--out": ANY_TEXT,
        "--preset": CHOICE,
        "--vinbig": ANY_TEXT,
        "--nih": ANY_TEXT,
        "--coco": ANY_TEXT,
        "--coco-images": ANY_TEXT,
        "--group-by": {"zero", "negative", "nan", "inf", "word", "huge", "fraction"},
        "--nih-classes": CHOICE,
        "--extra-images": ANY_TEXT,
        "--pretrained-init": ANY_TEXT,
        "--ssl-fractions": {"zero", "negative", "nan", "inf", "word", "huge"},
        "--seed": SEED,
        "--train-seeds": SEED,
        "--nproc-per-node": COUNT,
        "--device": CHOICE,
        "--synthetic-images": COUNT,
        "--synthetic-size": SIDE,
        "--arch": CHOICE,
        "--ssl-image-size": SIDE,
        "--ssl-epochs": COUNT,
        "--ssl-batch-size": COUNT,
        "--ssl-lr": POSITIVE,
        "--ssl-warmup-epochs": NON_NEGATIVE,
        "--ssl-views": CHOICE,
        "--ssl-temperature": POSITIVE,
        "--det-image-size": SIDE,
        "--det-epochs": COUNT,
        "--det-batch-size": COUNT,
        "--det-lr": POSITIVE,
        "--det-warmup-iters": CAN_BE_ZERO,
        "--det-warmup-factor": SHARE,
        "--det-clip-grad": POSITIVE,
        "--det-roi-batch-size": COUNT,
        "--workers": CAN_BE_ZERO,
        "--pictures": COUNT,
    },
    "python -m cxr.report": {"folder": ANY_TEXT},
}
COMMANDS = {
    "train_ssl.py": (train_ssl, lambda tmp: ["--output-dir", str(tmp / "o")]),
    "train_det.py": (train_det, lambda tmp: ["--output-dir", str(tmp / "o")]),
    "evaluate.py": (evaluate, lambda tmp: ["--mode", "map", "--eval-dir", str(tmp / "e")]),
    "python -m cxr.prepare": (
        prepare,
        lambda tmp: ["--csv", str(tmp / "t.csv"), "--images", str(tmp), "--out", str(tmp / "o")],
    ),
    "python -m cxr.synthetic": (synthetic, lambda tmp: ["--out", str(tmp / "o")]),
    "python -m cxr.experiment": (experiment, lambda tmp: ["--out", str(tmp / "o")]),
    "python -m cxr.report": (report, lambda tmp: []),
}


def value_flags(parser):
    """The flags of a parser that take a value (switches have nothing to refuse)."""
    return [
        a
        for a in parser._actions
        if a.nargs != 0 and not isinstance(a, argparse.BooleanOptionalAction)
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_table_names_every_flag_that_takes_a_value(command):
    module, _ = COMMANDS[command]
    names = [(a.option_strings or [a.dest])[0] for a in value_flags(module.get_args_parser())]
    assert sorted(names) == sorted(TABLE[command])


CASES = [
    (command, flag, kind)
    for command, table in TABLE.items()
    for flag, kinds in table.items()
    for kind in sorted(kinds)
]


@pytest.mark.parametrize("command, flag, kind", CASES)
def test_a_bad_value_is_refused_by_the_parser_before_any_work(
    command, flag, kind, tmp_path, capsys
):
    module, base = COMMANDS[command]
    argv = base(tmp_path) + [flag, VALUES[kind]]
    with pytest.raises(SystemExit) as exit_code:
        module.main(argv)
    err = capsys.readouterr().err
    assert exit_code.value.code == 2, err
    assert err.count("error:") == 1 and f"argument {flag}" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written


@pytest.mark.parametrize(
    "command, argv",
    [
        ("python -m cxr.prepare", ["--test-fraction", "1"]),
        ("train_det.py", ["--val-fraction", "1"]),
        ("train_det.py", ["--lr-steps", "0.9,0.5"]),
        ("train_det.py", ["--trainable-layers", "6"]),
        ("train_ssl.py", ["--batch-size", "1"]),
        ("train_ssl.py", ["--views", '{"blur_p": "high"}']),
        ("train_ssl.py", ["--views", '{"crop_scale": [0.5, 0.2]}']),
        ("train_ssl.py", ["--image-size", "16"]),
        ("train_ssl.py", ["--experiment-name", "../up"]),
        ("python -m cxr.experiment", ["--train-seeds", "1,1"]),
        ("python -m cxr.experiment", ["--ssl-fractions", "0.5,0.501"]),
        ("python -m cxr.experiment", ["--group-by", "no group"]),
    ],
)
def test_values_wrong_only_for_their_flag_are_refused_too(command, argv, tmp_path, capsys):
    module, base = COMMANDS[command]
    with pytest.raises(SystemExit) as exit_code:
        module.main(base(tmp_path) + argv)
    assert exit_code.value.code == 2 and f"argument {argv[0]}" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize(
    "command, argv",
    [
        ("train_ssl.py", ["--seed", "0", "--warmup-epochs", "0", "--ssl-fraction", "1"]),
        ("train_det.py", ["--warmup-factor", "0.001", "--lr-steps", "0.5", "--eval-every", "0"]),
        ("python -m cxr.experiment", ["--train-seeds", "0,1,2", "--ssl-fractions", "0.1,0.9"]),
    ],
)
def test_good_values_are_accepted(command, argv, tmp_path):
    module, base = COMMANDS[command]
    module.get_args_parser().parse_args(base(tmp_path) + argv)
