"""COCO metrics on hand-made cases, computed by hand with 101-point interpolation."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cxr.data.classes import VINBIGDATA_CLASSES, coco_categories
from cxr.evaluation.coco_metrics import coco_metrics, competition_metrics


def ground_truth(boxes):
    """boxes: (image_id, category_id, [x, y, w, h]) triples on 100 x 100 images."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2)],
        "annotations": [
            {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, (i, c, b) in enumerate(boxes, 1)
        ],
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }
    coco.createIndex()
    return coco


def detection(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


A, B = [10, 10, 40, 40], [50, 50, 40, 30]


def test_perfect_predictions_score_one():
    gt = ground_truth([(1, 1, A), (2, 1, B), (2, 4, A)])
    metrics = coco_metrics(
        gt, [detection(1, 1, A, 0.9), detection(2, 1, B, 0.8), detection(2, 4, A, 0.7)]
    )
    assert (
        metrics["AP"]
        == metrics["AP50"]
        == metrics["AP40"]
        == metrics["AR100"]
        == pytest.approx(1.0)
    )
    by_category = {row["category_id"]: row for row in metrics["per_class"]}
    assert by_category[1]["AP"] == pytest.approx(1.0) and by_category[1]["gt_boxes"] == 2
    assert (
        by_category[2]["AP"] is None and by_category[2]["gt_boxes"] == 0
    )  # no ground truth: undefined


def test_one_missed_box_halves_recall():
    gt = ground_truth([(1, 1, A), (2, 1, B)])
    metrics = coco_metrics(gt, [detection(1, 1, A, 0.9)])
    assert metrics["AR100"] == pytest.approx(0.5)
    assert metrics["AP"] == pytest.approx(
        51 / 101
    )  # precision 1 at the 51 recall points 0, .01, ..., .5


def test_duplicate_prediction_is_a_false_positive():
    # Ranked: A (TP), A again (FP), B (TP) -> precision 1 up to recall .5, then 2/3.
    gt = ground_truth([(1, 1, A), (2, 1, B)])
    metrics = coco_metrics(
        gt, [detection(1, 1, A, 0.9), detection(1, 1, A, 0.8), detection(2, 1, B, 0.7)]
    )
    assert metrics["AP"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_ap_at_iou_04_counts_a_loose_box_that_ap50_rejects():
    loose = [10, 10, 40, 18]  # IoU with A = 18 / 40 = 0.45
    gt = ground_truth([(1, 1, A)])
    metrics = coco_metrics(gt, [detection(1, 1, loose, 0.9)])
    assert metrics["AP40"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(0.0)


def test_no_detections_gives_zero_not_an_error():
    metrics = coco_metrics(ground_truth([(1, 1, A)]), [])
    assert metrics["AP"] == 0.0 and metrics["detections"] == 0
    assert {row["category_id"]: row["AP"] for row in metrics["per_class"]}[1] == 0.0


def test_competition_metric_scores_no_finding_on_normal_films():
    """Image 1 has a lesion, image 2 is normal. A detector that finds the
    lesion and nothing on the normal film is perfect on both classes; a false
    positive on the normal film costs "No finding" (its score 1 - 0.95 ranks
    the normal film below the lesion film) and the lesion class."""
    dataset = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": A, "area": 1600, "iscrowd": 0}
        ],
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }
    perfect = competition_metrics(dataset, [detection(1, 3, A, 0.9)])
    assert perfect["mAP40"] == pytest.approx(1.0)
    assert perfect["per_class"][15] == pytest.approx(1.0) and perfect["per_class"][1] is None
    fooled = competition_metrics(dataset, [detection(1, 3, A, 0.9), detection(2, 3, B, 0.95)])
    # lesion class: FP (0.95) then TP (0.9): precision 1/2 at recall 1 -> VOC AP 0.5.
    # No finding: image 1 scores 0.1, image 2 (the normal one) 0.05: FP then TP -> 0.5.
    assert fooled["per_class"][3] == pytest.approx(0.5) and fooled["per_class"][
        15
    ] == pytest.approx(0.5)
    assert fooled["mAP40"] == pytest.approx(0.5)


def test_without_detections_undefined_metrics_stay_undefined():
    """No box is small (under 32 x 32 px): AP small is undefined with or without
    detections, not 0; the defined ones are 0 without detections."""
    gt = ground_truth([(1, 1, A)])
    found = coco_metrics(gt, [detection(1, 1, A, 0.9)])
    nothing = coco_metrics(gt, [])
    assert found["AP_small"] is None and nothing["AP_small"] is None
    assert nothing["AP"] == nothing["AR100"] == nothing["AP_medium"] == 0.0


def test_competition_matching_is_voc_not_pycocotools():
    """Two overlapping boxes G1 = [0, 0, 10, 10] and G2 = [4, 0, 10, 10] of one class.
    D1 (0.9) = G1 itself: IoU 1 with G1. D2 (0.8) = [1, 0, 10, 10]: IoU 9/11 = 0.82 with
    G1 and 7/13 = 0.54 with G2. VOC 2010 sends D2 to its best box, G1, taken: a false
    positive, so AP = precision 1 up to recall 1/2 = 0.5. pycocotools moves on to G2
    (0.54 > 0.4): a true positive, AP 1."""
    g1, g2, d2 = [0, 0, 10, 10], [4, 0, 10, 10], [1, 0, 10, 10]
    dataset = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
        "annotations": [
            {"id": n, "image_id": 1, "category_id": 2, "bbox": b, "area": 100, "iscrowd": 0}
            for n, b in ((1, g1), (2, g2))
        ],
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }
    results = [detection(1, 2, g1, 0.9), detection(1, 2, d2, 0.8)]
    assert competition_metrics(dataset, results)["per_class"][2] == pytest.approx(0.5)
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
    assert coco_metrics(gt, results)["AP40"] == pytest.approx(1.0)


def test_competition_matching_needs_an_iou_above_04_not_equal():
    """G = [0, 0, 10, 10]; D = [0, 0, 4, 10] overlaps it by 40/100 = IoU 0.4 exactly:
    not above 0.4, a false positive; D' = [0, 0, 5, 10] (IoU 0.5) is a true positive."""
    dataset = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100}
        ],
        "categories": coco_categories(VINBIGDATA_CLASSES),
    }
    exactly = competition_metrics(dataset, [detection(1, 2, [0, 0, 4, 10], 0.9)])
    above = competition_metrics(dataset, [detection(1, 2, [0, 0, 5, 10], 0.9)])
    assert exactly["per_class"][2] == 0.0 and above["per_class"][2] == pytest.approx(1.0)


def test_per_class_ap50_is_pycocotools_at_iou_05():
    """Loose detections whose IoUs lie between 0.5 and 0.6: per-class AP50 must be
    pycocotools' per-category AP with iouThrs [0.5] (not another threshold's)."""
    boxes = [(1, 1, [10, 10, 40, 40]), (2, 1, [20, 20, 40, 40]), (2, 3, [0, 0, 50, 50])]
    gt = ground_truth(boxes)
    results = [
        detection(1, 1, [10, 10, 40, 40 * 0.55 / 0.45], 0.9),  # IoU 0.45 / 0.55 = 0.82
        detection(2, 1, [20, 20, 40, 40 * 0.55], 0.8),  # IoU 0.55
        detection(2, 3, [0, 0, 50, 50 * 0.52], 0.7),  # IoU 0.52
        detection(1, 3, [0, 0, 30, 30], 0.6),  # no box of class 3 on image 1
    ]
    ours = {row["category_id"]: row["AP50"] for row in coco_metrics(gt, results)["per_class"]}
    evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
    evaluator.params.iouThrs = np.array([0.5])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # (recall points, categories)
    for k, category in enumerate(evaluator.params.catIds):
        defined = precision[:, k][precision[:, k] > -1]
        assert ours[category] == (pytest.approx(defined.mean()) if defined.size else None)
    assert ours[1] == pytest.approx(1.0) and 0 < ours[3] < 1


def test_per_class_ap40_counts_boxes_of_every_size_by_hand():
    """A 60 x 60 box found and a 10 x 10 box missed: recall 1/2 at precision 1, so the
    101-point AP at IoU 0.4 is 51/101 over all sizes (and 0 over the small boxes alone)."""
    gt = ground_truth([(1, 1, [10, 10, 60, 60]), (2, 1, [5, 5, 10, 10])])
    (row,) = [r for r in coco_metrics(gt, [detection(1, 1, [10, 10, 60, 60], 0.9)])["per_class"]
              if r["category_id"] == 1]  # fmt: skip
    assert row["AP40"] == pytest.approx(51 / 101)
