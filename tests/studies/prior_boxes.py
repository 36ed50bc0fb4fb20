"""What AP a detector gets without looking at the image: the "prior" baseline.

For each class, the mean box of its training annotations (in fractions of
the image) is predicted on every test image, scored by the class's share of
training images (one box per class and image; different scores per class
do not matter to a per-class AP). Its mAP50 is the level that a trained
detector must clear to have learned anything about where lesions are; the
boxes of large classes at fixed places (cardiomegaly, effusion) score above
zero by location alone. Chance, the same boxes placed uniformly at random,
is printed beside it.

    python tests/studies/prior_boxes.py --data-dir data
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cxr.classes import CLASS_NAMES  # noqa: E402
from cxr.coco_metrics import coco_ground_truth, coco_metrics, competition_metrics  # noqa: E402
from cxr.data import load_coco  # noqa: E402


def prior_predictions(train, test, rng=None):
    """Each class's mean training box on every test image; with rng, the box
    keeps its mean size but is placed uniformly at random (chance)."""
    sizes = {image["id"]: (image["width"], image["height"]) for image in train["images"]}
    boxes, images_with = {}, {}
    for a in train["annotations"]:
        width, height = sizes[a["image_id"]]
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["category_id"], []).append(
            (x / width, y / height, w / width, h / height)
        )
        images_with.setdefault(a["category_id"], set()).add(a["image_id"])
    results = []
    for image in test["images"]:
        for category, fractions in boxes.items():
            x, y, w, h = np.mean(fractions, axis=0)
            if rng is not None:
                x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": [
                        x * image["width"],
                        y * image["height"],
                        w * image["width"],
                        h * image["height"],
                    ],
                    "score": len(images_with[category]) / len(train["images"]),
                }
            )
    return results


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
    results = prior_predictions(train, test)
    metrics = coco_metrics(ground_truth, results)
    print(
        f"prior boxes on {len(test['images'])} test images: mAP {metrics['AP']:.4f}, mAP50 "
        f"{metrics['AP50']:.4f}, AP@0.4 {metrics['AP40']:.4f}, competition mAP@0.4 "
        f"{competition_metrics(test, results)['mAP40']:.4f}"
    )
    for row in metrics["per_class"]:
        if row["gt_boxes"]:
            print(
                f"  {CLASS_NAMES[row['category_id'] - 1]:<20} {row['gt_boxes']:>4} boxes  AP50 "
                f"{row['AP50']:.4f}"
            )
    rng = np.random.default_rng(0)
    chance = [
        coco_metrics(ground_truth, prior_predictions(train, test, rng))
        for _ in range(args.chance_draws)
    ]
    mean_ap, mean_ap50 = (np.mean([m[k] for m in chance]) for k in ("AP", "AP50"))
    print(
        f"chance (the same boxes placed at random, mean of {args.chance_draws} draws): "
        f"mAP {mean_ap:.4f}, mAP50 {mean_ap50:.4f}"
    )


if __name__ == "__main__":
    main()
