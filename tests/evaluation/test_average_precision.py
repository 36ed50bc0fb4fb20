"""AP recomputed from pycocotools' matches equals pycocotools' own numbers, on
every image once, on a subset, and on repeated images; VOC's all-point AP by hand."""

import itertools

import numpy as np
import pytest
from pycocotools.coco import COCO

from cxr.data.classes import VINBIGDATA_CLASSES, coco_categories
from cxr.evaluation.average_precision import (
    CategoryMatches,
    average_precision,
    match_detections,
    mean_ap,
    voc_matches,
)
from cxr.evaluation.coco_metrics import coco_metrics


def random_case(seed, num_images=12):
    """Ground truth and noisy, partly wrong detections on 100 x 100 images."""
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for image in range(1, num_images + 1):
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 40, 2)
            category = int(rng.integers(1, 5))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            for _ in range(rng.integers(0, 3)):
                jitter = rng.normal(0, 4, 4)
                results.append(
                    {
                        "image_id": image,
                        "category_id": category if rng.random() < 0.8 else 5,
                        "bbox": [
                            x + jitter[0],
                            y + jitter[1],
                            max(w + jitter[2], 1),
                            max(h + jitter[3], 1),
                        ],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(rng.integers(0, 3)):
            results.append(
                {
                    "image_id": image,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": list(rng.uniform(0, 60, 2)) + list(rng.uniform(5, 30, 2)),
                    "score": float(rng.random()),
                }
            )
    images = [
        {"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"}
        for i in range(1, num_images + 1)
    ]
    return {
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }, results


def coco(dataset):
    ground_truth = COCO()
    ground_truth.dataset = dataset
    ground_truth.createIndex()
    return ground_truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pycocotools_on_all_images_and_on_a_subset(seed):
    dataset, results = random_case(seed)
    gt = coco(dataset)
    image_ids, categories = match_detections(gt, results)
    metrics = coco_metrics(gt, results)
    assert mean_ap(categories) == pytest.approx(metrics["AP"], abs=1e-12)
    assert mean_ap(categories, thresholds=[0]) == pytest.approx(metrics["AP50"], abs=1e-12)
    for matches, row in zip(categories, metrics["per_class"]):
        ap = average_precision(matches)
        assert (ap is None) == (row["AP"] is None)
        if ap is not None:
            assert ap.mean() == pytest.approx(row["AP"], abs=1e-12)

    keep = set(image_ids[::3])  # a resample with counts 0 and 1
    subset = {
        **dataset,
        "images": [i for i in dataset["images"] if i["id"] in keep],
        "annotations": [a for a in dataset["annotations"] if a["image_id"] in keep],
    }
    on_subset = coco_metrics(coco(subset), [r for r in results if r["image_id"] in keep])
    counts = np.array([image in keep for image in image_ids], dtype=np.int64)
    assert mean_ap(categories, counts) == pytest.approx(on_subset["AP"], abs=1e-12)


def test_every_image_twice_leaves_ap_unchanged():
    dataset, results = random_case(5)
    gt = coco(dataset)
    _, categories = match_detections(gt, results)
    twice = 2 * np.ones(len(dataset["images"]), dtype=np.int64)
    assert mean_ap(categories, twice) == pytest.approx(mean_ap(categories), abs=1e-12)
    assert mean_ap(categories, twice, "voc") == pytest.approx(
        mean_ap(categories, interpolation="voc"), abs=1e-12
    )


def test_voc_all_point_and_coco_101_point_by_hand():
    # Two boxes; ranked detections: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    A, B = [10, 10, 40, 40], [50, 50, 40, 30]
    dataset = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": A, "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": B, "area": 1200, "iscrowd": 0},
        ],
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": A, "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 60, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": B, "score": 0.7},
    ]
    gt = coco(dataset)
    _, categories = match_detections(gt, results, iou_thresholds=[0.4])
    assert average_precision(categories[0], interpolation="voc")[0] == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3
    )
    assert average_precision(categories[0])[0] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(categories[1]) is None  # no boxes of category 2
    _, nothing = match_detections(gt, [])
    assert average_precision(nothing[0]).tolist() == [0.0] * 10


def coco_ap_of_order(labels, boxes):
    """COCO's 101-point AP of detections in this order (True: a true positive), by hand."""
    tp = np.cumsum(labels)
    precision, recall = tp / np.arange(1, len(labels) + 1), tp / boxes
    points = []
    for r in np.linspace(0, 1, 101):
        reached = [p for p, rc in zip(precision, recall) if rc >= r - 1e-12]
        points.append(max(reached) if reached else 0.0)
    return float(np.mean(points))


def test_tied_scores_average_over_their_orders():
    """Six detections of one score, three true positives, four boxes: the expected AP
    over the 20 equally likely places of the true positives, enumerated."""
    exact = np.mean(
        [
            coco_ap_of_order(np.isin(np.arange(6), places), 4)
            for places in itertools.combinations(range(6), 3)
        ]
    )
    matches = CategoryMatches(
        category_id=1,
        image=np.arange(6),
        score=np.full(6, 0.5),
        true_positive=np.array([[1, 0, 1, 0, 0, 1]], dtype=bool),
        ignored=np.zeros((1, 6), dtype=bool),
        ground_truth=np.array([1, 0, 1, 1, 0, 1]),
    )
    default = average_precision(matches)[0]
    assert default == pytest.approx(exact, abs=0.005)
    reordered = CategoryMatches(
        1,
        np.arange(6),
        np.full(6, 0.5),
        matches.true_positive[:, ::-1],
        matches.ignored,
        matches.ground_truth[::-1],
    )
    assert average_precision(reordered)[0] == default  # the images' order cannot matter
    best_first = coco_ap_of_order(np.array([1, 1, 1, 0, 0, 0], dtype=bool), 4)
    assert best_first > exact > coco_ap_of_order(np.array([0, 0, 0, 1, 1, 1], dtype=bool), 4)


def test_ties_among_other_scores_keep_pycocotools_order():
    """Detections of several scores, some tied: ranked as pycocotools ranks them (by
    descending score, ties in image order), so a detector's AP is pycocotools' own."""
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.2])
    matches = CategoryMatches(
        category_id=1,
        image=np.arange(6),
        score=score,
        true_positive=np.array([[True, False, True, False, False, True]]),
        ignored=np.zeros((1, 6), dtype=bool),
        ground_truth=np.array([1, 1, 1, 1, 1, 0]),
    )
    in_image_order = np.array([True, False, True, False, False, True])
    assert average_precision(matches)[0] == pytest.approx(coco_ap_of_order(in_image_order, 5))


def test_voc_matching_iou_by_hand_away_from_the_origin():
    """A box shifted by 2 px on a 10 x 10 box: IoU 80 / 120 = 0.667, above 0.4; by 7 px:
    30 / 170 = 0.176, below it."""
    truth = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10]}]
    for shift, hit in ((2, True), (7, False)):
        found = [{"image_id": 1, "category_id": 1, "bbox": [10 + shift, 10, 10, 10], "score": 1}]
        (matches,) = voc_matches([1], truth, found, category_ids=[1])
        assert matches.true_positive.tolist() == [[hit]]
