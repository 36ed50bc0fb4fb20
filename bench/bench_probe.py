"""Benchmark: our torch probe vs scikit-learn's one-vs-rest LogisticRegression.

Both fit the same objective (L2, C=1.0, unpenalized intercept) on the same
standardized features and are scored with AUROC on the same test rows; we
print the largest per-class AUROC difference, the macro difference and the
time ratio. Features are either --features FILE (a dict with train_x,
train_y, test_x, test_y tensors) or, by default, a problem the size of the
real probe: 3,515 train and 879 test images, 2,048-d ResNet-50 features,
14 labels with the real class frequencies, driven by a sparse linear model.

scikit-learn runs twice: with its default stopping rule (tol 1e-4; max_iter
raised to 1000), which on such features stops well above the optimum, and
converged (tol 1e-8). The objective value of each solution says which is
closer to the optimum. Each fit is timed twice and the faster call counts.

    python bench/bench_probe.py [--dim 2048] [--features FILE]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.synthetic_xrays import LESION_SPECS  # noqa: E402
from cxr.evaluation.probe import fit_logistic_ovr, macro_auroc, standardize  # noqa: E402


def synthetic_problem(n_train, n_test, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    weights = torch.randn(dim, len(LESION_SPECS), generator=g, dtype=torch.float64)
    weights *= torch.rand(dim, len(LESION_SPECS), generator=g) < 0.02
    logits = x @ weights + 2 * torch.randn(n, len(LESION_SPECS), generator=g, dtype=torch.float64)
    shares = torch.tensor([spec.share for spec in LESION_SPECS], dtype=torch.float64)
    thresholds = torch.quantile(logits, 1 - shares, dim=0).diagonal()
    y = (logits > thresholds).double()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="torch file with train_x, train_y, test_x, test_y")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--train", type=int, default=3515)
    parser.add_argument("--test", type=int, default=879)
    args = parser.parse_args()
    if args.features:
        data = torch.load(args.features, weights_only=True)
        train_x, train_y, test_x, test_y = (
            data[k].double() for k in ("train_x", "train_y", "test_x", "test_y")
        )
    else:
        train_x, train_y, test_x, test_y = synthetic_problem(args.train, args.test, args.dim)
    train_x, test_x = standardize(train_x, test_x)
    print(
        f"features: {tuple(train_x.shape)} train, {tuple(test_x.shape)} test, {train_y.shape[1]} "
        f"labels, {torch.get_num_threads()} threads"
    )

    def objective(weights, bias):
        """The summed per-class objective both solvers minimize (lower is closer to the optimum)."""
        margins = (2 * train_y - 1) * (train_x @ weights + bias)
        return float(torch.nn.functional.softplus(-margins).sum() + 0.5 * (weights * weights).sum())

    def best_of_two(fit):
        """(result, seconds): the faster of two calls, so one-time start-up costs count for
        neither side."""
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            result = fit()
            timings.append(time.perf_counter() - start)
        return result, min(timings)

    (weights, bias), ours_s = best_of_two(lambda: fit_logistic_ovr(train_x, train_y))
    ours_macro, ours = macro_auroc(test_x @ weights + bias, test_y)
    print(
        "| solver | fit time | time ratio (peer / ours) | objective | macro-AUROC | max class "
        "AUROC diff vs ours |"
    )
    print(
        f"| ours, torch L-BFGS, tolerance 1e-6 | {ours_s:.2f} s | 1 | "
        f"{objective(weights, bias):.3f} | {ours_macro:.4f} | 0 |"
    )

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    for label, options in (
        ("default (tol 1e-4)", {"max_iter": 1000}),
        ("converged (tol 1e-8)", {"max_iter": 10000, "tol": 1e-8}),
    ):

        def fit_peer(options=options):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return OneVsRestClassifier(
                    LogisticRegression(C=1.0, solver="lbfgs", **options)
                ).fit(train_x.numpy(), train_y.numpy())

        peer, peer_s = best_of_two(fit_peer)
        peer_weights = torch.tensor(np.stack([e.coef_[0] for e in peer.estimators_], 1))
        peer_bias = torch.tensor([e.intercept_[0] for e in peer.estimators_])
        peer_macro, theirs = macro_auroc(test_x @ peer_weights + peer_bias, test_y)
        worst = max(abs(a - b) for a, b in zip(ours, theirs) if a is not None)
        print(
            f"| scikit-learn lbfgs, {label} | {peer_s:.2f} s | {peer_s / ours_s:.1f}x | "
            f"{objective(peer_weights, peer_bias):.3f} | {peer_macro:.4f} | {worst:.4f} |"
        )


if __name__ == "__main__":
    main()
