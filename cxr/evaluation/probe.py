"""Linear probe: frozen features, one-vs-rest logistic regression, macro-AUROC.

`fit_logistic_ovr(X, Y, C)` minimizes, for every class k independently,

    C * sum_i log(1 + exp(-s_ik (x_i . w_k + b_k))) + ||w_k||^2 / 2,   s_ik = +-1,

the objective of scikit-learn's LogisticRegression default (L2, C=1.0, an
unpenalized intercept), for all classes at once with full-batch L-BFGS in
float64 (the objectives are separable, so their sum has the same minimizer).

`macro_auroc(scores, targets)` computes each class's AUROC in the
Mann-Whitney form, (R+ - P(P+1)/2) / (P N) with R+ the sum of the positives'
ranks and tied scores sharing their average rank; classes whose test set has
no positive or no negative are reported as undefined and left out of the mean.
"""

import torch

from cxr.nn.resnet import uint8_to_network_input


@torch.no_grad()
def extract_features(trunk, batches, *, device):
    """Pooled trunk features (n, d) of `batches` ((B, 1, H, W) uint8 images), in eval
    mode, without augmentation: what the probe is fitted and scored on."""
    trunk.eval().to(device)
    features = [trunk(uint8_to_network_input(batch, device)).float().cpu() for batch in batches]
    return torch.cat(features) if features else torch.zeros(0, 0)


def standardize(train, test):
    """z-score both with the training features' mean and std."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def probe_test_scores(train_x, train_y, test_x, *, C=1.0):
    """Scores (n_test, K) of the probe fitted on the training features: both
    splits standardized with the training statistics (in the features' dtype),
    `fit_logistic_ovr`, then the test scores in float64. This is what
    evaluate.py --mode probe reports; its macro-AUROC is the probe's figure."""
    train_x, test_x = standardize(train_x, test_x)
    weights, bias = fit_logistic_ovr(train_x, train_y, C=C)
    return test_x.double() @ weights + bias


def fit_logistic_ovr(
    X: torch.Tensor, Y: torch.Tensor, *, C=1.0, max_iter=1000, tolerance=1e-6, check_every=10
):
    """One-vs-rest L2 logistic regression, scikit-learn's default objective.

    Minimizes (C * sum_ik softplus(-s_ik (x_i . w_k + b_k)) + ||W||^2 / 2) / n,
    s_ik = +-1, with full-batch L-BFGS (strong Wolfe line search) and autograd
    in float64, intercepts starting at the logit of each class's prevalence.

    Args:
        X: (n, d) features; Y: (n, K) labels in {0, 1}.
        C: the inverse L2 strength; max_iter: at most this many iterations.
        tolerance: the fit stops when every entry of the gradient (checked
            every `check_every` iterations) is below it.
    Returns:
        (W (d, K), b (K,)) in float64.
    """
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    n, d = X.shape
    signs = 2 * Y - 1
    prevalence = Y.mean(0).clamp(1 / n, 1 - 1 / n)
    W = torch.zeros(d, Y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.logit(prevalence).requires_grad_()
    optimizer = torch.optim.LBFGS(
        [W, b],
        lr=1,
        max_iter=check_every,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective():
        optimizer.zero_grad()
        data_loss = torch.nn.functional.softplus(-signs * (X @ W + b)).sum()
        loss = (C * data_loss + 0.5 * (W * W).sum()) / n
        loss.backward()
        return loss

    for _ in range(0, max_iter, check_every):
        objective()
        if max(W.grad.abs().max(), b.grad.abs().max()) < tolerance:
            break
        optimizer.step(objective)
    return W.detach(), b.detach()


def average_ranks(values):
    """1-based ranks of a 1-D tensor, ties sharing the mean of their ranks."""
    order = torch.argsort(values)
    _, inverse, counts = torch.unique_consecutive(
        values[order], return_inverse=True, return_counts=True
    )
    last = torch.cumsum(counts, 0).to(torch.float64)
    group_rank = last - (counts - 1) / 2
    ranks = torch.empty_like(group_rank[inverse])
    ranks[order] = group_rank[inverse]
    return ranks


def macro_auroc(scores, targets):
    """(macro mean over defined classes, None if none is; per-class list with None where
    undefined: a class without positives or without negatives)."""
    scores, targets = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(targets).bool()
    per_class = []
    for k in range(targets.shape[1]):
        positives = int(targets[:, k].sum())
        negatives = targets.shape[0] - positives
        if positives == 0 or negatives == 0:
            per_class.append(None)
            continue
        rank_sum = float(average_ranks(scores[:, k])[targets[:, k]].sum())
        per_class.append((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))
    defined = [a for a in per_class if a is not None]
    return (sum(defined) / len(defined) if defined else None), per_class
