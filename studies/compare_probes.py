"""Is an SSL backbone's linear probe above random backbones', beyond noise?

Fits the probe of `evaluate.py --mode probe` (pooled features, standardized,
one-vs-rest logistic regression C=1, macro-AUROC on the test split) for each
--backbones file and for --random-seeds random backbones of the same arch,
all on one prepared dataset, and prints each SSL backbone's macro-AUROC
minus the mean of the random ones with a paired bootstrap interval: the
test images are resampled (--bootstrap times) and the difference recomputed
on each resample, so the interval shows how much the test set alone can
move it. A last table gives each class's AUROC for the random backbones
(mean) and each SSL backbone's difference from it: where the features gain
and where they lose. Use a probe set larger than the experiment's own
(hundreds of test images) and disjoint from the pretraining images, e.g.
another seed:

    python -m cxr.synthetic --out /tmp/probe_vin --images 6000 --size 128 --seed 1 \
        --test-images 0
    python -m cxr.prepare --csv /tmp/probe_vin/train.csv --images /tmp/probe_vin/train \
        --out /tmp/probe_data
    python studies/compare_probes.py --data-dir /tmp/probe_data \
        --backbones RUN/pretrain/pretrained-backbone.pth
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.classes import dataset_classes  # noqa: E402
from cxr.data.prepared import load_coco  # noqa: E402
from cxr.evaluation.probe import macro_auroc, probe_test_scores  # noqa: E402
from cxr.nn.resnet import headless_resnet  # noqa: E402
from cxr.run.model_files import pretrained_trunk  # noqa: E402
from evaluate import split_features  # noqa: E402


def probe_scores(trunk, data_dir, image_size):
    """(test scores, test labels) of the probe fitted on the train split, as
    evaluate.py --mode probe."""
    options = argparse.Namespace(batch_size=64, workers=0)
    (train_x, train_y), (test_x, test_y) = (
        split_features(trunk, data_dir, split, size=image_size, args=options, device="cpu")
        for split in ("train", "test")
    )
    return probe_test_scores(train_x, train_y, test_x), test_y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="prepared data (train and test splits)")
    parser.add_argument(
        "--backbones", nargs="+", required=True, help="pretrained-backbone.pth files"
    )
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=300)
    args = parser.parse_args()
    train_file = Path(args.data_dir) / "train_annotations.json"
    classes = dataset_classes(load_coco(train_file), train_file)

    random_scores, random_macros, random_per_class = [], [], []
    for seed in range(args.random_seeds):
        torch.manual_seed(seed)
        scores, labels = probe_scores(headless_resnet(args.arch), args.data_dir, args.image_size)
        random_scores.append(scores)
        macro, per_class = macro_auroc(scores, labels)
        random_macros.append(macro)
        random_per_class.append(per_class)
        print(f"random backbone, seed {seed}: macro-AUROC {macro:.3f}", flush=True)
    random_macros = torch.tensor(random_macros)
    print(
        f"random backbones: mean {random_macros.mean():.3f}, sd {random_macros.std():.3f}, "
        f"max {random_macros.max():.3f}"
    )

    generator = torch.Generator().manual_seed(0)
    resamples = [
        torch.randint(0, len(labels), (len(labels),), generator=generator)
        for _ in range(args.bootstrap)
    ]
    random_mean_per_resample = [
        sum(macro_auroc(r[rows], labels[rows])[0] for r in random_scores) / len(random_scores)
        for rows in resamples
    ]

    ssl_per_class = []
    for number, path in enumerate(args.backbones, 1):
        trunk, _ = pretrained_trunk(args.arch, path)
        scores, _ = probe_scores(trunk, args.data_dir, args.image_size)
        macro, per_class = macro_auroc(scores, labels)
        ssl_per_class.append(per_class)
        spread = torch.tensor(
            [
                macro_auroc(scores[rows], labels[rows])[0] - random_mean
                for rows, random_mean in zip(resamples, random_mean_per_resample)
            ]
        )
        print(
            f"ssl{number} {path}: macro-AUROC {macro:.3f}, "
            f"minus mean random {macro - float(random_macros.mean()):+.3f}, "
            f"bootstrap 90% interval [{spread.quantile(0.05):+.3f}, {spread.quantile(0.95):+.3f}]",
            flush=True,
        )
    print_per_class(classes, labels, random_per_class, ssl_per_class)


def print_per_class(classes, labels, random_per_class, ssl_per_class):
    """Per class: test positives, mean random AUROC, and each SSL backbone's difference from it."""
    numbers = " ".join(f"{'ssl' + str(i):>6}" for i in range(1, len(ssl_per_class) + 1))
    print(f"{'class':<20} {'test+':>5} {'random':>6}  {numbers}")
    for k, name in enumerate(classes):
        if random_per_class[0][k] is None:
            print(f"{name:<20} {int(labels[:, k].sum()):>5}    n/a")
            continue
        random_mean = sum(per_class[k] for per_class in random_per_class) / len(random_per_class)
        print(
            f"{name:<20} {int(labels[:, k].sum()):>5} {random_mean:6.3f}  "
            + " ".join(f"{per_class[k] - random_mean:+6.3f}" for per_class in ssl_per_class)
        )


if __name__ == "__main__":
    main()
