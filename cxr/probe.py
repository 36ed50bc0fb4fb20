"""Linear probe: frozen features, one-vs-rest logistic regression, macro-AUROC.

`fit_logistic_ovr(X, Y, C)` minimizes, for every class k independently,

    C * sum_i log(1 + exp(-s_ik (x_i . w_k + b_k))) + ||w_k||^2 / 2,   s_ik = +-1,

the objective of scikit-learn's LogisticRegression default (L2, C=1.0, an
unpenalized intercept), for all classes at once with full-batch L-BFGS in
float64 (the objectives are separable, so their sum has the same minimizer),
preconditioned by a Cholesky factor of the starting Hessian, with the heavy
products in float32 relative to a float64 anchor.

`macro_auroc(scores, targets)` computes each class's AUROC in the
Mann-Whitney form, (R+ - P(P+1)/2) / (P N) with R+ the sum of the positives'
ranks and tied scores sharing their average rank; classes whose test set has
no positive or no negative are reported as undefined and left out of the mean.
"""

import numpy as np
import torch

from .data import ImageList, image_labels, split_images, to_network_input


@torch.no_grad()
def extract_features(trunk, paths, image_size, batch_size, device, workers=0):
    """Pooled trunk features (n, d) of the images, in eval mode, no augmentation."""
    trunk.eval().to(device)
    loader = torch.utils.data.DataLoader(ImageList(paths, image_size), batch_size=batch_size,
                                         num_workers=workers)
    features = [trunk(to_network_input(batch.to(device).float() / 255)).float().cpu() for batch in loader]
    return torch.cat(features) if features else torch.zeros(0, 0)


def split_features(trunk, data_dir, split, image_size, batch_size, device, workers=0):
    """(features (n, d), 14 image-level labels (n, 14)) of a prepared split's
    images in name order: what the probe is fitted and scored on."""
    paths, labels = split_images(data_dir, split), image_labels(data_dir, split)
    names = sorted(paths)
    features = extract_features(trunk, [paths[n] for n in names], image_size, batch_size, device, workers)
    return features, torch.tensor(np.stack([labels[n] for n in names]))


def standardize(train, test):
    """z-score both with the training features' mean and std."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def probe_test_scores(train_x, train_y, test_x, C=1.0):
    """Scores (n_test, K) of the probe fitted on the training features: both
    splits standardized with the training statistics (in the features' dtype),
    `fit_logistic_ovr`, then the test scores in float64. This is what
    evaluate.py --mode probe reports; its macro-AUROC is the probe's figure."""
    train_x, test_x = standardize(train_x, test_x)
    weights, bias = fit_logistic_ovr(train_x, train_y, C=C)
    return test_x.double() @ weights + bias


def fit_logistic_ovr(X, Y, C=1.0, max_iter=1000, tolerance=1e-6, check_every=10):
    """One-vs-rest L2 logistic regression. X (n, d), Y (n, K) in {0, 1}.
    Returns (W (d, K), b (K,)) in float64.

    Preconditioning. The intercept absorbs the feature mean, so with centered
    features Xc the Hessian of class k at the start (w = 0, intercept at the
    logit of its prevalence p_k) is c_k Xc^T Xc + I for w and c_k n for the
    intercept, c_k = C p_k (1 - p_k). We solve for u = L^T w with
    L L^T = c Xc^T Xc + I at the geometric mean c of the c_k, which bounds the
    condition number of every class's starting Hessian by
    max_k max(c_k / c, c / c_k), and scale each intercept by its exact
    curvature. In u the data term needs only Z = Xc L^-T (formed once, so no
    dense d x d product per evaluation), and so does the penalty: since
    L^-1 L^-T = I - c Z^T Z, ||L^-T s||^2 = ||s||^2 - c ||Z s||^2.

    Precision. The products with Z, which dominate the cost, run in float32
    on differences from an anchor point u0: every `check_every` iterations the
    margins, the gradient and ||w||^2 are computed at the current point (in
    float64 once the gradient is within 100 x tolerance) and the next
    iterations evaluate only the step s = u - u0 in float32. The rounding error
    then shrinks with the steps instead of stalling progress at float32
    precision (plain float32 stalls near a gradient of 2e-6 on the benchmark).
    The anchor is also the stopping test: every gradient entry of the
    original objective / n (w and b) below `tolerance`, confirmed in float64;
    or max_iter iterations."""
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    n, d = X.shape
    mean = X.mean(0)
    centered = {torch.float64: X - mean}
    centered[torch.float32] = single = centered[torch.float64].float()
    prevalence = Y.mean(0).clamp(1 / n, 1 - 1 / n)
    curvature = C * prevalence * (1 - prevalence)
    typical = curvature.log().mean().exp()
    factor = torch.linalg.cholesky(typical * (single.T @ single) + torch.eye(d))
    Z = torch.linalg.solve_triangular(factor, single.T, upper=False).T
    factor = factor.double()
    intercept_scale = (curvature * n).rsqrt()
    signs = 2 * Y - 1
    u = torch.zeros(d, Y.shape[1], dtype=torch.float64)          # gradients are set by hand in objective()
    v = torch.logit(prevalence) / intercept_scale
    optimizer = torch.optim.LBFGS([u, v], lr=1, max_iter=check_every, tolerance_grad=0.0, tolerance_change=0.0,
                                  history_size=20, line_search_fn="strong_wolfe")
    anchor = {}

    def weights():
        return torch.linalg.solve_triangular(factor.T, u, upper=True)

    def residual(data_margins):
        """d(C * sum of log-losses) / d(margins)."""
        return -C * signs * torch.sigmoid(-signs * (data_margins + intercept_scale * v))

    def set_anchor(dtype):
        """Anchor at the current point; returns the stopping measure there."""
        w = weights()
        matrix = centered[dtype]
        margins = (matrix @ w.to(dtype)).double()
        res = residual(margins)
        gradient_w = w + (matrix.T @ res.to(dtype)).double()
        inverse_w, gradient_u = torch.linalg.solve_triangular(factor, torch.cat([w, gradient_w], 1),
                                                              upper=False).split(w.shape[1], 1)
        anchor.update(u=u.clone(), margins=margins, residual=res, half_penalty=0.5 * (w * w).sum(),
                      inverse_w=inverse_w, gradient=gradient_u, dtype=dtype)
        return max(gradient_w.abs().max(), res.sum(0).abs().max()) / n

    def objective():
        """Loss / n at the current point, gradients in u.grad and v.grad."""
        step = u - anchor["u"]
        moved = (Z @ step.float()).double()
        margins = anchor["margins"] + moved
        res = residual(margins)
        data_loss = C * torch.nn.functional.softplus(-signs * (margins + intercept_scale * v)).sum()
        penalty = anchor["half_penalty"] + (anchor["inverse_w"] * step).sum() + 0.5 * (
            (step * step).sum() - typical * (moved * moved).sum())
        u.grad = ((Z.T @ (res - anchor["residual"] - typical * moved).float()).double()
                  + anchor["gradient"] + step) / n
        v.grad = intercept_scale * res.sum(0) / n
        return (data_loss + penalty) / n

    gradient = float("inf")
    for _ in range(0, max_iter, check_every):
        gradient = set_anchor(torch.float64 if gradient < 100 * tolerance else torch.float32)
        if gradient < tolerance and (anchor["dtype"] == torch.float64 or set_anchor(torch.float64) < tolerance):
            break
        optimizer.step(objective)
    W = weights()
    return W, intercept_scale * v - mean @ W


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
