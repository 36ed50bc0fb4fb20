"""train_det.py with anchors scaled by --image-size / 800 (torchvision's training size),
the alternative docs/experiments.md measures against torchvision's anchors.

    python studies/scaled_anchors.py TRAIN_DET_FLAGS...

Takes train_det.py's flags; the detector file records the scaled sizes, so
evaluate.py rebuilds and scores it as any other.
"""

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_det  # noqa: E402
from cxr.detection.detector import ANCHOR_SIZES, build_detector  # noqa: E402
from cxr.run.errors import exit_on_user_error  # noqa: E402


def scaled_sizes(image_size):
    """torchvision's anchor sizes times image_size / 800, at least 1 px."""
    return tuple(max(1, round(size * image_size / 800)) for size in ANCHOR_SIZES)


def main(argv):
    args = train_det.get_args_parser().parse_args(argv)
    sizes = scaled_sizes(args.image_size)
    print(f"anchors scaled by {args.image_size} / 800: {sizes} px")
    train_det.build_detector = functools.partial(build_detector, anchor_sizes=sizes)
    train_det.ANCHOR_SIZES = sizes
    train_det.main(argv)


if __name__ == "__main__":
    exit_on_user_error(main, sys.argv[1:])
