"""--preset on train_ssl.py and train_det.py: the experiment's values under the scripts'
names, paper by default, and a flag on the command line wins wherever it stands."""

import pytest
from conftest import trunk_file

import evaluate
import train_det
import train_ssl
from cxr.pipeline.presets import PRESETS, SCRIPT_FLAGS

SCRIPTS = {"train_ssl.py": train_ssl, "train_det.py": train_det}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_each_flag_a_preset_sets_has_the_experiments_value(script, preset):
    argv = ["--preset", preset] if preset == "cpu" else []  # paper: the default
    args = SCRIPTS[script].get_args_parser().parse_args(argv)
    for setting, dest in SCRIPT_FLAGS[script].items():
        assert getattr(args, dest) == getattr(PRESETS[preset], setting), (setting, dest)
    assert args.preset == preset


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_flag_given_wins_over_the_preset_before_or_after_it(script):
    parser = SCRIPTS[script].get_args_parser
    for argv in (["--epochs", "3", "--preset", "cpu"], ["--preset=cpu", "--epochs", "3"]):
        args = parser().parse_args(argv)
        assert args.epochs == 3 and args.image_size == 128
    assert parser().parse_args(["--image-size", "96"]).image_size == 96
    assert parser().parse_args([]).image_size == 512


def test_the_help_says_both_values_and_a_wrong_preset_is_refused(capsys):
    help_text = " ".join(train_ssl.get_args_parser().format_help().split())
    assert "side of the views in px [cpu: 128, paper: 512]" in help_text
    with pytest.raises(SystemExit) as exit_code:
        train_det.get_args_parser().parse_args(["--preset", "gpu"])
    assert exit_code.value.code == 2
    assert "argument --preset: invalid choice: 'gpu'" in capsys.readouterr().err


def test_the_detector_backbone_is_the_init_files_and_the_presets_only_for_random(tmp_path):
    for preset, arch in (("cpu", "resnet18"), ("paper", "resnet50")):
        args = train_det.get_args_parser().parse_args(["--preset", preset, "--init", "random"])
        assert train_det.settle_defaults(args, {}).arch == arch
    path, _ = trunk_file(tmp_path)  # resnet18 weights
    for preset in ("cpu", "paper"):
        args = train_det.get_args_parser().parse_args(["--preset", preset, "--init", str(path)])
        assert train_det.settle_defaults(args, {}).arch == "resnet18"
        args = train_det.get_args_parser().parse_args(["--preset", preset])  # --init ssl
        assert train_det.settle_defaults(args, {"arch": "resnet34"}).arch == "resnet34"


@pytest.mark.parametrize("data_format", ["vinbigdata", "nih", "coco", None])
def test_the_output_folder_is_named_for_the_data(tmp_path, data_format):
    if data_format:
        (tmp_path / "prepare_summary.json").write_text(f'{{"format": "{data_format}"}}')
    expected = {"nih": "nih_output", "coco": "coco_output"}.get(data_format, "vinbig_output")
    for script, more in ((train_ssl, []), (train_det, []), (evaluate, ["--mode", "map"])):
        args = script.get_args_parser().parse_args(["--data-dir", str(tmp_path), *more])
        assert args.output_dir == expected
        given = ["--data-dir", str(tmp_path), "--output-dir", "mine", *more]
        assert script.get_args_parser().parse_args(given).output_dir == "mine"
