"""python -m cxr.prepare: a box table and its images -> a checked, fused, split data folder.

    python -m cxr.prepare --csv vinbigdata/train.csv --images vinbigdata/train --out data
    python -m cxr.prepare --format nih --csv BBox_List_2017.csv --images images --out data
    python -m cxr.prepare --format coco --annotations boxes.json --images images --out data

The phases are `cxr.data.preparation`'s. Needs numpy and Pillow only: torch is not imported.
"""

from pathlib import Path

from cxr.data.coco_format import group_pattern
from cxr.data.preparation import FORMATS, prepare
from cxr.run import cli
from cxr.run.errors import exit_on_user_error


def get_args_parser():
    parser = cli.command_parser(
        "python -m cxr.prepare",
        "Check a box table and its images, fuse several readers' boxes, rescale them to "
        "each image, and split the images with findings into train/test. Formats: "
        "VinBigData's train.csv, NIH ChestX-ray14's BBox_List_2017.csv, any COCO file.",
    )
    parser.add_argument(
        "--format",
        default="vinbigdata",
        choices=FORMATS,
        dest="data_format",
        help="vinbigdata: the competition's train.csv (--csv); nih: NIH ChestX-ray14's "
        "BBox_List_2017.csv (--csv); coco: any COCO detection file (--annotations)",
    )
    table = parser.add_mutually_exclusive_group(required=True)
    table.add_argument(
        "--csv",
        default=None,
        help="vinbigdata, nih: the box table (no default: give --csv or --annotations)",
    )
    table.add_argument(
        "--annotations",
        default=None,
        help="coco: the COCO file, JSON (no default: give --csv or --annotations)",
    )
    parser.add_argument("--images", required=True, help="folder of the table's images")
    parser.add_argument(
        "--out", required=True, help="output folder (refused if it exists, unless --replace)"
    )
    parser.add_argument(
        "--original-size",
        type=cli.int_range(1, 10**5),
        default=1024,
        help="nih: side in pixels of the images NIH's box coordinates refer to",
    )
    parser.add_argument(
        "--nih-classes",
        default="nih",
        choices=("nih", "vinbigdata"),
        help="nih: the classes are NIH's eight findings; vinbigdata: mapped onto VinBigData's "
        "14 (Mass and Nodule as Nodule/Mass, Pneumonia as Lung Opacity)",
    )
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="coco: the file holds several readers' boxes; fuse them per image and class (WBF)",
    )
    parser.add_argument(
        "--group-by",
        default=None,
        dest="group_pattern",
        type=group_pattern,
        metavar="REGEX",
        help="coco: a regular expression whose first group is the patient in an image's name "
        "(e.g. '^([0-9]+)_'), so that a patient's images stay on one side of the split "
        "(default: none; nih splits by patient always)",
    )
    parser.add_argument(
        "--iou-thr", type=cli.fraction, default=0.2, help="WBF IoU threshold (paper: 0.2)"
    )
    parser.add_argument(
        "--skip-box-thr",
        type=cli.float_range(0.0, 1.0, what="a score"),
        default=1e-4,
        help="WBF score threshold (every reader's box scores 1)",
    )
    parser.add_argument(
        "--test-fraction",
        type=cli.float_range(0.0, 1.0, high_open=True, what="a share"),
        default=0.2,
        help="share of finding images held out",
    )
    parser.add_argument(
        "--seed", type=cli.seed, default=1, help="seed of the train/test permutation"
    )
    parser.add_argument(
        "--keep-normal",
        action="store_true",
        help="also write normal/ and normal_annotations.json (images without findings)",
    )
    parser.add_argument(
        "--normal-in-test",
        action="store_true",
        help="put --test-fraction of the normal images into the test split too (without boxes), "
        "so that mAP counts false positives on normal films, as the competition did",
    )
    parser.add_argument(
        "--verify-pixels",
        action="store_true",
        help="decode every image in full (slow); by default each PNG's header and its final "
        "IEND chunk are checked, which finds files cut short",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out images that are listed but missing, instead of stopping",
    )
    parser.add_argument("--replace", action="store_true", help="overwrite an existing --out")
    return parser


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    source = args.annotations if args.data_format == "coco" else args.csv
    if source is None:
        flag = "--annotations" if args.data_format == "coco" else "--csv"
        parser.error(f"--format {args.data_format} reads its table from {flag}")
    options = {
        k: v for k, v in vars(args).items() if k not in ("csv", "annotations", "images", "out")
    }
    prepare(source, args.images, Path(args.out), **options)


if __name__ == "__main__":
    exit_on_user_error(main)
