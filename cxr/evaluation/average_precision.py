"""Average precision recomputed from pycocotools' per-image matches, for any multiset
of test images (the bootstrap) and with VOC's interpolation (the VinBigData
competition's metric).

pycocotools matches each detection to a ground-truth box per image
(`COCOeval.evaluate`) and then pools the images (`accumulate`). Here the
matches are kept (`match_detections`) and the pooling is done here, so a
resample with repeats is its images' detections taken that many times:
`average_precision(matches, counts)` follows accumulate (101-point 'coco'
interpolation) or VOC 2010 ('voc': the area under the non-increasing
precision-recall curve); with counts of ones `mean_ap` is exactly
pycocotools' AP, but for a category whose detections all share one score
(the location prior's), whose AP is the mean over their orders. `voc_matches` matches as
VOC 2010 does (each detection to its best box, taken or not), for the
competition's metric.
"""

import contextlib
import functools
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cxr.nn.seeds import stream_seed

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


@dataclass
class CategoryMatches:
    category_id: int
    image: np.ndarray  # (N,) position of each detection's image in image_ids
    score: np.ndarray  # (N,)
    true_positive: np.ndarray  # (T, N) bool, per IoU threshold
    ignored: np.ndarray  # (T, N) bool (matched to an ignored box)
    ground_truth: np.ndarray  # (I,) non-ignored ground-truth boxes per image


def detections_of(coco_gt, results):
    """pycocotools' COCO object of a list of COCO results (which may be empty)."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    empty = COCO()
    empty.dataset = {
        "images": coco_gt.dataset["images"],
        "categories": coco_gt.dataset["categories"],
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def match_detections(coco_gt, results, iou_thresholds=COCO_IOU_THRESHOLDS):
    """pycocotools' matches of COCO results against the COCO object coco_gt.

    Returns:
        (image ids, [CategoryMatches] one per category): per detection (the top
        100 per image, as COCO's AP counts them) its image, score and, per IoU
        threshold (T of them), whether it is a true positive or ignored.
    """
    evaluator = COCOeval(coco_gt, detections_of(coco_gt, results), iouType="bbox")
    evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    params = evaluator.params
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    thresholds = len(params.iouThrs)
    categories = []
    for k, category in enumerate(params.catIds):
        # evalImgs is ordered [category][area range][image]; area range 0 is 'all'.
        per_image = evaluator.evalImgs[
            k * num_areas * num_images : k * num_areas * num_images + num_images
        ]
        image, score, true_positive, ignored = [], [], [], []
        ground_truth = np.zeros(num_images, dtype=np.int64)
        for i, record in enumerate(per_image):
            if record is None:
                continue
            kept = slice(0, MAX_DETECTIONS)
            scores = np.asarray(record["dtScores"][kept], dtype=np.float64)
            image.append(np.full(len(scores), i))
            score.append(scores)
            true_positive.append(record["dtMatches"][:, kept] > 0)
            ignored.append(record["dtIgnore"][:, kept].astype(bool))
            ground_truth[i] = int(np.count_nonzero(record["gtIgnore"] == 0))
        categories.append(
            CategoryMatches(
                int(category),
                np.concatenate(image) if image else np.zeros(0, np.int64),
                np.concatenate(score) if score else np.zeros(0),
                np.concatenate(true_positive, 1)
                if true_positive
                else np.zeros((thresholds, 0), bool),
                np.concatenate(ignored, 1) if ignored else np.zeros((thresholds, 0), bool),
                ground_truth,
            )
        )
    return list(params.imgIds), categories


def _iou(box, boxes):
    """(M,) IoU of one xyxy box with (M, 4) xyxy boxes (continuous areas, no +1)."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter)


def _xyxy(bbox):
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def voc_matches(image_ids, ground_truth, detections, *, category_ids, iou_threshold=0.4):
    """[CategoryMatches] (one IoU threshold) by VOC 2010's rule.

    Per category, detections are visited by descending score (equal scores in
    the order listed); each goes to the ground-truth box of its image with
    the highest IoU, and is a true positive if that IoU exceeds iou_threshold
    strictly and the box is not yet taken, else a false positive (pycocotools
    instead moves on to the next-best free box). ground_truth and detections
    are COCO dicts (bbox xywh; detections with a score)."""
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    categories = []
    for category in category_ids:
        boxes = [[] for _ in image_ids]
        for annotation in ground_truth:
            if annotation["category_id"] == category:
                boxes[position[annotation["image_id"]]].append(_xyxy(annotation["bbox"]))
        boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
        taken = [np.zeros(len(b), dtype=bool) for b in boxes]
        mine = [d for d in detections if d["category_id"] == category]
        mine.sort(key=lambda d: -d["score"])  # stable
        image = np.array([position[d["image_id"]] for d in mine], dtype=np.int64)
        true_positive = np.zeros(len(mine), dtype=bool)
        for k, (detection, i) in enumerate(zip(mine, image)):
            if len(boxes[i]):
                overlaps = _iou(_xyxy(detection["bbox"]), boxes[i])
                best = int(np.argmax(overlaps))
                if overlaps[best] > iou_threshold and not taken[i][best]:
                    taken[i][best] = true_positive[k] = True
        categories.append(
            CategoryMatches(
                category,
                image,
                np.array([d["score"] for d in mine], dtype=np.float64),
                true_positive[None, :],
                np.zeros((1, len(mine)), dtype=bool),
                np.array([len(b) for b in boxes], dtype=np.int64),
            )
        )
    return categories


def _interpolated(precision, recall, interpolation):
    """AP of one precision-recall curve (detections in descending score order)."""
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    if interpolation == "coco":
        at = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
        reached = at < len(envelope)
        return float(np.sum(envelope[at[reached]]) / len(COCO_RECALL_POINTS))
    if interpolation == "voc":
        gained = np.diff(np.concatenate([[0.0], recall]))
        return float(np.sum(gained * envelope))
    raise ValueError(f"interpolation must be 'coco' or 'voc', got {interpolation!r}")


def average_precision(matches, counts=None, interpolation="coco"):
    """AP of one category over a multiset of the test images.

    Args:
        matches: the category's CategoryMatches.
        counts: (I,) how often each image is taken (default once each).
        interpolation: 'coco' (101 recall points, as pycocotools' accumulate:
            detections in image order, stably sorted by descending score) or
            'voc' (VOC 2010's area under the non-increasing precision).
    Returns:
        (T,) AP per IoU threshold, or None when those images hold no box of
        the category. A category whose detections all share one score (the
        location prior, chance) has no order to rank them by, and pycocotools
        would take the images' numbering: its AP is the mean over random orders
        (`_one_score_ap`), which depends on no numbering.
    """
    counts = np.ones(len(matches.ground_truth), np.int64) if counts is None else np.asarray(counts)
    boxes = int(np.dot(counts, matches.ground_truth))
    if boxes == 0:
        return None
    taken = np.repeat(np.arange(len(matches.score)), counts[matches.image])
    order = taken[np.argsort(-matches.score[taken], kind="mergesort")]
    true_positive, ignored = matches.true_positive[:, order], matches.ignored[:, order]
    score = matches.score[order]
    if len(score) > 1 and score[0] == score[-1] and not ignored.any():
        hits = true_positive.sum(1)  # (T,) per IoU threshold
        return np.array([_one_score_ap(len(score), int(k), boxes, interpolation) for k in hits])
    return _ap_of_orders(true_positive[:, None], ignored[:, None], boxes, interpolation)[:, 0]


@functools.lru_cache(maxsize=None)
def _one_score_ap(detections, hits, boxes, interpolation, orders=1000):
    """The mean AP over `orders` random orders of `detections` of one score, `hits` of
    them true positives, with `boxes` ground-truth boxes (a fixed stream, cached)."""
    rng = np.random.default_rng(stream_seed("tie-orders", seed=0, item=detections))
    labels = np.zeros((orders, detections), dtype=bool)
    labels[:, :hits] = True
    labels = np.take_along_axis(labels, rng.random((orders, detections)).argsort(1), axis=1)
    return float(
        _ap_of_orders(labels[None], np.zeros_like(labels)[None], boxes, interpolation).mean()
    )


def _ap_of_orders(true_positive, ignored, boxes, interpolation):
    """(T, R) AP of (T, R, n) true positives and ignored detections in R orders."""
    counted = ~ignored
    true_positives = np.cumsum(true_positive & counted, axis=2)
    false_positives = np.cumsum(~true_positive & counted, axis=2)
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    recall = true_positives / boxes
    result = np.zeros(precision.shape[:2])
    for index in np.ndindex(*result.shape):
        result[index] = _interpolated(precision[index], recall[index], interpolation)
    return result


def mean_ap(categories, counts=None, interpolation="coco", thresholds=slice(None)):
    """Mean over the categories with boxes of their AP averaged over the IoU
    thresholds selected (all, or e.g. [0] for AP50); None if no category has boxes."""
    values = [
        ap[thresholds].mean()
        for ap in (average_precision(c, counts, interpolation) for c in categories)
        if ap is not None
    ]
    return float(np.mean(values)) if values else None
