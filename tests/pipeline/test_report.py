"""The report's verdict: from the interval and the number of training seeds."""

from cxr.evaluation.intervals import Interval
from cxr.pipeline.report_markdown import MIN_SEEDS, deciding_command, verdict


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
