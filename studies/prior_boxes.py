"""What AP a detector gets without looking at the image (`cxr.evaluation.baselines`):
the location prior, per class, and chance beside it.

    python studies/prior_boxes.py --data-dir data
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.classes import dataset_classes  # noqa: E402
from cxr.data.prepared import load_coco  # noqa: E402
from cxr.evaluation.baselines import chance, location_prior  # noqa: E402
from cxr.evaluation.coco_metrics import (  # noqa: E402
    coco_ground_truth,
    coco_metrics,
    competition_metrics,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", required=True, help="a folder written by python -m cxr.prepare"
    )
    parser.add_argument(
        "--chance-draws", type=int, default=20, help="random placements averaged for chance"
    )
    args = parser.parse_args()
    train = load_coco(Path(args.data_dir) / "train_annotations.json")
    test = load_coco(Path(args.data_dir) / "test_annotations.json")
    ground_truth = coco_ground_truth(test)
    results = location_prior(train, test)
    metrics = coco_metrics(ground_truth, results)
    print(
        f"prior boxes on {len(test['images'])} test images: mAP {metrics['AP']:.4f}, mAP50 "
        f"{metrics['AP50']:.4f}, AP@0.4 {metrics['AP40']:.4f}, competition mAP@0.4 "
        f"{competition_metrics(test, results)['mAP40']:.4f}"
    )
    classes = dataset_classes(test, Path(args.data_dir) / "test_annotations.json")
    for row in metrics["per_class"]:
        if row["gt_boxes"]:
            name = classes[row["category_id"] - 1]
            print(f"  {name:<20} {row['gt_boxes']:>4} boxes  AP50 {row['AP50']:.4f}")
    rng = np.random.default_rng(0)
    draws = [coco_metrics(ground_truth, chance(train, test, rng)) for _ in range(args.chance_draws)]
    mean_ap, mean_ap50 = (np.mean([m[k] for m in draws]) for k in ("AP", "AP50"))
    print(
        f"chance (the same boxes placed at random, mean of {args.chance_draws} draws): "
        f"mAP {mean_ap:.4f}, mAP50 {mean_ap50:.4f}"
    )


if __name__ == "__main__":
    main()
