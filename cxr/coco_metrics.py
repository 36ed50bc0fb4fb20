"""COCO evaluation of the detector with pycocotools.

- `predict` runs batched inference over dataset indices (one exact shard per
  rank under DDP, `cxr.samplers.inference_shard`), returning COCO result dicts
  (image_id, category_id, bbox xywh, score).
- `gather_to_main` collects every rank's results on rank 0, so each test
  image is counted exactly once (no padded duplicates).
- `coco_metrics` gives pycocotools' 12 summary numbers (AP@[.5:.95], AP50,
  AP75, AP/AR by size, AR@1/10/100), AP at IoU 0.4 (the VinBigData
  competition's threshold, here with COCO's 101-point interpolated precision,
  all areas, 100 detections), and per class AP, AP50, AP@0.4 and the number
  of ground-truth boxes.
- `competition_metrics` gives the VinBigData competition's metric: mean AP at
  IoU 0.4 over the 14 lesions and "No finding", with VOC 2010's all-point
  interpolation (`cxr.average_precision`; matching as pycocotools does it).
  As in the competition, an image without boxes carries one "No finding"
  box (0, 0, 1, 1), and every image gets one "No finding" prediction there,
  scored 1 - its highest lesion score (1 without detections): the detector's
  own confidence that the film is normal. "No finding" counts only when the
  test split holds normal images (prepare --normal-in-test).
"""

import contextlib
import io

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .average_precision import average_precision, match_detections
from .classes import NO_FINDING_NAME, NUM_CLASSES, coco_categories
from .distributed import world_size

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


def detection_collate(batch):
    return tuple(zip(*batch))


@torch.no_grad()
def predict(model, dataset, indices, device, batch_size=8, workers=0):
    """COCO results for dataset[i], i in indices; the dataset yields (image, target)."""
    model.eval()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, list(indices)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=detection_collate,
    )
    results = []
    for images, targets in loader:
        outputs = model([image.to(device).expand(3, -1, -1) for image in images])
        for output, target in zip(outputs, targets):
            boxes = output["boxes"].cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            for box, score, label in zip(
                xywh.tolist(), output["scores"].tolist(), output["labels"].tolist()
            ):
                results.append(
                    {
                        "image_id": int(target["image_id"]),
                        "category_id": int(label),
                        "bbox": box,
                        "score": score,
                    }
                )
    return results


def gather_to_main(results):
    """Every rank's list, concatenated in rank order, on rank 0 (None elsewhere)."""
    if world_size() == 1:
        return results
    gathered = [None] * world_size() if dist.get_rank() == 0 else None
    dist.gather_object(results, gathered, dst=0)
    return [r for part in gathered for r in part] if gathered is not None else None


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
    """Summary and per-class metrics of `results` against the COCO object coco_gt."""
    category_ids = sorted(coco_gt.getCatIds())
    gt_counts = {c: len(coco_gt.getAnnIds(catIds=[c], iscrowd=None)) for c in category_ids}
    if not results:
        zero = {c: (0.0 if gt_counts[c] else None) for c in category_ids}
        return {
            **{name: 0.0 for name in STAT_NAMES},
            "AP40": 0.0,
            "detections": 0,
            "per_class": [
                {
                    "category_id": c,
                    "AP": zero[c],
                    "AP50": zero[c],
                    "AP40": zero[c],
                    "gt_boxes": gt_counts[c],
                }
                for c in category_ids
            ],
        }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    standard = _run_cocoeval(coco_gt, coco_dt)
    at_04 = _run_cocoeval(coco_gt, coco_dt, iou_thresholds=[0.4])
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]
    precision, precision_04 = standard.eval["precision"], at_04.eval["precision"]
    per_class = []
    for k, category in enumerate(standard.params.catIds):
        per_class.append(
            {
                "category_id": int(category),
                "AP": _mean_precision(precision[:, :, k, 0, -1]),
                "AP50": _mean_precision(precision[0, :, k, 0, -1]),
                "AP40": _mean_precision(precision_04[0, :, k, 0, -1]),
                "gt_boxes": gt_counts[category],
            }
        )
    return {
        **{
            name: (float(value) if value > -1 else None)
            for name, value in zip(STAT_NAMES, standard.stats)
        },
        "AP40": _mean_precision(precision_04[0, :, :, 0, -1]),
        "detections": len(results),
        "per_class": per_class,
    }


def competition_metrics(dataset, results):
    """The competition's mAP@0.4 (15 classes, VOC interpolation) of COCO results
    on a COCO dict; {"mAP40": value, "per_class": {category id: AP or None}}."""
    no_finding = NUM_CLASSES + 1
    boxed = {a["image_id"] for a in dataset["annotations"]}
    first_id = 1 + max((a["id"] for a in dataset["annotations"]), default=0)  # pycocotools: ids > 0
    normal_boxes = [
        {
            "id": first_id + n,
            "image_id": image["id"],
            "category_id": no_finding,
            "bbox": [0, 0, 1, 1],
            "area": 1,
            "iscrowd": 0,
        }
        for n, image in enumerate(i for i in dataset["images"] if i["id"] not in boxed)
    ]
    ground_truth = coco_ground_truth(
        {
            **dataset,
            "annotations": dataset["annotations"] + normal_boxes,
            "categories": coco_categories() + [{"id": no_finding, "name": NO_FINDING_NAME}],
        }
    )
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
    _, categories = match_detections(
        ground_truth, results + normal_predictions, iou_thresholds=[0.4]
    )
    per_class = {}
    for matches in categories:
        ap = average_precision(matches, interpolation="voc")
        per_class[matches.category_id] = None if ap is None else float(ap[0])
    defined = [ap for ap in per_class.values() if ap is not None]
    return {"mAP40": float(np.mean(defined)) if defined else None, "per_class": per_class}
