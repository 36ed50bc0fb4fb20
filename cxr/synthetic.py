"""python -m cxr.synthetic: a synthetic VinBigData training set in the real 512 px
download's layout (`cxr.data.synthetic_xrays`).

    python -m cxr.synthetic --out DIR --images N --size 512 --seed S
"""

from pathlib import Path

from cxr.data.synthetic_xrays import generate
from cxr.run import cli
from cxr.run.errors import exit_on_user_error


def get_args_parser():
    parser = cli.command_parser(
        "python -m cxr.synthetic",
        "Write a synthetic VinBigData dataset (train.csv, train/, "
        "test/) in the layout of the real 512 px download.",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (refused if it exists, unless --replace)"
    )
    parser.add_argument(
        "--images", type=cli.positive_int, default=1000, help="labeled training images"
    )
    parser.add_argument(
        "--test-images",
        type=cli.non_negative_int,
        default=None,
        help="unlabeled test images (default: images // 5)",
    )
    parser.add_argument("--size", type=cli.image_size, default=512, help="PNG side in pixels")
    parser.add_argument(
        "--seed", type=cli.seed, default=0, help="the same seed writes the same files"
    )
    parser.add_argument("--replace", action="store_true", help="overwrite an existing --out")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    generate(
        Path(args.out),
        num_images=args.images,
        size=args.size,
        seed=args.seed,
        test_images=args.test_images,
        replace=args.replace,
    )


if __name__ == "__main__":
    exit_on_user_error(main)
