"""Read access to what the stages of one experiment wrote, and the comparisons.

An experiment (`cxr.experiment`) trains arms (ssl, random, and pretrained
with --pretrained-init) per SSL percentage and training seed, in
runs/<RunName>/. `ExperimentFolder` finds each run's metrics, probe, image
lists and test predictions, scores the location prior and chance on the same
test images (`cxr.evaluation.baselines`), and compares two arms, or an arm and the
prior, by intervals over the training seeds and the test images
(`cxr.evaluation.intervals`).
"""

from functools import cached_property
from pathlib import Path

import numpy as np

from cxr.data.classes import dataset_classes
from cxr.data.image_lists import read_image_list
from cxr.evaluation.average_precision import average_precision, match_detections
from cxr.evaluation.baselines import chance, location_prior
from cxr.evaluation.coco_metrics import coco_ground_truth, tie_averaged_metrics
from cxr.evaluation.intervals import paired_intervals
from cxr.nn.seeds import stream_seed
from cxr.run import layout
from cxr.run.errors import UserError
from cxr.run.layout import RunName
from cxr.run.progress import progress
from cxr.run.reading import json_object, read_json

BOOTSTRAP_REPLICATES = 1000  # test-image resamples: the image part of the variance
LEVEL = 0.9
CHANCE_DRAWS = 20


def read_output(path, default=None):
    """A JSON file an experiment's stage wrote (`default` where there is none)."""
    return read_json(path, what="a file a stage of the experiment wrote", default=default)


RECORD_KEYS = ("config", "stages")
CONFIG_KEYS = ("preset", "settings", "ssl_fractions", "seed", "train_seeds", "pretrained_init")


def read_experiment_record(out):
    """experiment.json of an experiment folder, checked to be one `cxr.experiment` wrote."""
    path, what = Path(out) / "experiment.json", "the record python -m cxr.experiment writes"
    record = json_object(read_json(path, what=what), source=path, what=what, keys=RECORD_KEYS)
    config = json_object(record["config"], source=f"{path}, 'config'", what=what, keys=CONFIG_KEYS)
    json_object(record["stages"], source=f"{path}, 'stages'", what=what)
    json_object(config["settings"], source=f"{path}, 'settings'", what=what)
    for key in ("ssl_fractions", "train_seeds"):
        values = config[key]
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise UserError(f"{path}: expected {what}; {key!r} is not a list of numbers")
    return record


def map_summary(categories, counts):
    """mAP@[.5:.95] and mAP50 of one run on the test images taken counts[i] times."""
    per_class = [ap for ap in (average_precision(c, counts) for c in categories) if ap is not None]
    if not per_class:
        return {"AP": None, "AP50": None}
    return {
        "AP": float(np.mean([ap.mean() for ap in per_class])),
        "AP50": float(np.mean([ap[0] for ap in per_class])),
    }


class ExperimentFolder:
    def __init__(self, out):
        self.out = Path(out)
        self.record = read_experiment_record(self.out)
        self.config = self.record["config"]
        self.fractions = self.config["ssl_fractions"]
        self.seeds = self.config["train_seeds"]
        self.arms = ("ssl", "random") + (("pretrained",) if self.config["pretrained_init"] else ())
        self.main = layout.percent(self.fractions[0])

    def run(self, run):
        return self.out / "runs" / str(run)

    def runs(self, arm, percent):
        """The runs of one arm (or, percent None, the probe's backbones), one per seed."""
        return [RunName(arm, percent, seed) for seed in self.seeds]

    def metrics(self, run):
        return read_output(self.run(run) / layout.EVAL / layout.METRICS)

    def labeled_images(self, run):
        images = read_image_list(self.run(run) / layout.LABELED_IMAGES)
        return len(images.names) if images else None

    def probe(self, run):
        """The probe of an SSL run's backbone, of a random backbone (random-sS) or of the
        --pretrained-init weights (pretrained-sS)."""
        if run.init == "ssl":
            name = "ssl"
        elif run.init == "random":
            name = f"random-seed{run.seed}"
        else:
            name = Path(self.config["pretrained_init"]).stem
        return read_output(self.run(run) / layout.EVAL / layout.probe_file(name))

    @cached_property
    def test_set(self):
        """(COCO dict, pycocotools COCO) of the test split."""
        dataset = read_output(self.out / "data" / "test_annotations.json")
        return dataset, coco_ground_truth(dataset)

    @cached_property
    def classes(self):
        return dataset_classes(self.test_set[0], self.out / "data" / "test_annotations.json")

    def matches(self, run):
        """Per-category matches of a run's test predictions (`cxr.evaluation.average_precision`)."""
        results = read_output(self.run(run) / layout.EVAL / layout.TEST_PREDICTIONS)
        return match_detections(self.test_set[1], results)[1]

    @cached_property
    def prior_results(self):
        train = read_output(self.out / "data" / "train_annotations.json")
        return location_prior(train, self.test_set[0])

    @cached_property
    def prior(self):
        """The location prior's metrics on the test images, its tied scores averaged
        over their orders."""
        return tie_averaged_metrics(self.test_set[1], self.prior_results)

    @cached_property
    def chance(self):
        """Mean mAP and mAP50 of CHANCE_DRAWS random placements of the prior's boxes."""
        train = read_output(self.out / "data" / "train_annotations.json")
        rng = np.random.default_rng(stream_seed("chance", seed=0))
        draws = [
            tie_averaged_metrics(self.test_set[1], chance(train, self.test_set[0], rng))
            for _ in range(CHANCE_DRAWS)
        ]
        return {key: float(np.mean([d[key] or 0.0 for d in draws])) for key in ("AP", "AP50")}

    def complete(self, arm, percent):
        return all(self.metrics(run) for run in self.runs(arm, percent))

    def comparison(self, first, second, percent):
        """Intervals of arm `first` against arm `second` ('prior': the location
        prior) at one SSL percentage, or None if a run is missing."""
        if not self.complete(first, percent) or (
            second != "prior" and not self.complete(second, percent)
        ):
            return None
        ones = [self.matches(run) for run in self.runs(first, percent)]
        if second == "prior":
            prior = match_detections(self.test_set[1], self.prior_results)[1]
            others = [prior] * len(ones)
        else:
            others = [self.matches(run) for run in self.runs(second, percent)]
        return paired_intervals(
            ones,
            others,
            num_images=len(ones[0][0].ground_truth),
            statistic=map_summary,
            replicates=BOOTSTRAP_REPLICATES,
            level=LEVEL,
            track=lambda replicates: progress(replicates, "bootstrap replicates"),
        )
