"""cxr.data.wbf.weighted_boxes_fusion against ensemble-boxes 1.0.9 on random calls.

Each call draws 1-4 models with 0-25 boxes each over 3 labels, model
weights, a conf_type, allows_overflow and skip_box_thr, and boxes around a
few centres (so that clusters form). Scores are either continuous (no two
equal) or drawn from {0.5, 1} (ties everywhere). A call agrees when both
return the same clusters (label, score and box to 1e-6), in any order. The two
differ by design in the visit order of equal scores (cxr: the order listed;
ensemble-boxes: numpy's argsort reversed) and in float32 storage of fused
boxes (ensemble-boxes), so continuous scores should agree everywhere and
tied ones mostly.

    pip install -r requirements-bench.txt
    python studies/compare_wbf.py [--calls 3000]
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.wbf import CONF_TYPES, weighted_boxes_fusion  # noqa: E402


def random_call(rng, tied):
    models = int(rng.integers(1, 5))
    centres = rng.random((3, 2)) * 0.6
    boxes, scores, labels = [], [], []
    for _ in range(models):
        n = int(rng.integers(0, 26))
        corner = centres[rng.integers(0, 3, n)] + rng.normal(0, 0.03, (n, 2))
        size = 0.15 + rng.random((n, 2)) * 0.2
        boxes.append(np.clip(np.concatenate([corner, corner + size], axis=1), 0, 1))
        scores.append(rng.choice([0.5, 1.0], n) if tied else rng.random(n))
        labels.append(rng.integers(0, 3, n))
    options = {
        "weights": (rng.integers(1, 4, models) if rng.random() < 0.5 else None),
        "iou_thr": float(rng.choice([0.2, 0.4, 0.55])),
        "skip_box_thr": float(rng.choice([0.0, 0.3])),
        "conf_type": str(rng.choice(CONF_TYPES)),
        "allows_overflow": bool(rng.random() < 0.3),
    }
    if options["weights"] is not None:
        options["weights"] = options["weights"].tolist()
    return boxes, scores, labels, options


def canonical(result):
    """The clusters as rows (label, score, box), sorted: the output order of
    equal-score clusters is not compared."""
    boxes, scores, labels = (np.asarray(a, dtype=np.float64) for a in result)
    rows = np.column_stack([labels, scores, boxes.reshape(-1, 4)])
    return rows[np.lexsort(rows.T[::-1].round(6))]


def agree(ours, theirs, tolerance=1e-6):
    a, b = canonical(ours), canonical(theirs)
    return a.shape == b.shape and np.allclose(a, b, atol=tolerance, rtol=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="random calls per score kind")
    args = parser.parse_args()
    from ensemble_boxes import weighted_boxes_fusion as reference

    rng = np.random.default_rng(0)
    for tied in (False, True):
        agreeing = 0
        for _ in range(args.calls):
            boxes, scores, labels, options = random_call(rng, tied)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = reference(boxes, scores, labels, **options)
                ours = weighted_boxes_fusion(boxes, scores, labels, **options)
            agreeing += agree(ours, theirs)
        kind = "tied scores {0.5, 1}" if tied else "continuous scores"
        print(
            f"{kind}: {agreeing} of {args.calls} calls agree to 1e-6 ({agreeing / args.calls:.2%})"
        )


if __name__ == "__main__":
    main()
