"""Weighted Boxes Fusion: hand-computed cases, invariants, and a plain-loop reference."""

from dataclasses import asdict

import numpy as np
import pytest

from cxr.data.wbf import fuse_box_groups, weighted_boxes_fusion

A = [0.10, 0.20, 0.40, 0.50]


def fuse(boxes_list, scores_list, labels_list, **kwargs):
    return weighted_boxes_fusion(boxes_list, scores_list, labels_list, **kwargs)


def test_single_box_fuses_to_itself():
    boxes, scores, labels = fuse([[A]], [[0.8]], [[3]])
    np.testing.assert_array_equal(boxes, [A])
    np.testing.assert_array_equal(scores, [0.8])
    np.testing.assert_array_equal(labels, [3.0])


def test_identical_boxes_fuse_to_one_box_equal_to_them():
    boxes, scores, _ = fuse([[A], [A], [A]], [[0.9], [0.5], [0.7]], [[0], [0], [0]])
    np.testing.assert_allclose(boxes, [A], atol=1e-7)
    assert scores == pytest.approx([(0.9 + 0.5 + 0.7) / 3])


def test_two_models_average_weighted_by_score():
    b = [0.12, 0.22, 0.42, 0.52]
    boxes, scores, _ = fuse([[A], [b]], [[0.9], [0.6]], [[1], [1]])
    expected = (0.9 * np.array(A) + 0.6 * np.array(b)) / 1.5
    np.testing.assert_allclose(boxes, [expected], atol=1e-12)
    assert scores == pytest.approx([0.75 * min(2, 2) / 2])


def test_model_weights_scale_box_average_and_score():
    b = [0.12, 0.22, 0.42, 0.52]
    boxes, scores, _ = fuse([[A], [b]], [[0.9], [0.6]], [[1], [1]], weights=[2, 1])
    expected = (1.8 * np.array(A) + 0.6 * np.array(b)) / 2.4
    np.testing.assert_allclose(boxes, [expected], atol=1e-12)
    assert scores == pytest.approx([(2.4 / 2) * 2 / 3])


def test_disjoint_boxes_stay_apart_and_are_sorted_by_score():
    far = [0.6, 0.6, 0.9, 0.9]
    boxes, scores, _ = fuse([[A], [far]], [[0.3], [0.9]], [[0], [0]])
    np.testing.assert_array_equal(boxes, [far, A])
    assert scores == pytest.approx([0.9 / 2, 0.3 / 2])  # min(M, n) / sum(w) = 1 / 2


def test_conf_type_max():
    b = [0.12, 0.22, 0.42, 0.52]
    _, scores, _ = fuse([[A], [b]], [[0.9], [0.6]], [[1], [1]], weights=[1, 2], conf_type="max")
    assert scores == pytest.approx([1.2 / 2])  # max(0.9 * 1, 0.6 * 2) / max(weights)


def model_aware_case(conf_type):
    # Model 0 draws two boxes, model 1 one, model 2 none; weights 1, 1, 2.
    b, c = [0.11, 0.21, 0.41, 0.51], [0.12, 0.22, 0.42, 0.52]
    return fuse(
        [[A, b], [c], np.zeros((0, 4))],
        [[0.9, 0.5], [0.6], []],
        [[0, 0], [0], []],
        weights=[1, 1, 2],
        conf_type=conf_type,
    )


def test_conf_type_box_and_model_avg():
    _, scores, _ = model_aware_case("box_and_model_avg")
    # mean score (2.0 / 3) * boxes 3 / box weights 3 * present models' weight 2 / all weights 4
    assert scores == pytest.approx([(2.0 / 3) * 3 / 3 * 2 / 4])


def test_conf_type_absent_model_aware_avg():
    _, scores, _ = model_aware_case("absent_model_aware_avg")
    # mean score (2.0 / 3) * boxes 3 / (box weights 3 + absent model's weight 2)
    assert scores == pytest.approx([(2.0 / 3) * 3 / (3 + 2)])


@pytest.mark.parametrize("allows_overflow, expected", [(False, 1.0 * 2 / 2), (True, 1.0 * 3 / 2)])
def test_allows_overflow(allows_overflow, expected):
    three = [A, [0.11, 0.2, 0.4, 0.5], [0.1, 0.21, 0.4, 0.5]]
    _, scores, _ = fuse(
        [three, np.zeros((0, 4))], [[1, 1, 1], []], [[0, 0, 0], []], allows_overflow=allows_overflow
    )
    assert scores == pytest.approx([expected])


def test_skip_box_thr_drops_lower_scores_and_keeps_equal():
    boxes, scores, _ = fuse([[A, [0.6, 0.6, 0.9, 0.9]]], [[0.05, 0.1]], [[0, 0]], skip_box_thr=0.1)
    np.testing.assert_array_equal(boxes, [[0.6, 0.6, 0.9, 0.9]])


def test_swapped_clipped_and_zero_area_boxes_are_fixed_and_reported():
    reversed_box = [0.4, 0.5, 0.1, 0.2]
    outside = [-0.1, 0.6, 1.2, 0.9]
    zero_area = [0.3, 0.3, 0.3, 0.5]
    with pytest.warns(
        UserWarning, match="1 boxes with reversed corners swapped, 1 clipped .* 1 zero-area"
    ):
        boxes, _, _ = fuse([[reversed_box, outside, zero_area]], [[0.9, 0.8, 0.7]], [[0, 1, 2]])
    np.testing.assert_array_equal(boxes, [A, [0.0, 0.6, 1.0, 0.9]])


def test_labels_are_fused_separately():
    boxes, _, labels = fuse([[A, A]], [[0.9, 0.8]], [[0, 1]])
    np.testing.assert_array_equal(boxes, [A, A])
    np.testing.assert_array_equal(labels, [0.0, 1.0])


@pytest.mark.parametrize(
    "boxes_list, scores_list, labels_list",
    [
        ([], [], []),
        ([np.zeros((0, 4))], [[]], [[]]),
        ([[A]], [[0.01]], [[0]]),  # everything below skip_box_thr=0.1
    ],
)
def test_empty_results(boxes_list, scores_list, labels_list):
    boxes, scores, labels = fuse(boxes_list, scores_list, labels_list, skip_box_thr=0.1)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"conf_type": "median"}, "unknown conf_type"),
        ({"weights": [1, 2, 3]}, "weights has 3 entries"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fuse([[A], [A]], [[1], [1]], [[0], [0]], **kwargs)


def test_mismatched_lengths_raise_value_error():
    with pytest.raises(ValueError, match="model 0: 1 boxes, 2 scores"):
        fuse([[A]], [[1, 1]], [[0]])
    with pytest.raises(ValueError, match="one entry per model"):
        fuse([[A], [A]], [[1]], [[0], [0]])


@pytest.mark.parametrize("as_models", [False, True])
def test_equal_scores_are_visited_last_listed_first_as_ensemble_boxes_does(as_models):
    # IoU(a, b) = IoU(b, c) = 0.23 > 0.2 and IoU(a, c) = 0. ensemble-boxes sorts the
    # scores ascending (stable) and reverses: c, b, a. c seeds a cluster, b joins it,
    # and a (IoU 0.03 with the fused box) stays alone; visiting a, b, c would fuse a
    # with b instead. Listed in one model or as three models of weight 1.
    a, b, c = [0.0, 0.0, 0.4, 1.0], [0.25, 0.0, 0.65, 1.0], [0.5, 0.0, 0.9, 1.0]
    if as_models:
        boxes, _, _ = fuse([[a], [b], [c]], [[1], [1], [1]], [[0], [0], [0]], iou_thr=0.2)
    else:
        boxes, _, _ = fuse([[a, b, c]], [[1, 1, 1]], [[0, 0, 0]], iou_thr=0.2)
    fused_bc = (np.array(b) + np.array(c)) / 2
    assert sorted(map(tuple, np.round(boxes, 9))) == sorted(
        [tuple(a), tuple(np.round(fused_bc, 9))]
    )


def test_a_chain_of_tied_readers_fuses_as_the_seed_conversion_did():
    """Five tied boxes a..e in a chain, a = [0, .4] ... e = [.4, .8] in x: neighbours
    overlap with IoU 0.6, second neighbours 1/3. By hand, visiting e, d, c, b, a at
    iou_thr 0.4: e seeds; d joins (0.6): [.35, .75]; c joins (.25 / .55 = 0.45):
    [.3, .7]; b overlaps that .2 / .6 = 1/3: a new cluster; a joins b (0.6 against
    0.14): [.05, .45]. Equal confidences come out the later cluster first. Visiting
    a first instead gives [.1, .5] and [.35, .75]."""
    chain = [[x / 10, 0.0, (x + 4) / 10, 1.0] for x in range(5)]
    boxes, scores, _ = fuse([chain], [[1] * 5], [[0] * 5], iou_thr=0.4)
    np.testing.assert_allclose(boxes, [[0.05, 0.0, 0.45, 1.0], [0.3, 0.0, 0.7, 1.0]], atol=1e-12)
    assert scores.tolist() == [1.0, 1.0]
    groups = fuse_box_groups(np.array(chain), np.ones(5), np.zeros(5, int), iou_thr=0.4)
    np.testing.assert_allclose(groups.boxes, [[0.3, 0.0, 0.7, 1.0], [0.05, 0.0, 0.45, 1.0]])
    assert groups.sizes.tolist() == [3, 2]  # clusters in order of creation


def reference_wbf(boxes, scores, iou_thr):
    """First principles, one label, one model of weight 1: visit boxes by
    descending score (equal scores the last listed first), join the cluster whose
    current weighted-mean box has the highest IoU if above iou_thr."""

    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
        return w * h / union

    order = sorted(range(len(scores)), key=lambda i: (-scores[i], -i))
    clusters = []
    for i in order:
        means = [
            np.average([boxes[j] for j in c], axis=0, weights=[scores[j] for j in c])
            for c in clusters
        ]
        ious = [iou(m, boxes[i]) for m in means]
        best = int(np.argmax(ious)) if ious else -1
        if best >= 0 and ious[best] > iou_thr:
            clusters[best].append(i)
        else:
            clusters.append([i])
    return [
        (
            np.average([boxes[j] for j in c], axis=0, weights=[scores[j] for j in c]),
            np.mean([scores[j] for j in c]) * min(1, len(c)),
        )
        for c in clusters
    ]


@pytest.mark.parametrize("seed", range(20))
def test_matches_first_principles_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 40)
    centres = rng.random((3, 2)) * 0.7
    base = np.concatenate([centres, centres + 0.2], axis=1)[rng.integers(0, 3, n)]
    boxes = np.clip(base + rng.normal(0, 0.04, (n, 4)), 0, 1)
    boxes[:, 2:] = np.minimum(np.maximum(boxes[:, 2:], boxes[:, :2] + 0.01), 1.0)
    boxes[:, :2] = np.minimum(boxes[:, :2], 0.98)
    scores = rng.random(n)
    fused, fused_scores, _ = fuse([boxes], [scores], [np.zeros(n)], iou_thr=0.4)
    expected = sorted(reference_wbf(boxes, scores, 0.4), key=lambda bs: -bs[1])
    np.testing.assert_allclose(fused, [b for b, _ in expected], atol=1e-6)
    np.testing.assert_allclose(fused_scores, [s for _, s in expected], rtol=1e-6)


def test_grouped_fusion_equals_one_call_per_group():
    rng = np.random.default_rng(7)
    n = 300
    groups = rng.integers(0, 40, n)
    starts = rng.random((n, 2)) * 0.3 + (groups % 4)[:, None] * 0.12
    boxes = np.concatenate([starts, starts + 0.25 + rng.random((n, 2)) * 0.05], axis=1)
    scores = rng.choice([1.0, 0.5], n)
    result = fuse_box_groups(boxes, scores, groups, iou_thr=0.3)
    for group in np.unique(groups):
        rows = groups == group
        expected, expected_scores, _ = fuse(
            [boxes[rows]], [scores[rows]], [np.zeros(rows.sum())], iou_thr=0.3
        )
        mine = result.groups == group
        # one model of weight 1: the avg score is the mean member score
        assert sorted(map(tuple, result.boxes[mine].round(9))) == sorted(
            map(tuple, expected.round(9))
        )
        assert sorted(result.mean_scores[mine]) == pytest.approx(sorted(expected_scores))
    assert result.sizes.sum() == n


def test_a_box_joins_a_cluster_only_above_the_threshold_not_at_it():
    """a = [0, 0, .5, .5] and b = [0, 0, .25, .5] overlap by IoU .125 / .25 = 0.5 exactly
    (binary fractions, no rounding): at iou_thr 0.5 they stay apart, below it they fuse."""
    a, b = [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.25, 0.5]
    apart, _, _ = fuse([[a, b]], [[0.9, 0.8]], [[0, 0]], iou_thr=0.5)
    fused, _, _ = fuse([[a, b]], [[0.9, 0.8]], [[0, 0]], iou_thr=0.49)
    assert len(apart) == 2 and len(fused) == 1


def test_clean_boxes_are_reported_as_nothing_changed():
    fusion = fuse_box_groups(np.array([A, A]), np.array([0.9, 0.8]), np.array([0, 1]))
    assert asdict(fusion.report) == {
        "below_threshold": 0,
        "swapped": 0,
        "clipped": 0,
        "zero_area": 0,
    }
