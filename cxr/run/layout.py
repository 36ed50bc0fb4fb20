"""The names of what cxr writes: the files of a run folder and the runs of an experiment.

The training scripts, evaluate.py, the experiment and the report all find
files through these names, so a name is defined once.

    <output-dir>/<experiment>/pretrain/   train_ssl.py: PRETRAIN_OUTPUTS
    <output-dir>/<experiment>/            train_det.py: DETECTOR_OUTPUTS
    <output-dir>/<experiment>/eval/       evaluate.py: metrics, pictures, probes

An experiment (`cxr.experiment`) names its runs `RunName`: ssl60-s0 is the
SSL arm at 60% SSL images and training seed 0, random60-s0 its random arm,
random100-s0 the all-labels baseline, random-s0 the probe's random backbone.
"""

import re
from dataclasses import dataclass
from typing import Optional

PRETRAIN = "pretrain"
EVAL = "eval"
ARGS = "args.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pth"
SSL_IMAGES = "ssl_images.json"
BACKBONE = "pretrained-backbone.pth"
BACKBONE_META = "pretrained-backbone.json"
LABELED_IMAGES = "labeled_images.json"
EVAL_HISTORY = "eval_history.json"
DETECTOR = "fasterrcnn_final.pth"
DETECTOR_META = "fasterrcnn_final.json"
METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
TEST_PREDICTIONS = "test_predictions.json"
PICTURES = "visualize"
CONTACT_SHEET = "contact_sheet.png"

# What each script writes in its run folder: --replace deletes these and nothing else.
PRETRAIN_OUTPUTS = (ARGS, LOG, SSL_IMAGES, CHECKPOINT, BACKBONE, BACKBONE_META)
DETECTOR_OUTPUTS = (ARGS, LOG, LABELED_IMAGES, CHECKPOINT, EVAL_HISTORY, DETECTOR, DETECTOR_META)


def probe_file(backbone_name):
    """evaluate.py --mode probe's result for a backbone named 'ssl', 'random-seedS', ..."""
    return f"probe-{backbone_name}.json"


@dataclass(frozen=True)
class RunName:
    """One run of an experiment: its init ('ssl', 'random' or 'pretrained'), the SSL
    percentage it belongs to (None for the probe's random backbone, 100 for
    the all-labels baseline) and its training seed."""

    init: str
    percent: Optional[int]
    seed: int

    def __str__(self):
        return f"{self.init}{'' if self.percent is None else self.percent}-s{self.seed}"

    @classmethod
    def parse(cls, text):
        match = re.fullmatch(r"(ssl|random|pretrained)(\d*)-s(\d+)", text)
        if match is None:
            raise ValueError(f"{text!r} is not an experiment's run name")
        init, digits, seed = match.groups()
        return cls(init, int(digits) if digits else None, int(seed))


def percent(fraction):
    """A fraction as the whole percent that names its runs (0.6 -> 60: ssl60-s0)."""
    return round(fraction * 100)
