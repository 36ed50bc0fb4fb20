"""Linear probe: frozen features, one-vs-rest logistic regression, macro-AUROC.

`fit_logistic_ovr(X, Y, C)` minimizes, for every class k independently,

    C * sum_i log(1 + exp(-s_ik (x_i . w_k + b_k))) + ||w_k||^2 / 2,   s_ik = +-1,

the objective of scikit-learn's LogisticRegression default (L2, C=1.0, an
unpenalized intercept), for all classes at once with full-batch L-BFGS in
float64 (the objectives are separable, so their sum has the same minimizer),
preconditioned by a Cholesky factor of the starting Hessian.

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


def fit_logistic_ovr(X, Y, C=1.0, max_iter=1000, tolerance=1e-6, check_every=10):
    """One-vs-rest L2 logistic regression. X (n, d), Y (n, K) in {0, 1}.
    Returns (W (d, K), b (K,)) in float64.

    Preconditioned L-BFGS. The intercept absorbs the feature mean, so with
    centered features Xc the Hessian of class k at the start (w = 0, intercept
    at the logit of its prevalence p_k) is c_k Xc^T Xc + I for w and c_k n for
    the intercept, c_k = C p_k (1 - p_k). We solve for u = L^T w with
    L L^T = c Xc^T Xc + I (Cholesky and the dense L^-T computed once in
    float32: they only change variables) at the geometric mean c of the c_k, which bounds the condition
    number of every class's starting Hessian by max_k max(c_k / c, c / c_k),
    and scale each intercept by its exact curvature. The products with the
    features, which dominate the cost, run in float32 until its rounding
    stalls progress, then in float64. Stops when every gradient entry of the
    original objective / n (w and b) is below `tolerance` (checked every
    `check_every` iterations in the current precision and confirmed in
    float64), or after max_iter iterations."""
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    n, d = X.shape
    mean = X.mean(0)
    centered = X - mean
    prevalence = Y.mean(0).clamp(1 / n, 1 - 1 / n)
    curvature = C * prevalence * (1 - prevalence)
    typical = curvature.log().mean().exp()
    single = centered.float()
    cholesky = torch.linalg.cholesky(typical * (single.T @ single) + torch.eye(d))
    change = torch.linalg.solve_triangular(cholesky, torch.eye(d), upper=False).T      # w = L^-T u
    # (features, change of variables) per precision: float32 first (half the memory traffic), then float64
    phases = {torch.float32: (single, change), torch.float64: (centered, change.double())}
    phase = {"dtype": torch.float32}
    intercept_scale = (curvature * n).rsqrt()
    signs = 2 * Y - 1
    u = torch.zeros(d, Y.shape[1], dtype=torch.float64, requires_grad=True)
    v = (torch.logit(prevalence) / intercept_scale).requires_grad_()
    optimizer = torch.optim.LBFGS([u, v], lr=1, max_iter=check_every, tolerance_grad=0.0, tolerance_change=0.0,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        matrix, to_weights = phases[phase["dtype"]]
        W = to_weights @ u.to(phase["dtype"])
        margins = signs * ((matrix @ W).double() + intercept_scale * v)
        W = W.double()
        loss = (C * torch.nn.functional.softplus(-margins).sum() + 0.5 * (W * W).sum()) / n
        loss.backward()
        return loss

    def solution():
        with torch.no_grad():
            W = phases[torch.float64][1] @ u
            return W, intercept_scale * v - mean @ W

    def largest_gradient(dtype):
        """The stopping measure, with the products with the features in `dtype`."""
        W, _ = solution()
        matrix = phases[dtype][0]
        with torch.no_grad():
            margins = signs * ((matrix @ W.to(dtype)).double() + intercept_scale * v)
            residual = signs * torch.sigmoid(-margins)
            data_term = (matrix.T @ residual.to(dtype)).double() + mean[:, None] * residual.sum(0)
            return max(((W - C * data_term) / n).abs().max(), (C * residual.sum(0) / n).abs().max())

    previous = float("inf")
    for _ in range(0, max_iter, check_every):
        optimizer.step(objective)
        gradient = largest_gradient(phase["dtype"])
        if gradient < tolerance and (phase["dtype"] == torch.float64 or largest_gradient(torch.float64) < tolerance):
            break
        if phase["dtype"] == torch.float32 and gradient > previous / 2:
            phase["dtype"] = torch.float64          # float32 rounding stalls progress: finish in float64
        previous = gradient
    return solution()


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
