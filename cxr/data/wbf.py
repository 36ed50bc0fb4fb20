"""Weighted Boxes Fusion (Solovyev, Wang & Gabruseva, 2021, arXiv:1910.13302), per label:

1. Boxes scoring below skip_box_thr are skipped; reversed corners are swapped,
   coordinates clipped to [0, 1], zero-area boxes dropped (counted, not silent).
2. Boxes are visited by descending weighted score (score x the model's
   weight); equal scores the box listed last first, as ensemble-boxes' sort
   visits them (`visit_order`; prepare gives every reader's box score 1, so
   this decides which reader's box seeds each cluster).
3. A box joins the cluster whose CURRENT fused box (the score-weighted mean
   of its members) has the highest IoU with it, the earliest cluster on equal
   IoU, if that IoU exceeds iou_thr; otherwise it starts a new cluster.
4. Each cluster's confidence per conf_type, as ensemble-boxes 1.0.9 defines it.

`weighted_boxes_fusion` takes ensemble-boxes 1.0.9's arguments (its options
by keyword) and returns its results, in float64 (docs/design.md says where
they can differ); `fuse_box_groups` fuses many groups (one per image and
class in prepare) with the same loop.
"""

import warnings
from dataclasses import dataclass

import numpy as np

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass
class CleaningReport:
    """How many boxes the input checks changed or removed."""

    below_threshold: int = 0
    swapped: int = 0
    clipped: int = 0
    zero_area: int = 0


@dataclass
class GroupFusion:
    """Clusters found by `fuse_box_groups`, ordered by group, then creation.

    boxes: (C, 4) fused xyxy in [0, 1]; groups: (C,) group id of each cluster;
    sizes: (C,) how many boxes were fused into it; mean_scores: (C,) the mean
    member score; report: what the input checks did.
    """

    boxes: np.ndarray
    groups: np.ndarray
    sizes: np.ndarray
    mean_scores: np.ndarray
    report: CleaningReport


def clean_boxes(boxes, scores, skip_box_thr):
    """Apply the reference's input checks to (N, 4) boxes and (N,) scores.

    Returns the cleaned float64 boxes, a boolean mask of rows kept, and a
    CleaningReport. Rows below skip_box_thr are neither counted nor checked
    further, as in the reference.
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    report = CleaningReport()
    keep = scores >= skip_box_thr
    report.below_threshold = int((~keep).sum())

    x_reversed = boxes[:, 2] < boxes[:, 0]
    y_reversed = boxes[:, 3] < boxes[:, 1]
    report.swapped = int((keep & (x_reversed | y_reversed)).sum())
    boxes[x_reversed] = boxes[x_reversed][:, [2, 1, 0, 3]]
    boxes[y_reversed] = boxes[y_reversed][:, [0, 3, 2, 1]]

    outside = (boxes < 0) | (boxes > 1)
    report.clipped = int((keep & outside.any(axis=1)).sum())
    np.clip(boxes, 0.0, 1.0, out=boxes)

    zero_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) == 0.0
    report.zero_area = int((keep & zero_area).sum())
    keep &= ~zero_area
    return boxes, keep, report


def box_iou(a, b):
    """Intersection over union of two xyxy boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def visit_order(scores):
    """Step 2's order: descending score, and among equal scores the box listed last
    first (ensemble-boxes' sort: a stable ascending one, reversed)."""
    return sorted(range(len(scores)), key=lambda i: scores[i])[::-1]


def cluster_boxes(boxes, scores, iou_thr):
    """Steps 2 and 3 of the module docstring for one label's boxes.

    Args:
        boxes: xyxy boxes in [0, 1] (N of them, as lists or tuples of 4 floats);
            scores: their N weighted scores.
        iou_thr: a box joins a cluster only if its IoU with the cluster's fused
            box exceeds this.
    Returns:
        (members, fused): per cluster in order of creation, the indices of its
        boxes in visit order, and its fused box (a tuple of 4 floats).
    """
    members, fused, weighted_sums, score_sums = [], [], [], []
    for i in visit_order(scores):
        box, score = boxes[i], scores[i]
        best, best_iou = None, iou_thr
        for k, cluster_box in enumerate(fused):  # the first of equal IoUs wins
            overlap = box_iou(cluster_box, box)
            if overlap > best_iou:
                best, best_iou = k, overlap
        if best is None:  # a new cluster: the box itself
            members.append([i])
            fused.append(tuple(box))
            weighted_sums.append([score * c for c in box])
            score_sums.append(score)
        else:
            members[best].append(i)
            weighted_sums[best] = [t + score * c for t, c in zip(weighted_sums[best], box)]
            score_sums[best] += score
            fused[best] = tuple(t / score_sums[best] for t in weighted_sums[best])
    return members, fused


def fuse_box_groups(boxes, scores, groups, *, iou_thr=0.55, skip_box_thr=0.0):
    """Fuse many independent groups of boxes (e.g. one per image and class).

    boxes: (N, 4) xyxy in [0, 1]; scores: (N,); groups: (N,) integer group ids.
    Each group is fused exactly as one `weighted_boxes_fusion` call with that
    group's boxes, in the order listed, as one model of weight 1. Returns a
    GroupFusion.
    """
    boxes, keep, report = clean_boxes(boxes, scores, skip_box_thr)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)[keep]
    groups = np.asarray(groups).reshape(-1)[keep]
    by_group = np.argsort(groups, kind="stable")
    group_ids, starts = np.unique(groups[by_group], return_index=True)
    sorted_boxes, sorted_scores = boxes[keep][by_group].tolist(), scores[by_group].tolist()
    bounds = [*starts.tolist(), len(by_group)]
    fused_boxes, cluster_groups, sizes, mean_scores = [], [], [], []
    for group, start, stop in zip(group_ids.tolist(), bounds, bounds[1:]):
        group_scores = sorted_scores[start:stop]
        members, fused = cluster_boxes(sorted_boxes[start:stop], group_scores, iou_thr)
        for indices, box in zip(members, fused):
            fused_boxes.append(box)
            cluster_groups.append(group)
            sizes.append(len(indices))
            mean_scores.append(sum(group_scores[i] for i in indices) / len(indices))
    return GroupFusion(
        np.array(fused_boxes, dtype=np.float64).reshape(-1, 4),
        np.array(cluster_groups, dtype=groups.dtype),
        np.array(sizes, dtype=np.int64),
        np.array(mean_scores, dtype=np.float64),
        report,
    )


def _validate(boxes_list, scores_list, labels_list, weights, conf_type):
    if conf_type not in CONF_TYPES:
        raise ValueError(
            f"unknown conf_type {conf_type!r}; expected one of {', '.join(CONF_TYPES)}"
        )
    if not len(boxes_list) == len(scores_list) == len(labels_list):
        raise ValueError(
            f"boxes_list, scores_list and labels_list must have one entry per model; "
            f"got {len(boxes_list)}, {len(scores_list)} and {len(labels_list)}"
        )
    for model, (its_boxes, its_scores, its_labels) in enumerate(
        zip(boxes_list, scores_list, labels_list)
    ):
        if not len(its_boxes) == len(its_scores) == len(its_labels):
            raise ValueError(
                f"model {model}: {len(its_boxes)} boxes, {len(its_scores)} scores and "
                f"{len(its_labels)} labels; they must have the same length"
            )
    if weights is not None and len(weights) != len(boxes_list):
        raise ValueError(
            f"weights has {len(weights)} entries but there are {len(boxes_list)} models"
        )


def cluster_confidence(member_scores, member_models, weights, *, conf_type, allows_overflow):
    """Step 4 of the module docstring for one cluster: its members' weighted
    scores and model indices, the models' weights."""
    n = len(member_scores)
    mean = sum(member_scores) / n
    if conf_type == "max":
        return max(member_scores) / weights.max()
    if conf_type == "avg":
        return mean * (n if allows_overflow else min(len(weights), n)) / weights.sum()
    member_weight = sum(weights[m] for m in member_models)
    present = sorted(set(member_models))
    if conf_type == "box_and_model_avg":
        return mean * n / member_weight * weights[present].sum() / weights.sum()
    absent = np.delete(weights, present).sum()
    return mean * n / (member_weight + absent)


def _flatten(boxes_list, scores_list, labels_list):
    """Every model's boxes (N, 4), scores (N,), labels (N,) and the model of each row."""
    counts = [len(s) for s in scores_list]
    model_of_row = np.repeat(np.arange(len(counts)), counts)
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_list]
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores_list]
    labels = [np.asarray(m).reshape(-1) for m in labels_list]
    if not counts or sum(counts) == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0), model_of_row
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels), model_of_row


def weighted_boxes_fusion(
    boxes_list,
    scores_list,
    labels_list,
    *,
    weights=None,
    iou_thr=0.55,
    skip_box_thr=0.0,
    conf_type="avg",
    allows_overflow=False,
):
    """Fuse the boxes of several models; ensemble_boxes' function, its options given
    by keyword.

    Args:
        boxes_list: per model, (n_m, 4) xyxy normalized to [0, 1].
        scores_list, labels_list: per model, (n_m,).
        weights: per model (default 1); iou_thr, skip_box_thr, conf_type,
            allows_overflow: as in ensemble-boxes 1.0.9 (module docstring).
    Returns:
        (boxes (N, 4), scores (N,), labels (N,)) float64 arrays by descending
        score, equal scores the later-found first (ensemble-boxes' order).
    """
    _validate(boxes_list, scores_list, labels_list, weights, conf_type)
    weights = np.ones(len(boxes_list)) if weights is None else np.asarray(weights, dtype=np.float64)
    boxes, scores, labels, model_of_row = _flatten(boxes_list, scores_list, labels_list)
    boxes, keep, report = clean_boxes(boxes, scores, skip_box_thr)
    if report.swapped or report.clipped or report.zero_area:
        warnings.warn(
            f"weighted_boxes_fusion: {report.swapped} boxes with reversed corners swapped, "
            f"{report.clipped} clipped to [0, 1], {report.zero_area} zero-area boxes dropped",
            stacklevel=2,
        )
    if not keep.any():
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,))
    boxes, labels, model_of_row = boxes[keep], labels[keep], model_of_row[keep]
    weighted_scores = scores[keep] * weights[model_of_row]

    results = []  # (confidence, fused box, label), labels in order of first appearance
    for label in dict.fromkeys(labels.tolist()):
        rows = np.flatnonzero(labels == label)
        label_scores = weighted_scores[rows].tolist()
        members, fused = cluster_boxes(boxes[rows].tolist(), label_scores, iou_thr)
        for indices, box in zip(members, fused):
            confidence = cluster_confidence(
                [label_scores[i] for i in indices],
                model_of_row[rows[indices]].tolist(),
                weights,
                conf_type=conf_type,
                allows_overflow=allows_overflow,
            )
            results.append((confidence, box, label))
    results = sorted(results, key=lambda result: result[0])[::-1]  # as visit_order sorts
    return (
        np.array([box for _, box, _ in results], dtype=np.float64),
        np.array([confidence for confidence, _, _ in results], dtype=np.float64),
        np.array([label for _, _, label in results], dtype=np.float64),
    )
