"""The report's verdict, from the interval and the number of training seeds, and its mAP chart."""

import json

from cxr.evaluation.intervals import Interval
from cxr.pipeline.report_markdown import MIN_SEEDS, deciding_command, map_history, verdict
from cxr.pipeline.results import ExperimentFolder
from cxr.run import layout
from cxr.run.layout import RunName


def test_verdict_follows_the_interval_not_the_point_estimate():
    assert verdict(Interval(0.02, 0.005, 0.04, 2.0), seeds=3) == "helped"
    assert verdict(Interval(-0.02, -0.04, -0.001, 2.0), seeds=3) == "hurt"
    assert verdict(Interval(0.03, -0.001, 0.06, 2.0), seeds=3) == "not shown"  # ahead, not shown
    assert verdict(Interval(0.0, 0.0, 0.0, 2.0), seeds=5) == "not shown"


def test_fewer_than_three_training_seeds_never_decide():
    """An interval over test images alone says nothing about another training run."""
    assert MIN_SEEDS == 3
    for seeds in (1, 2):
        assert verdict(Interval(0.05, 0.04, 0.06, 2.0), seeds=seeds) == "not shown"
        assert verdict(Interval(-0.05, -0.06, -0.04, 2.0), seeds=seeds) == "not shown"


def test_the_deciding_command_continues_the_experiment_with_three_seeds():
    command = "python -m cxr.experiment --out x --replace --train-seeds 4 --det-epochs 2"
    assert deciding_command(command, seeds=[4]) == (
        "python -m cxr.experiment --out x --det-epochs 2 --resume --train-seeds 4,0,1"
    )
    command = "python -m cxr.experiment --train-seeds=0,1 --resume"
    assert deciding_command(command, seeds=[0, 1]).endswith("--resume --train-seeds 0,1,2")


def test_the_map_chart_ends_at_the_last_epoch_with_the_map_stage_score(tmp_path):
    config = {"ssl_fractions": [0.6], "train_seeds": [0], "pretrained_init": None, "seed": 0}
    config.update(preset="cpu", settings={"det_epochs": 3})
    (tmp_path / "experiment.json").write_text(json.dumps({"config": config, "stages": {}}))
    folder = ExperimentFolder(tmp_path)
    charted, unevaluated, unscored = RunName("ssl", 60, 0), RunName("random", 60, 0), "x"
    for run, history, final in (
        (charted, [{"epoch": 1, "AP": 0.1, "AP50": 0.2}], {"AP": 0.3, "AP50": 0.4}),
        (unevaluated, None, {"AP": 0.5, "AP50": 0.6}),  # --eval-every 0: the mAP stage alone
        (unscored, [{"epoch": 1, "AP": 0.1, "AP50": 0.2}], None),  # its mAP stage not yet run
    ):
        (folder.run(run) / layout.EVAL).mkdir(parents=True)
        if history is not None:
            (folder.run(run) / layout.EVAL_HISTORY).write_text(json.dumps(history))
        if final is not None:
            (folder.run(run) / layout.EVAL / layout.METRICS).write_text(json.dumps(final))
    assert map_history(folder, charted) == [
        {"epoch": 1, "AP": 0.1, "AP50": 0.2},
        {"epoch": 3, "AP": 0.3, "AP50": 0.4},
    ]
    assert map_history(folder, unevaluated) == [{"epoch": 3, "AP": 0.5, "AP50": 0.6}]
    assert map_history(folder, unscored) == [{"epoch": 1, "AP": 0.1, "AP50": 0.2}]
