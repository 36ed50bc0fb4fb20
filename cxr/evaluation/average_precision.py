"""Average precision recomputed from pycocotools' per-image matches, for any multiset
of test images (the bootstrap) and with VOC's interpolation (the VinBigData
competition's metric).

pycocotools matches each detection to a ground-truth box per image
(`COCOeval.evaluate`) and then pools the images (`accumulate`). Here the
matches are kept (`match_detections`) and the pooling is done here, so a
resample with repeats is its images' detections taken that many times:
`average_precision(matches, counts)` follows accumulate (101-point 'coco'
interpolation) or VOC 2010 ('voc': the area under the non-increasing
precision-recall curve); with counts of ones and no tied scores `mean_ap` is
exactly pycocotools' AP. Tied scores, which pycocotools orders by image
number, are averaged over their orders instead. `voc_matches` matches as
VOC 2010 does (each detection to its best box, taken or not), for the
competition's metric.
"""

import contextlib
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


def average_precision(matches, counts=None, interpolation="coco", *, tie_orders=100):
    """AP of one category over a multiset of the test images.

    Args:
        matches: the category's CategoryMatches.
        counts: (I,) how often each image is taken (default once each).
        interpolation: 'coco' (101 recall points, as pycocotools' accumulate) or
            'voc' (VOC 2010's area under the non-increasing precision).
        tie_orders: detections of equal score have no order of their own (the
            location prior gives every box of a class one score): their AP is the
            mean over this many (>= 1) random orders of each tie, drawn from a fixed
            stream over the detections sorted by what they are (never by image), so
            it does not depend on how the images are numbered. Without ties the one
            order is pycocotools' (descending score).
    Returns:
        (T,) AP per IoU threshold, or None when those images hold no box of
        the category.
    """
    counts = np.ones(len(matches.ground_truth), np.int64) if counts is None else np.asarray(counts)
    boxes = int(np.dot(counts, matches.ground_truth))
    if boxes == 0:
        return None
    taken = np.repeat(np.arange(len(matches.score)), counts[matches.image])
    taken = taken[np.argsort(-matches.score[taken], kind="stable")]  # by descending score
    score = matches.score[taken]
    labels = np.concatenate([matches.true_positive[:, taken], matches.ignored[:, taken]])
    orders = [slice(None)]
    if len(score) > 1 and np.any(score[1:] == score[:-1]):  # ties: sorted by what each is
        canonical = np.lexsort((*labels[::-1], -score))
        score, labels = score[canonical], labels[:, canonical]
        orders = tie_order_draws(score, tie_orders)
    true_positive, ignored = np.split(labels, 2)
    return np.mean(
        [_ap_of_order(true_positive[:, o], ignored[:, o], boxes, interpolation) for o in orders],
        axis=0,
    )


def tie_order_draws(score, count):
    """`count` orders of detections sorted by descending score: each keeps the score
    order and shuffles every group of equal scores (a fixed stream, so repeatable)."""
    group = np.concatenate([[0], np.cumsum(score[1:] != score[:-1])])  # (n,) tie group
    rng = np.random.default_rng(stream_seed("tie-orders", seed=0))
    return [np.argsort(group + rng.random(len(score)), kind="stable") for _ in range(count)]


def _ap_of_order(true_positive, ignored, boxes, interpolation):
    """(T,) AP of detections in this order: (T, n) true positives and ignored ones."""
    counted = ~ignored
    true_positives = np.cumsum(true_positive & counted, axis=1)
    false_positives = np.cumsum(~true_positive & counted, axis=1)
    result = []
    for tp, fp in zip(true_positives, false_positives):
        precision = tp / (tp + fp + np.spacing(1))
        result.append(_interpolated(precision, tp / boxes, interpolation))
    return np.asarray(result)


def mean_ap(categories, counts=None, interpolation="coco", thresholds=slice(None)):
    """Mean over the categories with boxes of their AP averaged over the IoU
    thresholds selected (all, or e.g. [0] for AP50); None if no category has boxes."""
    values = [
        ap[thresholds].mean()
        for ap in (average_precision(c, counts, interpolation) for c in categories)
        if ap is not None
    ]
    return float(np.mean(values)) if values else None
