"""The location prior and chance, on a case computed by hand."""

import numpy as np
import pytest

from cxr.evaluation.baselines import chance, class_boxes, location_prior
from cxr.evaluation.coco_metrics import coco_ground_truth, coco_metrics, tie_averaged_metrics


def box(identity, image, category, bbox):
    x, y, w, h = bbox
    return {
        "id": identity,
        "image_id": image,
        "category_id": category,
        "bbox": bbox,
        "area": w * h,
        "iscrowd": 0,
    }


CATEGORIES = [{"id": 1, "name": "heart"}, {"id": 2, "name": "spot"}]
TRAIN = {
    "images": [
        {"id": 1, "width": 100, "height": 100},
        {"id": 2, "width": 200, "height": 100},
        {"id": 3, "width": 100, "height": 100},
    ],
    "annotations": [
        box(1, 1, 1, [10, 10, 20, 20]),  # relative (0.1, 0.1, 0.2, 0.2)
        box(2, 2, 1, [40, 20, 40, 20]),  # relative (0.2, 0.2, 0.2, 0.2)
        box(3, 3, 1, [60, 30, 20, 20]),  # relative (0.6, 0.3, 0.2, 0.2): mean x 0.3, median 0.2
        box(4, 1, 2, [50, 50, 30, 10]),  # relative (0.5, 0.5, 0.3, 0.1): wider than high
    ],
    "categories": CATEGORIES,
}
TEST = {
    "images": [{"id": 7, "width": 100, "height": 200}],
    "annotations": [box(1, 7, 1, [30, 40, 20, 40]), box(2, 7, 2, [0, 0, 10, 20])],
    "categories": CATEGORIES,
}


def test_the_prior_is_each_class_mean_relative_box_scored_by_its_share_of_images():
    boxes = class_boxes(TRAIN)
    assert boxes[1][0] == pytest.approx([0.3, 0.2, 0.2, 0.2]) and boxes[1][1] == 1
    assert boxes[2][0] == pytest.approx([0.5, 0.5, 0.3, 0.1]) and boxes[2][1] == 1 / 3
    predictions = {r["category_id"]: r for r in location_prior(TRAIN, TEST)}
    assert predictions[1]["bbox"] == pytest.approx([30, 40, 20, 40])
    assert predictions[2]["bbox"] == pytest.approx([50, 100, 30, 20])
    assert (predictions[1]["score"], predictions[2]["score"]) == (1, 1 / 3)
    metrics = coco_metrics(coco_ground_truth(TEST), location_prior(TRAIN, TEST))
    per_class = {row["category_id"]: row["AP50"] for row in metrics["per_class"]}
    assert per_class == {1: pytest.approx(1.0), 2: pytest.approx(0.0)}
    assert metrics["AP50"] == pytest.approx(0.5)


def test_chance_places_the_prior_boxes_uniformly_inside_the_image():
    rng = np.random.default_rng(0)
    corners = {1: [], 2: []}
    for _ in range(2000):
        for r in chance(TRAIN, TEST, rng):
            x, y, w, h = r["bbox"]
            assert (w, h) == pytest.approx([20, 40] if r["category_id"] == 1 else [30, 20])
            corners[r["category_id"]].append((x, y))
    for category, (free_x, free_y) in ((1, (80, 160)), (2, (70, 180))):
        x, y = np.array(corners[category]).T
        assert x.min() >= 0 and x.max() <= free_x and y.min() >= 0 and y.max() <= free_y
        # uniform on [0, free]: mean free / 2, standard error free / sqrt(12 * 2000)
        for values, free in ((x, free_x), (y, free_y)):
            assert values.mean() == pytest.approx(free / 2, abs=4 * free / np.sqrt(12 * 2000))
            assert values.std() == pytest.approx(free / np.sqrt(12), rel=0.05)
    ground_truth = coco_ground_truth(TEST)
    prior = coco_metrics(ground_truth, location_prior(TRAIN, TEST))["AP50"]
    assert coco_metrics(ground_truth, chance(TRAIN, TEST, rng))["AP50"] < prior


def renumbered(dataset, order):
    """The COCO dict with its images listed in `order` and numbered 1, 2, ... in it."""
    new_id = {dataset["images"][i]["id"]: n + 1 for n, i in enumerate(order)}
    return {
        **dataset,
        "images": [
            {**dataset["images"][i], "id": new_id[dataset["images"][i]["id"]]} for i in order
        ],
        "annotations": [{**a, "image_id": new_id[a["image_id"]]} for a in dataset["annotations"]],
    }


def test_the_priors_ap_does_not_depend_on_how_the_test_images_are_numbered():
    """Twelve test images, the prior's box hitting on four: pycocotools ranks the tied
    boxes by image number, so its AP moves with the numbering; the tie-averaged AP
    does not move at all."""
    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(12)]
    hits = {2, 5, 9, 11}
    annotations = [
        box(i + 1, i + 1, 1, [30, 30, 20, 20] if i in hits else [70, 70, 20, 20]) for i in range(12)
    ]
    test = {"images": images, "annotations": annotations, "categories": CATEGORIES[:1]}
    train = {**TRAIN, "annotations": [box(1, 1, 1, [30, 30, 20, 20])], "categories": CATEGORIES[:1]}
    ours, theirs = [], []
    for order in (range(12), [11, 0, 5, 2, 9, 3, 4, 1, 6, 7, 8, 10], range(11, -1, -1)):
        dataset = renumbered(test, list(order))
        ground_truth, prior = coco_ground_truth(dataset), location_prior(train, dataset)
        ours.append(tie_averaged_metrics(ground_truth, prior)["AP50"])
        theirs.append(coco_metrics(ground_truth, prior)["AP50"])
    assert ours[0] == ours[1] == ours[2] and 0 < ours[0] < 1
    assert len(set(theirs)) > 1  # what the tie-averaged AP repairs
