"""Weighted Boxes Fusion (Solovyev, Wang & Gabruseva, 2021, arXiv:1910.13302).

`weighted_boxes_fusion` has the signature, inputs and outputs of the function
of that name in the ensemble-boxes package, version 1.0.9, and reproduces its
semantics exactly, so a user can swap one for the other:

1. Boxes with score < skip_box_thr are skipped. Reversed corners are swapped,
   coordinates clipped to [0, 1], and zero-area boxes dropped. Each of these is
   reported by one warning per call with counts (the reference warns per box
   and prints-and-exits on bad arguments; we raise ValueError instead).
2. Per label, boxes are visited in descending score * model_weight, in the
   order `np.argsort(score * weight)[::-1]` gives over the label's boxes listed
   model by model: the same call the reference makes, so ties are broken
   identically. For small groups numpy's sort is stable, so equal scores are
   visited last-listed first.
3. A box joins the cluster whose CURRENT fused box has the highest IoU with it,
   the earliest-created cluster on ties, if that IoU is strictly greater than
   iou_thr; otherwise it starts a new cluster. A cluster's fused box is the
   (score * weight)-weighted mean of its members, re-computed after each
   insertion and, as in the reference, accumulated and stored in float32
   (a one-member cluster keeps its box in float64).
4. Cluster scores per conf_type, rescaled as the reference does: 'avg' by
   min(len(weights), n) / sum(weights) (n / sum(weights) with allows_overflow),
   'max' by 1 / max(weights), 'box_and_model_avg' and 'absent_model_aware_avg'
   by their model-aware averages. All labels' clusters, sorted by descending
   score, are returned.

Unlike the reference, the clustering is batched: step j processes the j-th box
of every group at once with vectorized IoU, so fusing a whole dataset (one
group per image and class, `fuse_box_groups`) costs as many numpy passes as the
largest group has boxes, not one Python iteration per box.
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


def _visit_order(weighted_scores, group_codes):
    """Row indices grouped by code (ascending), within a group in the order the
    reference visits them: `argsort(...)[::-1]` of the group's rows as listed.

    numpy's default sort is not stable (it dispatches to SIMD kernels), so the
    order of ties depends on the exact call. Row-wise argsort of a 2-D array
    runs the same 1-D kernel per row, so all groups of one size are sorted in
    one call and every group gets exactly the order the reference would give.
    """
    by_group = np.argsort(group_codes, kind="stable")
    _, starts, sizes = np.unique(group_codes[by_group], return_index=True, return_counts=True)
    order = np.empty_like(by_group)
    for size in np.unique(sizes):
        positions = starts[sizes == size, None] + np.arange(size)
        members = by_group[positions]
        ranks = np.argsort(weighted_scores[members], axis=1)[:, ::-1]
        order[positions] = np.take_along_axis(members, ranks, axis=1)
    return order


def _pairwise_iou(clusters, box):
    """IoU of (A, K, 4) cluster boxes with (A, 4) boxes, with the reference's
    exact floating-point expression (so threshold ties resolve identically)."""
    box = box[:, None, :]
    x_a = np.maximum(clusters[..., 0], box[..., 0])
    y_a = np.maximum(clusters[..., 1], box[..., 1])
    x_b = np.minimum(clusters[..., 2], box[..., 2])
    y_b = np.minimum(clusters[..., 3], box[..., 3])
    inter = np.maximum(x_b - x_a, 0) * np.maximum(y_b - y_a, 0)
    area_a = (clusters[..., 2] - clusters[..., 0]) * (clusters[..., 3] - clusters[..., 1])
    area_b = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


def _cluster(boxes, weighted_scores, group_codes, iou_thr):
    """Greedy WBF clustering of every group at once.

    Rows are visited per group in `_visit_order`. Returns (visit_order,
    cluster_of_row, cluster_boxes, cluster_groups, conf_sums) where clusters
    are numbered by group code, then creation order, and conf_sums is the
    float64 sum of the members' weighted scores accumulated in visit order.
    """
    order = _visit_order(weighted_scores, group_codes)
    codes_in_order = group_codes[order]
    group_ids, starts, sizes = np.unique(codes_in_order, return_index=True, return_counts=True)
    num_groups, longest = len(group_ids), int(sizes.max())

    # Process the longest groups first so that the groups still active at step
    # j are always a prefix [0, active) of the slot arrays.
    slot_of_group = np.argsort(-sizes, kind="stable")
    slot_sizes = sizes[slot_of_group]
    active_at_step = [int((slot_sizes > j).sum()) for j in range(longest)]
    slot_rows = np.full((num_groups, longest), -1)
    for j, active in enumerate(active_at_step):
        slot_rows[:active, j] = order[starts[slot_of_group[:active]] + j]

    fused = np.zeros((num_groups, longest, 4))  # box used for matching
    accumulated = np.zeros((num_groups, longest, 4), np.float32)
    conf = np.zeros((num_groups, longest))
    num_clusters = np.zeros(num_groups, dtype=np.int64)
    cluster_slot = np.empty(len(boxes), dtype=np.int64)  # k within its group

    for j, active in enumerate(active_at_step):
        rows = slot_rows[:active, j]
        box, score = boxes[rows], weighted_scores[rows]
        slots = np.arange(active)
        if j == 0:
            join = np.zeros(active, dtype=bool)
            best = np.zeros(active, dtype=np.int64)
        else:
            iou = _pairwise_iou(fused[:active, :j], box)
            iou[np.arange(j)[None, :] >= num_clusters[:active, None]] = -1
            best = iou.argmax(axis=1)
            join = iou[slots, best] > iou_thr

        g, k = slots[join], best[join]
        contribution = score[join, None] * box[join]
        accumulated[g, k] = (accumulated[g, k].astype(np.float64) + contribution).astype(np.float32)
        conf[g, k] += score[join]
        fused[g, k] = (accumulated[g, k].astype(np.float64) / conf[g, k, None]).astype(np.float32)

        g = slots[~join]
        k = num_clusters[g]
        fused[g, k] = box[~join]
        accumulated[g, k] = (score[~join, None] * box[~join]).astype(np.float32)
        conf[g, k] = score[~join]
        num_clusters[g] += 1
        best[~join] = k
        cluster_slot[rows] = best

    # Renumber (slot, k) as a dense cluster id ordered by group code, then k.
    clusters_per_group = np.empty(num_groups, dtype=np.int64)
    clusters_per_group[slot_of_group] = num_clusters
    first_cluster = np.concatenate([[0], np.cumsum(clusters_per_group)[:-1]])
    group_index_of_row = np.empty(len(boxes), dtype=np.int64)
    group_index_of_row[order] = np.repeat(np.arange(num_groups), sizes)
    cluster_of_row = first_cluster[group_index_of_row] + cluster_slot

    slot_index = np.empty(num_groups, dtype=np.int64)
    slot_index[slot_of_group] = np.arange(num_groups)
    cluster_group = np.repeat(np.arange(num_groups), clusters_per_group)
    cluster_k = np.arange(len(cluster_group)) - first_cluster[cluster_group]
    cluster_slots = slot_index[cluster_group]
    return (
        order,
        cluster_of_row,
        fused[cluster_slots, cluster_k],
        group_ids[cluster_group],
        conf[cluster_slots, cluster_k],
    )


def fuse_box_groups(boxes, scores, groups, iou_thr=0.55, skip_box_thr=0.0):
    """Fuse many independent groups of boxes (e.g. one per image and class).

    boxes: (N, 4) xyxy in [0, 1]; scores: (N,); groups: (N,) integer group ids.
    Within a group, boxes listed first are treated as one model with weight 1,
    exactly like one `weighted_boxes_fusion` call per group with that group's
    boxes as a single model. Returns a GroupFusion.
    """
    boxes, keep, report = clean_boxes(boxes, scores, skip_box_thr)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)[keep]
    groups = np.asarray(groups).reshape(-1)[keep]
    if not len(scores):
        return GroupFusion(np.zeros((0, 4)), groups[:0], np.zeros(0, np.int64), np.zeros(0), report)
    _, cluster_of_row, fused, cluster_groups, conf = _cluster(boxes[keep], scores, groups, iou_thr)
    sizes = np.bincount(cluster_of_row, minlength=len(fused))
    return GroupFusion(fused, cluster_groups, sizes, conf / sizes, report)


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
                f"{len(its_labels)} labels; "
                "they must have the same length"
            )
    if weights is not None and len(weights) != len(boxes_list):
        raise ValueError(
            f"weights has {len(weights)} entries but there are {len(boxes_list)} models"
        )


def _cluster_scores(
    conf,
    sizes,
    order,
    member_scores,
    member_weights,
    cluster_of_row,
    model_of_row,
    weights,
    conf_type,
    allows_overflow,
):
    """Per-cluster confidence exactly as ensemble-boxes 1.0.9 computes it.

    A one-member cluster keeps the member's raw weighted score and weight in
    float64; a larger one stores its mean (or max) score and weight sum
    (summed in visit order) in float32 before the final rescaling.
    """
    multi = sizes > 1
    weight_sums = np.bincount(cluster_of_row[order], member_weights[order], minlength=len(sizes))
    weight_sums = np.where(multi, weight_sums.astype(np.float32), weight_sums)
    if conf_type == "max":
        maxima = np.full(len(sizes), -np.inf)
        np.maximum.at(maxima, cluster_of_row, member_scores)
        score = np.where(multi, maxima.astype(np.float32), maxima)
        return score / weights.max()
    score = np.where(multi, (conf / sizes).astype(np.float32), conf)
    if conf_type == "avg":
        n = sizes if allows_overflow else np.minimum(len(weights), sizes)
        return score * n / weights.sum()
    # The model-aware types need each cluster's set of distinct models.
    present = np.zeros((len(sizes), len(weights)), dtype=bool)
    present[cluster_of_row, model_of_row] = True
    if conf_type == "box_and_model_avg":
        return score * sizes / weight_sums * (weights * present).sum(axis=1) / weights.sum()
    return score * sizes / (weight_sums + (weights * ~present).sum(axis=1))


def weighted_boxes_fusion(
    boxes_list,
    scores_list,
    labels_list,
    weights=None,
    iou_thr=0.55,
    skip_box_thr=0.0,
    conf_type="avg",
    allows_overflow=False,
):
    """Fuse the boxes of several models; drop-in for ensemble_boxes' function.

    boxes_list: per model, (n_m, 4) xyxy normalized to [0, 1];
    scores_list, labels_list: per model, (n_m,); weights: per model, default 1.
    Returns (boxes (N, 4), scores (N,), labels (N,)) as float64 arrays sorted
    by descending score. See the module docstring for the exact semantics.
    """
    _validate(boxes_list, scores_list, labels_list, weights, conf_type)
    weights = np.ones(len(boxes_list)) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = [len(s) for s in scores_list]
    if sum(counts) == 0:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,))
    model_of_row = np.repeat(np.arange(len(counts)), counts)
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_list])
    scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores_list])
    labels = np.concatenate([np.asarray(m).reshape(-1) for m in labels_list]).astype(np.int64)

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
    member_weights = weights[model_of_row]
    member_scores = scores[keep] * member_weights

    # Groups are labels numbered in order of first appearance, like the
    # reference's dict, so that the final stable concatenation matches it.
    unique_labels, first_seen, label_code = np.unique(
        labels, return_index=True, return_inverse=True
    )
    appearance_rank = np.empty(len(unique_labels), dtype=np.int64)
    appearance_rank[np.argsort(first_seen)] = np.arange(len(unique_labels))
    codes = appearance_rank[label_code]

    order, cluster_of_row, fused, cluster_codes, conf = _cluster(
        boxes, member_scores, codes, iou_thr
    )
    sizes = np.bincount(cluster_of_row, minlength=len(fused))
    score = _cluster_scores(
        conf,
        sizes,
        order,
        member_scores,
        member_weights,
        cluster_of_row,
        model_of_row,
        weights,
        conf_type,
        allows_overflow,
    )
    by_score = score.argsort()[::-1]
    cluster_labels = unique_labels[np.argsort(first_seen)][cluster_codes].astype(np.float64)
    return fused[by_score], score[by_score], cluster_labels[by_score]
