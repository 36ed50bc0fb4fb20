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

from .data import ImageList, to_network_input


@torch.no_grad()
def extract_features(trunk, paths, image_size, batch_size, device, workers=0):
    """Pooled trunk features (n, d) of the images, in eval mode, no augmentation."""
    trunk.eval().to(device)
    loader = torch.utils.data.DataLoader(ImageList(paths, image_size), batch_size=batch_size,
                                         num_workers=workers)
    features = [trunk(to_network_input(batch.to(device).float() / 255)).float().cpu() for batch in loader]
    return torch.cat(features) if features else torch.zeros(0, 0)


def standardize(train, test):
    """z-score both with the training features' mean and std."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def fit_logistic_ovr(X, Y, C=1.0, max_iter=1000, tolerance=1e-6):
    """One-vs-rest L2 logistic regression. X (n, d), Y (n, K) in {0, 1}.
    Returns (W (d, K), b (K,)) in float64.

    Stops when every gradient entry of the objective / n is below `tolerance`
    (or after max_iter iterations); L-BFGS's loss-change test is disabled, as
    it stops far from the optimum on this flat, rescaled objective."""
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    n, d = X.shape
    signs = 2 * Y - 1
    W = torch.zeros(d, Y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(Y.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=0.0, history_size=20,
                                  line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        margins = signs * (X @ W + b)
        loss = (C * torch.nn.functional.softplus(-margins).sum() + 0.5 * (W * W).sum()) / n
        loss.backward()
        return loss

    optimizer.step(objective)
    return W.detach(), b.detach()


def average_ranks(values):
    """1-based ranks of a 1-D tensor, ties sharing the mean of their ranks."""
    order = torch.argsort(values)
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).to(torch.float64)
    group_rank = last - (counts - 1) / 2
    ranks = torch.empty_like(group_rank[inverse])
    ranks[order] = group_rank[inverse]
    return ranks


def macro_auroc(scores, targets):
    """(macro mean over defined classes, per-class list with None where undefined)."""
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
    return (sum(defined) / len(defined) if defined else float("nan")), per_class
