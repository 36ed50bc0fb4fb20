"""COCO evaluation of the detector with pycocotools.

- `coco_metrics` gives pycocotools' 12 summary numbers (AP@[.5:.95], AP50,
  AP75, AP/AR by size, AR@1/10/100), AP at IoU 0.4 (the VinBigData
  competition's threshold, here with COCO's 101-point interpolated precision,
  all areas, 100 detections), and per class AP, AP50, AP@0.4 and the number
  of ground-truth boxes.
- `competition_metrics` gives the VinBigData competition's metric: mean AP at
  IoU 0.4 over the lesions and "No finding", with VOC 2010's matching and
  all-point interpolation (`cxr.evaluation.average_precision.voc_matches`).
  As in the competition, an image without boxes carries one "No finding"
  box (0, 0, 1, 1), and every image gets one "No finding" prediction there,
  scored 1 - its highest lesion score (1 without detections): the detector's
  own confidence that the film is normal. "No finding" counts only when the
  test split holds normal images (prepare --normal-in-test).
"""

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cxr.evaluation.average_precision import (
    average_precision,
    detections_of,
    match_detections,
    voc_matches,
)

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def format_metric(value, digits=4):
    """A metric for tables: 'n/a' where it is undefined (None)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def coco_ground_truth(dataset):
    """A pycocotools COCO object from a COCO dict, without its progress prints."""
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


def _run_cocoeval(coco_gt, coco_dt, iou_thresholds=None):
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if iou_thresholds is not None:
        evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        if iou_thresholds is None:
            evaluator.summarize()
    return evaluator


def _mean_precision(precision):
    """Mean of the defined (> -1) entries; None where pycocotools has none
    (a class without ground-truth boxes)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else None


def coco_metrics(coco_gt, results):
    """Summary and per-class metrics of `results` against the COCO object coco_gt.

    A metric without ground truth to score (a class without boxes, a size
    range without boxes) is None, with or without detections; without
    detections every defined AP and AR is 0."""
    category_ids = sorted(coco_gt.getCatIds())
    gt_counts = {c: len(coco_gt.getAnnIds(catIds=[c], iscrowd=None)) for c in category_ids}
    coco_dt = detections_of(coco_gt, results)
    standard = _run_cocoeval(coco_gt, coco_dt)
    at_04 = _run_cocoeval(coco_gt, coco_dt, iou_thresholds=[0.4])
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]
    precision, precision_04 = standard.eval["precision"], at_04.eval["precision"]
    per_class = [
        {
            "category_id": int(category),
            "AP": _mean_precision(precision[:, :, k, 0, -1]),
            "AP50": _mean_precision(precision[0, :, k, 0, -1]),
            "AP40": _mean_precision(precision_04[0, :, k, 0, -1]),
            "gt_boxes": gt_counts[category],
        }
        for k, category in enumerate(standard.params.catIds)
    ]
    return {
        **{
            name: (float(value) if value > -1 else None)
            for name, value in zip(STAT_NAMES, standard.stats)
        },
        "AP40": _mean_precision(precision_04[0, :, :, 0, -1]),
        "detections": len(results),
        "per_class": per_class,
    }


def tie_averaged_metrics(coco_gt, results):
    """AP, AP50 and AP40 (summary and per class) of results with one score per class,
    as the location prior's and chance's: each the mean over the orders of the tied
    detections (`cxr.evaluation.average_precision`), which pycocotools would take from
    the images' numbering; AR100 (no order) pycocotools'."""
    recall = coco_metrics(coco_gt, results)
    coco_thresholds = match_detections(coco_gt, results)[1]
    at_04 = match_detections(coco_gt, results, iou_thresholds=[0.4])[1]
    per_class = []
    for row, matches, matches_04 in zip(recall["per_class"], coco_thresholds, at_04):
        ap, ap_04 = average_precision(matches), average_precision(matches_04)
        per_class.append(
            {
                **row,
                "AP": None if ap is None else float(ap.mean()),
                "AP50": None if ap is None else float(ap[0]),
                "AP40": None if ap_04 is None else float(ap_04[0]),
            }
        )

    def mean_of(key):
        values = [row[key] for row in per_class if row[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "AP": mean_of("AP"),
        "AP50": mean_of("AP50"),
        "AP40": mean_of("AP40"),
        "AR100": recall["AR100"],
        "detections": len(results),
        "per_class": per_class,
    }


def competition_metrics(dataset, results):
    """The competition's mAP@0.4 of COCO results on a COCO dict: VOC 2010's matching
    and all-point interpolation over the dataset's classes and "No finding"
    (category K + 1); {"mAP40": value, "per_class": {category id: AP or None}}."""
    no_finding = len(dataset["categories"]) + 1
    boxed = {a["image_id"] for a in dataset["annotations"]}
    normal_boxes = [
        {"image_id": image["id"], "category_id": no_finding, "bbox": [0, 0, 1, 1]}
        for image in dataset["images"]
        if image["id"] not in boxed
    ]
    highest = {}
    for r in results:
        highest[r["image_id"]] = max(highest.get(r["image_id"], 0.0), r["score"])
    normal_predictions = [
        {
            "image_id": image["id"],
            "category_id": no_finding,
            "bbox": [0, 0, 1, 1],
            "score": 1.0 - highest.get(image["id"], 0.0),
        }
        for image in dataset["images"]
    ]
    categories = voc_matches(
        [image["id"] for image in dataset["images"]],
        dataset["annotations"] + normal_boxes,
        results + normal_predictions,
        category_ids=range(1, no_finding + 1),
    )
    per_class = {}
    for matches in categories:
        ap = average_precision(matches, interpolation="voc")
        per_class[matches.category_id] = None if ap is None else float(ap[0])
    defined = [ap for ap in per_class.values() if ap is not None]
    return {"mAP40": float(np.mean(defined)) if defined else None, "per_class": per_class}
