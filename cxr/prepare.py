"""VinBigData train.csv (or NIH's box file) -> fused COCO ground truth and a
seeded train/test split.

    python -m cxr.prepare --csv vinbigdata/train.csv --images vinbigdata/train --out data
    python -m cxr.prepare --format nih --csv BBox_List_2017.csv --images images --out data

Writes data/train/, data/test/ (hard links to the PNGs, copies where linking
is impossible), data/train_annotations.json, data/test_annotations.json,
data/split.json and data/prepare_summary.json; with --keep-normal also
data/normal/ and data/normal_annotations.json (COCO images, no annotations),
for later stages that use normal images as unlabeled or negative data. With
--normal-in-test the test split also holds --test-fraction of the normal
images (without boxes, split by the same seed; the rest stay in normal/), as
the competition's test set did.

Each image was read by three radiologists, so one lesion is usually drawn two
or three times. Per image and class the boxes are fused with Weighted Boxes
Fusion (`cxr.wbf`, iou_thr 0.2 and skip_box_thr 1e-4 as in Bencevic et al.
2022), the rows of a group taken in file order as one model of weight 1
(every box scores 1, so the readers' boxes are visited in file order). Boxes are
rescaled from the original DICOM width/height columns to the PNG's own size
(read from its header); x and y scale differently because the 512 px PNGs
were squashed to a square. COCO category_id = class_id + 1.

With --format nih the rows are NIH ChestX-ray14's boxes (`cxr.nih`): one
radiologist per image, so boxes are only checked (swapped, clipped, empty
ones dropped), not fused; they are rescaled from --original-size (1024) to
the PNG's size; findings map to VinBigData classes by
`cxr.classes.NIH_FINDINGS`; and the test split is drawn by patient, so no
patient has images on both sides.

The whole output folder is built under a temporary name and renamed into
place when complete; an existing one is refused unless --replace.
Preparation needs numpy only: torch is not imported.
"""

import csv
import io
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import cli
from .classes import (
    CLASS_NAMES,
    CSV_BOX_COLUMNS,
    CSV_SIZE_COLUMNS,
    NIH_FINDINGS,
    NO_FINDING_ID,
    NO_FINDING_NAME,
    NUM_CLASSES,
    category_id,
    coco_categories,
)
from .errors import UserError, exit_on_user_error
from .nih import patient_of, read_nih_table
from .outputs import atomic_write_json, check_output_folder, staged_directory
from .splits import split_test
from .wbf import fuse_box_groups

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMATS = ("vinbigdata", "nih")


@dataclass
class Table:
    """train.csv as arrays; row i is CSV line i + 2."""

    path: Path
    image_names: list  # distinct image ids, in order of first appearance
    image_index: np.ndarray  # (N,) int: row -> position in image_names
    class_ids: np.ndarray  # (N,) int, 0..14
    boxes: np.ndarray  # (N, 4) float, NaN on "No finding" rows
    original_sizes: np.ndarray  # (num_images, 2) width, height, or None if the CSV has none


def _line(row_index):
    return row_index + 2


def _parse_numbers(path, column, values, rows, dtype):
    """Convert `values` (strings of CSV rows `rows`) to `dtype`, naming the first bad line."""
    try:
        numbers = np.asarray(values, dtype=dtype) if len(values) else np.zeros(0, dtype)
    except ValueError:
        numbers = None
    if numbers is not None and (dtype is int or np.isfinite(numbers).all()):
        return numbers
    for row, value in zip(rows, values):
        try:
            ok = np.isfinite(dtype(value))
        except ValueError:
            ok = False
        if not ok:
            raise UserError(
                f"{path}, line {_line(row)}: column {column} is {value!r}, "
                f"expected a {'whole' if dtype is int else 'finite'} number"
            )
    raise AssertionError("unreachable: some value failed to parse")


def _read_columns(path):
    """(header, {column: list of strings}, number of rows) of a CSV file.

    A file without quotes (the real train.csv) is joined into one flat list of
    fields and sliced into columns, several times faster than splitting it
    row by row with the csv module, which is used for files with quotes."""
    try:
        text = Path(path).read_text(
            encoding="utf-8-sig"
        )  # a byte-order mark, as Excel writes, is no column
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(
            f"{path} is not a UTF-8 text file; expected VinBigData's train.csv"
        ) from None
    if '"' in text:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        lines = [",".join(row) for row in rows]
    else:
        lines = [line for line in text.splitlines() if line]
        rows = None
    if not lines:
        raise UserError(f"{path} is empty; expected a header with {', '.join(CSV_BOX_COLUMNS)}")
    header = rows[0] if rows else lines[0].split(",")
    body = rows[1:] if rows else lines[1:]
    fields = (
        [field for row in body for field in row]
        if rows
        else (",".join(body).split(",") if body else [])
    )
    if len(fields) != len(body) * len(header):
        counts = [len(row) if rows else len(row.split(",")) for row in body]
        bad = next(i for i, count in enumerate(counts) if count != len(header))
        raise UserError(
            f"{path}, line {_line(bad)}: {counts[bad]} fields, the header has {len(header)}"
        )
    return header, {name: fields[i :: len(header)] for i, name in enumerate(header)}, len(body)


def _original_sizes_per_image(path, sizes, image_index, image_names):
    """One (width, height) per image; an image listed with two sizes is an error."""
    _, first_row = np.unique(image_index, return_index=True)
    per_image = sizes[first_row]
    mismatch = np.flatnonzero((per_image[image_index] != sizes).any(axis=1))
    if len(mismatch):
        row = mismatch[0]
        raise UserError(
            f"{path}, line {_line(row)}: image {image_names[image_index[row]]} has width/height "
            f"{sizes[row].tolist()}, but {per_image[image_index[row]].tolist()} on an earlier line"
        )
    return per_image


def read_table(path):
    """Read and validate train.csv (with or without width/height columns)."""
    path = Path(path)
    header, columns, num_rows = _read_columns(path)
    missing = [c for c in CSV_BOX_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"{path} lacks column(s) {', '.join(missing)}; its header is {','.join(header)}"
        )
    size_present = [c in header for c in CSV_SIZE_COLUMNS]
    if any(size_present) and not all(size_present):
        raise UserError(f"{path} has only one of the columns width/height; give both or neither")
    if num_rows == 0:
        raise UserError(f"{path} has a header but no rows: nothing to prepare")
    all_rows = range(num_rows)
    class_ids = _parse_numbers(path, "class_id", columns["class_id"], all_rows, int)
    bad_class = np.flatnonzero((class_ids < 0) | (class_ids > NO_FINDING_ID))
    if len(bad_class):
        row = bad_class[0]
        raise UserError(
            f"{path}, line {_line(row)}: class_id {class_ids[row]} is not in 0..{NO_FINDING_ID}"
        )
    names = CLASS_NAMES + (NO_FINDING_NAME,)
    id_of_name = {name: class_id for class_id, name in enumerate(names)}
    named_ids = np.array(
        [id_of_name.get(name, -1) for name in columns["class_name"]], dtype=np.int64
    )
    wrong_name = np.flatnonzero(named_ids != class_ids)
    if len(wrong_name):
        row = wrong_name[0]
        raise UserError(
            f"{path}, line {_line(row)}: class_name {columns['class_name'][row]!r} does not "
            f"match class_id {class_ids[row]} ({names[class_ids[row]]!r})"
        )

    lesion_rows = np.flatnonzero(class_ids != NO_FINDING_ID)
    boxes = np.full((num_rows, 4), np.nan)
    for k, name in enumerate(("x_min", "y_min", "x_max", "y_max")):
        values = [columns[name][i] for i in lesion_rows]
        boxes[lesion_rows, k] = _parse_numbers(path, name, values, lesion_rows, float)

    codes = {}
    image_index = np.array(
        [codes.setdefault(name, len(codes)) for name in columns["image_id"]], dtype=np.int64
    )
    original_sizes = None
    if all(size_present):
        sizes = np.stack(
            [_parse_numbers(path, c, columns[c], all_rows, int) for c in CSV_SIZE_COLUMNS], axis=1
        )
        bad_size = np.flatnonzero((sizes <= 0).any(axis=1))
        if len(bad_size):
            row = bad_size[0]
            raise UserError(
                f"{path}, line {_line(row)}: width and height must be positive, "
                f"got {sizes[row].tolist()}"
            )
        original_sizes = _original_sizes_per_image(path, sizes, image_index, list(codes))
    return Table(path, list(codes), image_index, class_ids, boxes, original_sizes)


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every PNG ends with


def png_check(path, decode=False):
    """((width, height), None) of a complete PNG, or (None, why) if it is not one.

    Reads the IHDR header and the file's last 12 bytes, which must be the IEND
    chunk: a PNG cut short (a copy or download that stopped) is refused
    without decoding it. A file with bytes after IEND, and every file when
    `decode` is set (--verify-pixels), is decoded in full."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, 24)
        tail = os.pread(fd, 12, max(os.fstat(fd).st_size - 12, 0))
    finally:
        os.close(fd)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None, "not a PNG"
    if decode or tail != PNG_END:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, ValueError, SyntaxError) as error:
            return None, f"truncated or corrupt PNG: {error}"
    return struct.unpack(">II", head[16:24]), None


def locate_images(names, images_dir, skip_missing, log, decode=False):
    """PNG (width, height) per image name; missing, incomplete or unreadable
    files are an error naming the first few, or are dropped with --skip-missing."""
    sizes, problems = {}, []
    for name in names:
        path = os.path.join(images_dir, f"{name}.png")
        try:
            size, why = png_check(path, decode)
        except OSError as error:
            problems.append(f"{path} ({error.strerror})")
            continue
        if size is None:
            problems.append(f"{path} ({why})")
        else:
            sizes[name] = size
    if problems:
        message = (
            f"{len(problems)} of {len(names)} images listed in the CSV are missing or "
            f"unreadable in {images_dir}, e.g. " + "; ".join(problems[:5])
        )
        if not skip_missing:
            raise UserError(message + ". Fix --images, or pass --skip-missing to leave them out.")
        log(f"warning: {message}; left out (--skip-missing)")
    return sizes, len(problems)


def fuse_annotations(table, png_sizes, iou_thr, skip_box_thr, fuse=True):
    """Fused boxes per (image, class), in PNG pixels; with fuse=False (one reader
    per image, as NIH's) every box stays its own group, and only the input
    checks (swap, clip, drop empty) apply.

    Returns ({image name: [(class_id, xyxy, readers)]}, CleaningReport)."""
    png = np.zeros((len(table.image_names), 2))
    located = np.zeros(len(table.image_names), dtype=bool)
    for index, name in enumerate(table.image_names):
        if name in png_sizes:
            png[index], located[index] = png_sizes[name], True
    keep = (table.class_ids != NO_FINDING_ID) & located[table.image_index]
    image_index, class_ids = table.image_index[keep], table.class_ids[keep]
    scale = png if table.original_sizes is None else table.original_sizes.astype(np.float64)
    normalized = table.boxes[keep] / np.tile(scale[image_index], 2)

    groups = image_index * NUM_CLASSES + class_ids if fuse else np.arange(len(image_index))
    fusion = fuse_box_groups(
        normalized, np.ones(len(normalized)), groups, iou_thr=iou_thr, skip_box_thr=skip_box_thr
    )
    if fuse:
        cluster_image, cluster_class = fusion.groups // NUM_CLASSES, fusion.groups % NUM_CLASSES
    else:
        cluster_image, cluster_class = image_index[fusion.groups], class_ids[fusion.groups]
    pixels = fusion.boxes * np.tile(png[cluster_image], 2)
    annotations = {table.image_names[i]: [] for i in np.unique(image_index)}
    for index, class_id, box, readers in zip(
        cluster_image.tolist(), cluster_class.tolist(), pixels.tolist(), fusion.sizes.tolist()
    ):
        annotations[table.image_names[index]].append((class_id, box, readers))
    return annotations, fusion.report


def coco_dataset(names, png_sizes, original_sizes, annotations, info):
    """A COCO detection dict; image ids are 1..n in sorted image name order.
    original_sizes: {name: (width, height)} of the DICOMs, or None."""
    images, coco_annotations = [], []
    for number, name in enumerate(sorted(names), 1):
        width, height = png_sizes[name]
        image = {"id": number, "file_name": f"{name}.png", "width": width, "height": height}
        if original_sizes is not None:
            image["original_width"], image["original_height"] = original_sizes[name]
        images.append(image)
        for class_id, (x0, y0, x1, y1), readers in annotations.get(name, ()):
            coco_annotations.append(
                {
                    "id": len(coco_annotations) + 1,
                    "image_id": number,
                    "category_id": category_id(class_id),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "readers": readers,
                }
            )
    return {
        "info": info,
        "images": images,
        "annotations": coco_annotations,
        "categories": coco_categories(),
    }


def link_images(names, source_dir, target_dir):
    """Hard-link each PNG into target_dir (copy if linking fails); returns copies made."""
    os.mkdir(target_dir)
    copies = 0
    for name in names:
        source, target = (
            os.path.join(source_dir, f"{name}.png"),
            os.path.join(target_dir, f"{name}.png"),
        )
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            copies += 1
    return copies


def class_table(annotations_by_split, table, kept_names):
    """Rows: class, CSV box rows, fused boxes per split, mean readers per fused box."""
    kept = np.array([name in kept_names for name in table.image_names], dtype=bool)
    csv_boxes = np.bincount(table.class_ids[kept[table.image_index]], minlength=NO_FINDING_ID + 1)
    readers = {split: [[] for _ in CLASS_NAMES] for split in annotations_by_split}
    for split, per_image in annotations_by_split.items():
        for annotations in per_image.values():
            for class_id, _, count in annotations:
                readers[split][class_id].append(count)
    rows = []
    for class_id, name in enumerate(CLASS_NAMES):
        counts = [r for split in readers for r in readers[split][class_id]]
        rows.append(
            {
                "class_id": class_id,
                "class_name": name,
                "csv_boxes": int(csv_boxes[class_id]),
                **{f"fused_{split}": len(readers[split][class_id]) for split in readers},
                "mean_readers": round(float(np.mean(counts)), 2) if counts else 0.0,
            }
        )
    return rows


def format_class_table(rows):
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]

    def line(values):
        return "  ".join(
            str(v).ljust(w) if k == "class_name" else str(v).rjust(w)
            for k, v, w in zip(keys, values, widths)
        )

    return "\n".join([line(keys)] + [line([r[k] for k in keys]) for r in rows])


def read_nih(path, original_size):
    """NIH's BBox_List_2017.csv as a Table (`cxr.nih`)."""
    names, image_index, class_ids, boxes, sizes = read_nih_table(path, original_size)
    return Table(Path(path), names, image_index, class_ids, boxes, sizes)


def prepare(
    csv_path,
    images_dir,
    out,
    iou_thr=0.2,
    skip_box_thr=1e-4,
    test_fraction=0.2,
    seed=1,
    keep_normal=False,
    skip_missing=False,
    replace=False,
    normal_in_test=False,
    verify_pixels=False,
    data_format="vinbigdata",
    original_size=1024,
    log=print,
):
    """Run the whole preparation; returns the summary dict also written to disk.

    data_format 'nih' reads NIH's box file (`cxr.nih`): one reader per image,
    so boxes are not fused, and the train/test split keeps each patient's
    images on one side."""
    start = time.perf_counter()
    if data_format not in FORMATS:
        raise UserError(f"--format {data_format}: expected one of {', '.join(FORMATS)}")
    if not Path(images_dir).is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    check_output_folder(out, replace, inputs=(csv_path, images_dir))
    nih = data_format == "nih"
    table = read_nih(csv_path, original_size) if nih else read_table(csv_path)
    if nih:
        log(
            "NIH findings as VinBigData classes: "
            + ", ".join(f"{k} -> {v}" for k, v in NIH_FINDINGS.items())
        )
    elif table.original_sizes is None:
        log(f"{csv_path} has no width/height columns: boxes are taken to be in PNG pixels already")
    has_finding = np.zeros(len(table.image_names), dtype=bool)
    has_finding[table.image_index[table.class_ids != NO_FINDING_ID]] = True
    finding_names = [n for n, f in zip(table.image_names, has_finding) if f]
    if not finding_names:
        raise UserError(
            f"{csv_path}: every row is 'No finding'; a detector needs images with lesion boxes"
        )
    wants_normal = keep_normal or normal_in_test
    normal_names = (
        [n for n, f in zip(table.image_names, has_finding) if not f] if wants_normal else []
    )
    png_sizes, num_missing = locate_images(
        finding_names + normal_names, images_dir, skip_missing, log, decode=verify_pixels
    )
    finding_names = [n for n in finding_names if n in png_sizes]
    normal_names = [n for n in normal_names if n in png_sizes]
    original_sizes = (
        None
        if table.original_sizes is None
        else dict(zip(table.image_names, table.original_sizes.tolist()))
    )

    annotations, report = fuse_annotations(table, png_sizes, iou_thr, skip_box_thr, fuse=not nih)
    train_names, test_names = split_test(
        finding_names, test_fraction, seed, group_of=patient_of if nih else None
    )
    normal_names, test_normal = (
        split_test(normal_names, test_fraction, seed) if normal_in_test else (normal_names, [])
    )
    normal_names = normal_names if keep_normal else []
    split = {
        "seed": seed,
        "test_fraction": test_fraction,
        "train": train_names,
        "test": test_names,
        "test_normal": test_normal,
        "normal": sorted(normal_names),
    }
    info = {
        "description": (
            "NIH ChestX-ray14 boxes, one reader per image, split by patient"
            if nih
            else "VinBigData boxes fused per image and class with WBF"
        ),
        "source_csv": str(csv_path),
        "format": data_format,
        "iou_thr": iou_thr,
        "skip_box_thr": skip_box_thr,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    split_annotations = {
        "train": {n: annotations.get(n, []) for n in train_names},
        "test": {n: annotations.get(n, []) for n in test_names},
    }
    per_class = class_table(split_annotations, table, png_sizes)
    box_free = [n for n in finding_names if not annotations.get(n)]
    summary = {
        "format": data_format,
        "csv_rows": len(table.image_index),
        "csv_images": len(table.image_names),
        "finding_images": len(finding_names),
        "normal_images_kept": len(normal_names),
        "missing_images": num_missing,
        "train_images": len(train_names),
        "test_images": len(test_names),
        "test_normal_images": len(test_normal),
        "csv_boxes": int(sum(r["csv_boxes"] for r in per_class)),
        "fused_boxes": sum(len(a) for a in annotations.values()),
        "boxes_swapped": report.swapped,
        "boxes_clipped": report.clipped,
        "boxes_dropped_zero_area": report.zero_area,
        "boxes_below_skip_thr": report.below_threshold,
        "finding_images_left_without_boxes": len(box_free),
        "per_class": per_class,
    }

    splits = [("train", train_names), ("test", sorted(test_names + test_normal))]
    splits += [("normal", split["normal"])] if keep_normal else []
    with staged_directory(
        out, replace, inputs=(csv_path, images_dir), command="python -m cxr.prepare"
    ) as staging:
        copies = 0
        for name, names in splits:
            copies += link_images(names, images_dir, staging / name)
            dataset = coco_dataset(
                names,
                png_sizes,
                original_sizes,
                split_annotations.get(name, {}),
                {**info, "split": name},
            )
            atomic_write_json(staging / f"{name}_annotations.json", dataset)
        summary["image_copies_instead_of_links"] = copies
        summary["seconds"] = round(time.perf_counter() - start, 3)
        atomic_write_json(staging / "split.json", split)
        atomic_write_json(staging / "prepare_summary.json", summary, indent=1)

    log(
        f"read {summary['csv_rows']} rows on {summary['csv_images']} images from {csv_path}: "
        f"{len(finding_names)} with findings, {num_missing} missing"
    )
    log(format_class_table(per_class))
    log(
        f"boxes: {summary['csv_boxes']} drawn -> {summary['fused_boxes']} "
        + ("(one reader, not fused); " if nih else f"after WBF (iou_thr {iou_thr}); ")
        + f"{report.swapped} swapped, {report.clipped} clipped, {report.zero_area} zero-area "
        f"dropped, {report.below_threshold} below skip_box_thr; {len(box_free)} finding images "
        "left without boxes"
    )
    log(
        f"split (seed {seed}, test fraction {test_fraction}{' of the patients' if nih else ''}): "
        f"{len(train_names)} train, {len(test_names)} test"
        + (f" + {len(test_normal)} normal test images" if normal_in_test else "")
        + (f", {len(normal_names)} normal" if keep_normal else "")
        + f"; wrote {out} in {summary['seconds']} s"
    )
    return summary


def get_args_parser():
    parser = cli.parser(
        "python -m cxr.prepare",
        "Fuse VinBigData radiologist boxes into COCO ground truth "
        "and split the images with findings into train/test.",
    )
    parser.add_argument(
        "--format",
        default="vinbigdata",
        choices=FORMATS,
        dest="data_format",
        help="vinbigdata: the competition's train.csv; nih: NIH ChestX-ray14's BBox_List_2017.csv",
    )
    parser.add_argument(
        "--csv", required=True, help="VinBigData's train.csv, or NIH's BBox_List_2017.csv"
    )
    parser.add_argument("--images", required=True, help="folder of <image_id>.png")
    parser.add_argument(
        "--original-size",
        type=int,
        default=1024,
        help="nih: side in pixels of the images NIH's box coordinates refer to",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (refused if it exists, unless --replace)"
    )
    parser.add_argument("--iou-thr", type=float, default=0.2, help="WBF IoU threshold (paper: 0.2)")
    parser.add_argument("--skip-box-thr", type=float, default=1e-4, help="WBF score threshold")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of finding images held out"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/test permutation")
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
    if not 0.0 <= args.test_fraction < 1.0:
        parser.error(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if not 0.0 <= args.iou_thr <= 1.0:
        parser.error(f"--iou-thr must be in [0, 1], got {args.iou_thr}")
    prepare(
        args.csv,
        args.images,
        Path(args.out),
        args.iou_thr,
        args.skip_box_thr,
        args.test_fraction,
        args.seed,
        args.keep_normal,
        args.skip_missing,
        args.replace,
        args.normal_in_test,
        args.verify_pixels,
        args.data_format,
        args.original_size,
    )


if __name__ == "__main__":
    exit_on_user_error(main)
