"""Linear probe: AUROC by hand and with ties, logistic regression at its optimum."""

import itertools

import pytest
import torch

from cxr.evaluation.probe import average_ranks, fit_logistic_ovr, macro_auroc, probe_test_scores


def pairwise_auroc(scores, labels):
    """First principles: P(score of a positive > score of a negative), ties count 1/2."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 2 + 1 of 4
    macro, per_class = macro_auroc(
        torch.tensor([[0.9], [0.4], [0.5], [0.1]]), torch.tensor([[1], [1], [0], [0]])
    )
    assert per_class == [pytest.approx(0.75)] and macro == pytest.approx(0.75)


def test_auroc_with_ties_matches_pairwise_counting():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (60, 3), generator=g).double()  # many ties
    targets = torch.randint(0, 2, (60, 3), generator=g)
    macro, per_class = macro_auroc(scores, targets)
    expected = [pairwise_auroc(scores[:, k].tolist(), targets[:, k].tolist()) for k in range(3)]
    assert per_class == pytest.approx(expected)
    assert macro == pytest.approx(sum(expected) / 3)


def test_undefined_classes_are_reported_and_left_out_of_the_mean():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.6]])
    macro, per_class = macro_auroc(scores, torch.tensor([[1, 0, 1], [0, 0, 1]]))
    assert per_class == [1.0, None, None] and macro == 1.0


def test_average_ranks():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_logistic_regression_reaches_the_optimum_of_the_sklearn_objective():
    """At the minimum of C * sum softplus(-s (Xw + b)) + |w|^2 / 2 the gradient
    vanishes: w = C X^T (s * sigmoid(-m)) and C * sum(s * sigmoid(-m)) = 0
    (checked per sample, the units of the solver's tolerance, here 1e-9)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    Y = (
        X[:, :2] @ torch.tensor([[1.5, -1.0], [0.5, 2.0]], dtype=torch.float64)
        + 0.5 * torch.randn(200, 2, generator=g, dtype=torch.float64)
        > 0
    ).double()
    for C in (1.0, 0.01):
        W, b = fit_logistic_ovr(X, Y, C=C, tolerance=1e-9)
        s = 2 * Y - 1
        weight = s * torch.sigmoid(-s * (X @ W + b))
        assert ((W - C * X.T @ weight) / 200).abs().max() < 1e-8
        assert (C * weight.sum(0) / 200).abs().max() < 1e-8
        assert W.abs().max() > 0.1  # not the trivial zero solution
    # strong regularisation shrinks the weights
    assert fit_logistic_ovr(X, Y, C=0.01)[0].norm() < fit_logistic_ovr(X, Y, C=1.0)[0].norm()


def test_classes_are_fitted_independently():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(100, 4, generator=g, dtype=torch.float64)
    Y = (torch.randn(100, 3, generator=g) > 0).double()
    W, b = fit_logistic_ovr(
        X, Y, tolerance=1e-9
    )  # both at the optimum, not merely within the default
    W1, b1 = fit_logistic_ovr(X, Y[:, 1:2], tolerance=1e-9)
    torch.testing.assert_close(W[:, 1:2], W1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b[1:2], b1, atol=1e-6, rtol=1e-5)


def test_more_features_than_images_still_reaches_the_optimum():
    """n < d (a ResNet-50 probe on a small labeled set): the data term alone has
    no unique minimum; the penalty makes it one."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 100, generator=g, dtype=torch.float64)
    Y = (torch.rand(40, 3, generator=g) < torch.tensor([0.5, 0.2, 0.1])).double()
    W, b = fit_logistic_ovr(X, Y, tolerance=1e-9)
    s = 2 * Y - 1
    weight = s * torch.sigmoid(-s * (X @ W + b))
    assert ((W - X.T @ weight) / 40).abs().max() < 1e-8 and (weight.sum(0) / 40).abs().max() < 1e-8


def test_probe_scores_use_training_statistics_only():
    """The probe standardizes with the training split's mean and std: it is
    blind to each feature's units and offset, and one test image's score does
    not depend on the other test images."""
    g = torch.Generator().manual_seed(4)
    train_x, test_x = (torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (120, 30))
    train_y = (
        train_x[:, :2] + 0.5 * torch.randn(120, 2, generator=g, dtype=torch.float64) > 0
    ).double()
    scores = probe_test_scores(train_x, train_y, test_x)
    scale = torch.tensor([1e3, 1e-2, 1.0, 7.0, 0.5, 2.0], dtype=torch.float64)
    offset = torch.arange(6.0, dtype=torch.float64) * 100
    rescaled = probe_test_scores(train_x * scale + offset, train_y, test_x * scale + offset)
    torch.testing.assert_close(rescaled, scores, atol=1e-4, rtol=1e-4)
    alone = probe_test_scores(train_x, train_y, test_x[:1])
    # Scored alone, the image goes through products of another shape, whose float
    # rounding may differ in the last bits on another CPU (kernel choice).
    torch.testing.assert_close(alone, scores[:1], atol=1e-9, rtol=1e-9)


def test_no_defined_class_is_no_macro_auroc_not_nan():
    macro, per_class = macro_auroc(torch.tensor([[0.2], [0.7]]), torch.tensor([[1], [1]]))
    assert macro is None and per_class == [None]
