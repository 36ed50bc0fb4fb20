"""VinBigData train.csv -> fused COCO ground truth and a seeded train/test split.

    python -m cxr.prepare --csv vinbigdata/train.csv --images vinbigdata/train --out data

Writes data/train/, data/test/ (hard links to the PNGs, copies where linking
is impossible), data/train_annotations.json, data/test_annotations.json,
data/split.json and data/prepare_summary.json; with --keep-normal also
data/normal/ and data/normal_annotations.json (COCO images, no annotations),
for later stages that use normal images as unlabeled or negative data.

Each image was read by three radiologists, so one lesion is usually drawn two
or three times. Per image and class the boxes are fused with Weighted Boxes
Fusion (`cxr.wbf`, iou_thr 0.2 and skip_box_thr 1e-4 as in Bencevic et al.
2022), the rows of a group taken in file order as one model, exactly as one
ensemble-boxes call per image with each class as one model would. Boxes are
rescaled from the original DICOM width/height columns to the PNG's own size
(read from its header); x and y scale differently because the 512 px PNGs
were squashed to a square. COCO category_id = class_id + 1.

The whole output folder is built under a temporary name and renamed into
place when complete; an existing one is refused unless --replace.
Preparation needs numpy only: torch is not imported.
"""

import argparse
import csv
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import CLASS_NAMES, NO_FINDING_ID, NO_FINDING_NAME, NUM_CLASSES, category_id, coco_categories
from .errors import UserError, exit_on_user_error
from .outputs import atomic_write_json, staged_directory
from .splits import split_test
from .wbf import fuse_box_groups

REQUIRED_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
SIZE_COLUMNS = ("width", "height")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Table:
    """train.csv as arrays; row i is CSV line i + 2."""

    path: Path
    image_ids: np.ndarray          # (N,) str
    class_ids: np.ndarray          # (N,) int, 0..14
    boxes: np.ndarray              # (N, 4) float, NaN on "No finding" rows
    original_sizes: np.ndarray     # (N, 2) width, height, or None if the CSV has none


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
            raise UserError(f"{path}, line {_line(row)}: column {column} is {value!r}, "
                            f"expected a {'whole' if dtype is int else 'finite'} number")
    raise AssertionError("unreachable: some value failed to parse")


def read_table(path):
    """Read and validate train.csv (with or without width/height columns)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            body = list(reader)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    if header is None:
        raise UserError(f"{path} is empty; expected a header with {', '.join(REQUIRED_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; its header is {','.join(header)}")
    size_present = [c in header for c in SIZE_COLUMNS]
    if any(size_present) and not all(size_present):
        raise UserError(f"{path} has only one of the columns width/height; give both or neither")
    short = next((i for i, row in enumerate(body) if len(row) != len(header)), None)
    if short is not None:
        raise UserError(f"{path}, line {_line(short)}: {len(body[short])} fields, "
                        f"the header has {len(header)}")

    columns = {name: [row[i] for row in body] for i, name in enumerate(header)}
    all_rows = range(len(body))
    class_ids = _parse_numbers(path, "class_id", columns["class_id"], all_rows, int)
    bad_class = np.flatnonzero((class_ids < 0) | (class_ids > NO_FINDING_ID))
    if len(bad_class):
        row = bad_class[0]
        raise UserError(f"{path}, line {_line(row)}: class_id {class_ids[row]} is not in 0..{NO_FINDING_ID}")
    expected_names = np.array(CLASS_NAMES + (NO_FINDING_NAME,))[class_ids]
    wrong_name = np.flatnonzero(np.asarray(columns["class_name"]) != expected_names)
    if len(wrong_name):
        row = wrong_name[0]
        raise UserError(f"{path}, line {_line(row)}: class_name {columns['class_name'][row]!r} does not "
                        f"match class_id {class_ids[row]} ({expected_names[row]!r})")

    lesion_rows = np.flatnonzero(class_ids != NO_FINDING_ID)
    boxes = np.full((len(body), 4), np.nan)
    for k, name in enumerate(("x_min", "y_min", "x_max", "y_max")):
        values = [columns[name][i] for i in lesion_rows]
        boxes[lesion_rows, k] = _parse_numbers(path, name, values, lesion_rows, float)

    original_sizes = None
    if all(size_present):
        original_sizes = np.stack([_parse_numbers(path, c, columns[c], all_rows, int)
                                   for c in SIZE_COLUMNS], axis=1)
        bad_size = np.flatnonzero((original_sizes <= 0).any(axis=1))
        if len(bad_size):
            row = bad_size[0]
            raise UserError(f"{path}, line {_line(row)}: width and height must be positive, "
                            f"got {original_sizes[row].tolist()}")
    return Table(path, np.asarray(columns["image_id"]), class_ids, boxes, original_sizes)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, reading 24 bytes, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def locate_images(image_ids, images_dir, skip_missing, log):
    """PNG (width, height) per image id; missing or unreadable files are an
    error naming the first few, or are dropped with --skip-missing."""
    sizes, problems = {}, []
    for image_id in image_ids:
        path = Path(images_dir) / f"{image_id}.png"
        try:
            size = png_size(path)
        except OSError as error:
            problems.append(f"{path} ({error.strerror})")
            continue
        if size is None:
            problems.append(f"{path} (not a PNG)")
        else:
            sizes[image_id] = size
    if problems:
        message = (f"{len(problems)} of {len(image_ids)} images listed in the CSV are missing or "
                   f"unreadable in {images_dir}, e.g. " + "; ".join(problems[:5]))
        if not skip_missing:
            raise UserError(message + ". Fix --images, or pass --skip-missing to leave them out.")
        log(f"warning: {message}; left out (--skip-missing)")
    return sizes, len(problems)


def _consistent_original_sizes(table):
    """One (width, height) per image id; an image listed with two sizes is an error."""
    ids, first = np.unique(table.image_ids, return_index=True)
    per_image = dict(zip(ids, table.original_sizes[first]))
    mismatch = np.flatnonzero((np.array([per_image[i] for i in table.image_ids])
                               != table.original_sizes).any(axis=1))
    if len(mismatch):
        row = mismatch[0]
        raise UserError(f"{table.path}, line {_line(row)}: image {table.image_ids[row]} has width/height "
                        f"{table.original_sizes[row].tolist()}, but {per_image[table.image_ids[row]].tolist()} "
                        "on an earlier line")
    return per_image


def fuse_annotations(table, png_sizes, iou_thr, skip_box_thr):
    """Fused boxes per (image, class), in PNG pixels.

    Returns (annotations: {image_id: [(class_id, xyxy, readers)]}, report)."""
    keep = (table.class_ids != NO_FINDING_ID) & np.isin(table.image_ids, list(png_sizes))
    image_ids, class_ids, boxes = table.image_ids[keep], table.class_ids[keep], table.boxes[keep]
    png = np.array([png_sizes[i] for i in image_ids], dtype=np.float64).reshape(-1, 2)
    scale = png if table.original_sizes is None else table.original_sizes[keep].astype(np.float64)
    normalized = boxes / np.tile(scale, 2)

    unique_ids, image_index = np.unique(image_ids, return_inverse=True)
    fusion = fuse_box_groups(normalized, np.ones(len(boxes)), image_index * NUM_CLASSES + class_ids,
                             iou_thr=iou_thr, skip_box_thr=skip_box_thr)
    image_of_cluster = unique_ids[fusion.groups // NUM_CLASSES]
    class_of_cluster = fusion.groups % NUM_CLASSES
    png_of_cluster = np.array([png_sizes[i] for i in image_of_cluster], dtype=np.float64).reshape(-1, 2)
    pixels = fusion.boxes * np.tile(png_of_cluster, 2)
    annotations = {image_id: [] for image_id in unique_ids}
    for image_id, class_id, box, readers in zip(image_of_cluster, class_of_cluster, pixels, fusion.sizes):
        annotations[image_id].append((int(class_id), box.tolist(), int(readers)))
    return annotations, fusion.report


def coco_dataset(image_ids, png_sizes, original_sizes, annotations, info):
    """A COCO detection dict; image ids are 1..n in sorted image_id order."""
    images, coco_annotations = [], []
    for number, image_id in enumerate(sorted(image_ids), 1):
        width, height = png_sizes[image_id]
        image = {"id": number, "file_name": f"{image_id}.png", "width": width, "height": height}
        if original_sizes is not None:
            image["original_width"], image["original_height"] = map(int, original_sizes[image_id])
        images.append(image)
        for class_id, (x0, y0, x1, y1), readers in annotations.get(image_id, ()):
            coco_annotations.append({
                "id": len(coco_annotations) + 1, "image_id": number, "category_id": category_id(class_id),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                "readers": readers,
            })
    return {"info": info, "images": images, "annotations": coco_annotations,
            "categories": coco_categories()}


def link_images(image_ids, source_dir, target_dir):
    """Hard-link each PNG into target_dir (copy if linking fails); returns copies made."""
    target_dir.mkdir()
    copies = 0
    for image_id in image_ids:
        source, target = Path(source_dir) / f"{image_id}.png", target_dir / f"{image_id}.png"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            copies += 1
    return copies


def class_table(annotations_by_split, table, kept_images):
    """Rows: class, CSV box rows, fused boxes per split, mean readers per fused box."""
    in_kept = np.isin(table.image_ids, list(kept_images))
    rows = []
    for class_id, name in enumerate(CLASS_NAMES):
        csv_rows = int(((table.class_ids == class_id) & in_kept).sum())
        fused = {split: [r for anns in per_image.values() for c, _, r in anns if c == class_id]
                 for split, per_image in annotations_by_split.items()}
        readers = [r for values in fused.values() for r in values]
        rows.append({"class_id": class_id, "class_name": name, "csv_boxes": csv_rows,
                     **{f"fused_{split}": len(v) for split, v in fused.items()},
                     "mean_readers": round(float(np.mean(readers)), 2) if readers else 0.0})
    return rows


def format_class_table(rows):
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    line = lambda values: "  ".join(str(v).rjust(w) if i != 1 else str(v).ljust(w)
                                    for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(keys)] + [line([r[k] for k in keys]) for r in rows])


def prepare(csv_path, images_dir, out, iou_thr=0.2, skip_box_thr=1e-4, test_fraction=0.2, seed=1,
            keep_normal=False, skip_missing=False, replace=False, log=print):
    """Run the whole preparation; returns the summary dict also written to disk."""
    start = time.perf_counter()
    if not Path(images_dir).is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    table = read_table(csv_path)
    if table.original_sizes is None:
        log(f"{csv_path} has no width/height columns: boxes are taken to be in PNG pixels already")
    finding_ids = sorted(set(table.image_ids[table.class_ids != NO_FINDING_ID]))
    normal_ids = sorted(set(table.image_ids) - set(finding_ids)) if keep_normal else []
    png_sizes, num_missing = locate_images(finding_ids + normal_ids, images_dir, skip_missing, log)
    finding_ids = [i for i in finding_ids if i in png_sizes]
    normal_ids = [i for i in normal_ids if i in png_sizes]
    original_sizes = None if table.original_sizes is None else _consistent_original_sizes(table)

    annotations, report = fuse_annotations(table, png_sizes, iou_thr, skip_box_thr)
    train_ids, test_ids = split_test(finding_ids, test_fraction, seed)
    split = {"seed": seed, "test_fraction": test_fraction, "train": train_ids, "test": test_ids,
             "normal": normal_ids}
    info = {"description": "VinBigData boxes fused per image and class with WBF", "source_csv": str(csv_path),
            "iou_thr": iou_thr, "skip_box_thr": skip_box_thr, "seed": seed, "test_fraction": test_fraction}
    split_annotations = {"train": {i: annotations.get(i, []) for i in train_ids},
                         "test": {i: annotations.get(i, []) for i in test_ids}}
    per_class = class_table(split_annotations, table, png_sizes)
    box_free = [i for i in finding_ids if not annotations.get(i)]
    summary = {
        "csv_rows": len(table.image_ids), "csv_images": len(set(table.image_ids)),
        "finding_images": len(finding_ids), "normal_images_kept": len(normal_ids),
        "missing_images": num_missing, "train_images": len(train_ids), "test_images": len(test_ids),
        "csv_boxes": int(sum(r["csv_boxes"] for r in per_class)),
        "fused_boxes": sum(len(a) for a in annotations.values()),
        "boxes_swapped": report.swapped, "boxes_clipped": report.clipped,
        "boxes_dropped_zero_area": report.zero_area, "boxes_below_skip_thr": report.below_threshold,
        "finding_images_left_without_boxes": len(box_free), "per_class": per_class,
    }

    with staged_directory(out, replace) as staging:
        copies = 0
        for name, ids in (("train", train_ids), ("test", test_ids)) + ((("normal", normal_ids),) if keep_normal else ()):
            copies += link_images(ids, images_dir, staging / name)
            dataset = coco_dataset(ids, png_sizes, original_sizes, split_annotations.get(name, {}),
                                   {**info, "split": name})
            atomic_write_json(staging / f"{name}_annotations.json", dataset)
        summary["image_copies_instead_of_links"] = copies
        summary["seconds"] = round(time.perf_counter() - start, 3)
        atomic_write_json(staging / "split.json", split, indent=1)
        atomic_write_json(staging / "prepare_summary.json", summary, indent=1)

    log(f"read {summary['csv_rows']} rows on {summary['csv_images']} images from {csv_path}: "
        f"{len(finding_ids)} with findings, {num_missing} missing")
    log(format_class_table(per_class))
    log(f"boxes: {summary['csv_boxes']} drawn -> {summary['fused_boxes']} after WBF (iou_thr {iou_thr}); "
        f"{report.swapped} swapped, {report.clipped} clipped, {report.zero_area} zero-area dropped, "
        f"{report.below_threshold} below skip_box_thr; {len(box_free)} finding images left without boxes")
    log(f"split (seed {seed}, test fraction {test_fraction}): {len(train_ids)} train, {len(test_ids)} test"
        + (f", {len(normal_ids)} normal" if keep_normal else "") + f"; wrote {out} in {summary['seconds']} s")
    return summary


def get_args_parser():
    parser = argparse.ArgumentParser(description="Fuse VinBigData radiologist boxes into COCO ground truth "
                                                 "and split the images with findings into train/test.")
    parser.add_argument("--csv", required=True, help="VinBigData train.csv")
    parser.add_argument("--images", required=True, help="folder of <image_id>.png")
    parser.add_argument("--out", required=True, help="output folder (refused if it exists, unless --replace)")
    parser.add_argument("--iou-thr", type=float, default=0.2, help="WBF IoU threshold (paper: 0.2)")
    parser.add_argument("--skip-box-thr", type=float, default=1e-4, help="WBF score threshold")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of finding images held out")
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/test permutation")
    parser.add_argument("--keep-normal", action="store_true",
                        help="also write normal/ and normal_annotations.json (images without findings)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out images that are listed but missing, instead of stopping")
    parser.add_argument("--replace", action="store_true", help="overwrite an existing --out")
    return parser


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.test_fraction < 1.0:
        parser.error(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if not 0.0 <= args.iou_thr <= 1.0:
        parser.error(f"--iou-thr must be in [0, 1], got {args.iou_thr}")
    prepare(args.csv, args.images, Path(args.out), args.iou_thr, args.skip_box_thr, args.test_fraction,
            args.seed, args.keep_normal, args.skip_missing, args.replace)


if __name__ == "__main__":
    exit_on_user_error(main)
