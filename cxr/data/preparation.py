"""A box table -> COCO ground truth in each image's own pixels, and a seeded train/test split.

    python -m cxr.prepare --csv vinbigdata/train.csv --images vinbigdata/train --out data
    python -m cxr.prepare --format nih --csv BBox_List_2017.csv --images images --out data
    python -m cxr.prepare --format coco --annotations boxes.json --images images --out data

Phases: read the table (`cxr.data.vinbigdata`, `cxr.data.nih`, `cxr.data.coco_format`) ->
check the images (`cxr.data.image_files`) -> fuse several readers' boxes per
image and class with Weighted Boxes Fusion (iou_thr 0.2, as Bencevic et al.,
2022), or only clean one reader's -> rescale them to each image's pixels ->
split the images with findings into train/test (by patient where the data
has patients) -> write the folder, staged and renamed into place when
complete -> summarize. The folder holds train/ and test/ (hard links),
{split}_annotations.json with the dataset's own classes (category ids 1..K),
split.json and prepare_summary.json; with --keep-normal also normal/, the
images without findings. Needs numpy and Pillow only: torch is not imported.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.data.classes import NIH_CLASSES, NIH_FINDINGS, category_id, coco_categories
from cxr.data.coco_format import group_by, read_coco
from cxr.data.image_files import link_images, locate_images
from cxr.data.nih import read_nih_table
from cxr.data.splits import split_test
from cxr.data.vinbigdata import read_vinbigdata
from cxr.data.wbf import fuse_box_groups
from cxr.run.errors import UserError, first_few
from cxr.run.outputs import atomic_write_json, check_output_folder, staged_directory

FORMATS = ("vinbigdata", "nih", "coco")


def read_table(source, settings):
    """Phase 1: the input file as a BoxTable (`cxr.data.box_table`)."""
    if settings.data_format == "vinbigdata":
        return read_vinbigdata(source)
    if settings.data_format == "nih":
        return read_nih_table(
            source, original_size=settings.original_size, classes=settings.nih_classes
        )
    return read_coco(source, fuse=settings.fuse, patient_pattern=settings.group_pattern)


def describe_table(table, log):
    """What the table's format implies: NIH's class mapping, boxes already in pixels."""
    if table.format == "nih" and table.classes != NIH_CLASSES:
        mapping = ", ".join(f"{k} -> {v}" for k, v in NIH_FINDINGS.items())
        log(f"NIH findings as VinBigData classes: {mapping}")
    if table.reference_sizes is None:
        what = "width/height columns" if table.format == "vinbigdata" else "image sizes"
        log(f"{table.path} has no {what}: boxes are taken to be in the images' pixels already")


@dataclass
class Images:
    """Phase 2's result: the usable images, by name."""

    files: dict  # {name: file name under --images}
    sizes: dict  # {name: (width, height)} of the image files
    finding: list  # names of images with at least one box row, in table order
    normal: list  # names of images without (when asked for)
    missing: int  # images left out by --skip-missing


def select_images(table, images_dir, settings, log):
    """Phase 2: the images with findings (and the normal ones if wanted), checked."""
    want_normal = settings.keep_normal or settings.normal_in_test
    files = dict(zip(table.image_names, table.file_names))
    if len(files) < len(table.file_names):
        raise UserError(f"{table.path}: two image files share a name (a file name without suffix)")
    has_finding = np.zeros(len(table.image_names), dtype=bool)
    has_finding[table.image_index[table.class_ids >= 0]] = True
    finding = [n for n, f in zip(table.image_names, has_finding) if f]
    if not finding:
        raise UserError(f"{table.path}: no image has a box; a detector needs images with lesions")
    normal = [n for n, f in zip(table.image_names, has_finding) if not f] if want_normal else []
    wanted = [files[n] for n in finding + normal]
    by_file, missing = locate_images(
        wanted,
        images_dir,
        skip_missing=settings.skip_missing,
        source=table.path,
        log=log,
        decode=settings.verify_pixels,
    )
    sizes = {n: by_file[files[n]] for n in finding + normal if files[n] in by_file}
    if table.format == "coco" and table.reference_sizes is not None:
        check_proportions(table, sizes)
    return Images(
        files=files,
        sizes=sizes,
        finding=[n for n in finding if n in sizes],
        normal=[n for n in normal if n in sizes],
        missing=missing,
    )


def check_proportions(table, sizes):
    """A COCO entry's width and height are its image's own (COCO's definition): boxes
    are rescaled from them to the file's size, which may be a resized copy, but not
    a picture of other proportions (another image, or one cropped): refused, named."""
    wrong = []
    for name, reference in zip(table.image_names, table.reference_sizes):
        if name in sizes:
            (width, height), (their_width, their_height) = sizes[name], reference
            if abs(width / height - their_width / their_height) > 0.01 * width / height:
                wrong.append(
                    f"{name} is {width} x {height}, its entry {their_width:g} x {their_height:g}"
                )
    if wrong:
        raise UserError(
            f"{table.path}: {len(wrong)} images are not of the proportions their entries give "
            f"(their boxes could not be placed): {first_few(wrong)}"
        )


def annotate(table, sizes, *, iou_thr, skip_box_thr):
    """Phase 3: per image, [(class index, xyxy in the image's pixels, readers)]: the
    readers' boxes of each image and class fused (several readers), or each box
    on its own (one reader), after the input checks (swap, clip, drop empty).
    Returns (annotations, CleaningReport)."""
    num_classes = len(table.classes)
    image_size = np.zeros((len(table.image_names), 2))
    located = np.zeros(len(table.image_names), dtype=bool)
    for index, name in enumerate(table.image_names):
        if name in sizes:
            image_size[index], located[index] = sizes[name], True
    keep = (table.class_ids >= 0) & located[table.image_index]
    image_index, class_ids = table.image_index[keep], table.class_ids[keep]
    reference = image_size if table.reference_sizes is None else table.reference_sizes
    relative = table.boxes[keep] / np.tile(reference[image_index], 2)  # (N, 4) in [0, 1]
    fuse = table.several_readers
    groups = image_index * num_classes + class_ids if fuse else np.arange(len(image_index))
    fusion = fuse_box_groups(
        relative, np.ones(len(relative)), groups, iou_thr=iou_thr, skip_box_thr=skip_box_thr
    )
    if fuse:
        cluster_image, cluster_class = np.divmod(fusion.groups, num_classes)
    else:
        cluster_image, cluster_class = image_index[fusion.groups], class_ids[fusion.groups]
    pixels = fusion.boxes * np.tile(image_size[cluster_image], 2)
    annotations = {table.image_names[i]: [] for i in np.unique(image_index)}
    for index, class_id, box, readers in zip(
        cluster_image.tolist(), cluster_class.tolist(), pixels.tolist(), fusion.sizes.tolist()
    ):
        annotations[table.image_names[index]].append((class_id, box, readers))
    return annotations, fusion.report


@dataclass
class Split:
    """Phase 4's result: image names per split (sorted)."""

    train: list
    test: list
    test_normal: list  # normal images in the test split (--normal-in-test)
    normal: list  # normal images kept apart (--keep-normal)


def split_images(table, images, settings):
    """Phase 4: train/test by the seeded permutation, by patient when the data has them."""
    fraction, seed = settings.test_fraction, settings.seed
    group_of = group_by(table.group_pattern) if table.group_pattern else None
    train, test = split_test(images.finding, fraction, seed, group_of=group_of)
    normal, test_normal = images.normal, []
    if settings.normal_in_test:
        normal, test_normal = split_test(images.normal, fraction, seed)
    return Split(train, test, test_normal, sorted(normal) if settings.keep_normal else [])


def check_boxes(split, annotations, report, *, skip_box_thr):
    """Refuse a dataset that cannot give a result: no box to train on, or a test split
    whose images hold no box to score."""
    dropped = (
        f"{report.zero_area} zero-area boxes dropped, {report.below_threshold} below "
        f"--skip-box-thr {skip_box_thr:g}"
    )
    if not any(annotations.get(n) for n in split.train):
        raise UserError(f"no training image has a box left ({dropped}); nothing to learn from")
    if split.test and not any(annotations.get(n) for n in split.test):
        raise UserError(
            f"the {len(split.test)} test images hold no box ({dropped}); there would be "
            "nothing to score: lower --test-fraction to 0 or check the boxes"
        )


def original_sizes(table):
    """{name: (width, height)} of VinBigData's DICOMs, which a submission's boxes refer
    to (`cxr.evaluation.submission`); None for other formats."""
    if table.format != "vinbigdata" or table.reference_sizes is None:
        return None
    return {n: tuple(map(int, size)) for n, size in zip(table.image_names, table.reference_sizes)}


def coco_dataset(names, *, images, classes, originals, annotations, info):
    """A COCO detection dict of the named images; image ids 1..n in name order."""
    coco_images, coco_annotations = [], []
    for number, name in enumerate(sorted(names), 1):
        width, height = images.sizes[name]
        image = {"id": number, "file_name": images.files[name], "width": width, "height": height}
        if originals is not None:
            image["original_width"], image["original_height"] = originals[name]
        coco_images.append(image)
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
        "images": coco_images,
        "annotations": coco_annotations,
        "categories": coco_categories(classes),
    }


def class_table(table, split, annotations):
    """Rows: class, input boxes, boxes per split after fusion, mean readers per box."""
    kept = set(split.train) | set(split.test)
    rows_kept = np.array([name in kept for name in table.image_names])[table.image_index]
    input_boxes = np.bincount(
        table.class_ids[rows_kept & (table.class_ids >= 0)], minlength=len(table.classes)
    )
    counts = {side: np.zeros(len(table.classes), np.int64) for side in ("train", "test")}
    readers = np.zeros(len(table.classes))
    for side, names in (("train", split.train), ("test", split.test)):
        for name in names:
            for class_id, _, count in annotations.get(name, ()):
                counts[side][class_id] += 1
                readers[class_id] += count
    boxes = counts["train"] + counts["test"]
    return [
        {
            "class_id": class_id,
            "class_name": name,
            "input_boxes": int(input_boxes[class_id]),
            "boxes_train": int(counts["train"][class_id]),
            "boxes_test": int(counts["test"][class_id]),
            "mean_readers": round(float(readers[class_id] / max(boxes[class_id], 1)), 2),
        }
        for class_id, name in enumerate(table.classes)
    ]


def summarize(table, images, split, annotations, report):
    """Phase 6: the numbers prepare_summary.json records and the log prints."""
    per_class = class_table(table, split, annotations)
    return {
        "format": table.format,
        "classes": list(table.classes),
        "input_rows": len(table.image_index) + table.duplicates,
        "duplicate_rows_dropped": table.duplicates,
        "crowd_regions_dropped": table.crowd,
        "input_images": len(table.image_names),
        "finding_images": len(images.finding),
        "normal_images_kept": len(split.normal),
        "missing_images": images.missing,
        "train_images": len(split.train),
        "test_images": len(split.test),
        "test_normal_images": len(split.test_normal),
        "input_boxes": int(sum(r["input_boxes"] for r in per_class)),
        "boxes": sum(r["boxes_train"] + r["boxes_test"] for r in per_class),
        "fused": table.several_readers,
        "boxes_swapped": report.swapped,
        "boxes_clipped": report.clipped,
        "boxes_dropped_zero_area": report.zero_area,
        "boxes_below_skip_thr": report.below_threshold,
        "finding_images_left_without_boxes": sum(not annotations.get(n) for n in images.finding),
        "per_class": per_class,
    }


def write_folder(out, *, table, images, split, annotations, summary, settings, inputs):
    """Phase 5: the prepared folder, built under a temporary name and renamed into place
    when complete. Returns (images copied instead of linked, bytes copied)."""
    info = {
        "description": f"{table.format} boxes, "
        + ("fused with WBF" if table.several_readers else "one reader, not fused"),
        "source": str(table.path),
        "format": table.format,
        "iou_thr": settings.iou_thr,
        "skip_box_thr": settings.skip_box_thr,
        "seed": settings.seed,
        "test_fraction": settings.test_fraction,
        "group_pattern": table.group_pattern,
    }
    splits = [("train", split.train), ("test", sorted(split.test + split.test_normal))]
    splits += [("normal", split.normal)] if settings.keep_normal else []
    originals = original_sizes(table)
    copies = copied_bytes = 0
    replace = settings.replace
    with staged_directory(out, replace, inputs=inputs, command="python -m cxr.prepare") as staging:
        for name, names in splits:
            files = [images.files[n] for n in names]
            made, size = link_images(files, inputs[1], staging / name)
            copies, copied_bytes = copies + made, copied_bytes + size
            dataset = coco_dataset(
                names,
                images=images,
                classes=table.classes,
                originals=originals,
                annotations=annotations,
                info={**info, "split": name},
            )
            atomic_write_json(staging / f"{name}_annotations.json", dataset)
        split_record = {key: info[key] for key in ("seed", "test_fraction", "group_pattern")}
        atomic_write_json(staging / "split.json", {**split_record, **vars(split)})
        summary = {**summary, "image_copies_instead_of_links": copies}
        atomic_write_json(staging / "prepare_summary.json", summary, indent=1)
    return copies, copied_bytes


def log_summary(log, summary, *, source, out, copied_bytes, seconds):
    log(
        f"read {summary['input_rows']} rows on {summary['input_images']} images from {source}: "
        f"{summary['finding_images']} with findings, {summary['missing_images']} missing, "
        f"{summary['duplicate_rows_dropped']} duplicated rows dropped"
        + (
            f", {summary['crowd_regions_dropped']} crowd regions dropped"
            if summary["format"] == "coco"
            else ""
        )
    )
    log(format_class_table(summary["per_class"]))
    log(
        f"boxes: {summary['input_boxes']} drawn -> {summary['boxes']} "
        + ("after WBF; " if summary["fused"] else "(one reader, not fused); ")
        + f"{summary['boxes_swapped']} swapped, {summary['boxes_clipped']} clipped, "
        f"{summary['boxes_dropped_zero_area']} zero-area dropped, "
        f"{summary['boxes_below_skip_thr']} below skip_box_thr; "
        f"{summary['finding_images_left_without_boxes']} finding images left without boxes"
    )
    if summary["image_copies_instead_of_links"]:
        log(
            f"warning: {summary['image_copies_instead_of_links']} images copied "
            f"({copied_bytes / 1e6:.1f} MB): hard links to --images are impossible across file "
            "systems"
        )
    log(
        f"split: {summary['train_images']} train, {summary['test_images']} test"
        + (
            f" + {summary['test_normal_images']} normal test images"
            if summary["test_normal_images"]
            else ""
        )
        + (f", {summary['normal_images_kept']} normal" if summary["normal_images_kept"] else "")
        + f"; wrote {out} in {seconds:.1f} s"
    )


def format_class_table(rows):
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]

    def line(values):
        return "  ".join(
            str(v).ljust(w) if k == "class_name" else str(v).rjust(w)
            for k, v, w in zip(keys, values, widths)
        )

    return "\n".join([line(keys)] + [line([r[k] for k in keys]) for r in rows])


@dataclass(frozen=True)
class Settings:
    """prepare's options (the command line's flags)."""

    data_format: str = "vinbigdata"
    iou_thr: float = 0.2  # WBF's IoU threshold (Bencevic et al., 2022)
    skip_box_thr: float = 1e-4  # WBF's score threshold
    test_fraction: float = 0.2
    seed: int = 1  # of the train/test permutation
    keep_normal: bool = False
    normal_in_test: bool = False
    skip_missing: bool = False
    verify_pixels: bool = False
    original_size: int = 1024  # nih: the side of the images NIH's boxes refer to
    nih_classes: str = "nih"  # nih: NIH's findings, or "vinbigdata" (mapped onto VinBigData's)
    fuse: bool = False  # coco: the file holds several readers' boxes
    group_pattern: str = None  # coco: a regular expression whose first group is the patient
    replace: bool = False


def prepare(source, images_dir, out, *, log=print, **options):
    """Prepare a data folder (module docstring) with the `Settings` given as keyword
    arguments; returns the summary it writes."""
    start, settings = time.perf_counter(), Settings(**options)
    if not Path(images_dir).is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    inputs = (source, images_dir)
    check_output_folder(out, settings.replace, inputs=inputs)
    table = read_table(source, settings)
    describe_table(table, log)
    images = select_images(table, images_dir, settings, log)
    annotations, report = annotate(
        table, images.sizes, iou_thr=settings.iou_thr, skip_box_thr=settings.skip_box_thr
    )
    split = split_images(table, images, settings)
    check_boxes(split, annotations, report, skip_box_thr=settings.skip_box_thr)
    summary = summarize(table, images, split, annotations, report)
    copies, copied_bytes = write_folder(
        out,
        table=table,
        images=images,
        split=split,
        annotations=annotations,
        summary=summary,
        settings=settings,
        inputs=inputs,
    )
    summary["image_copies_instead_of_links"] = copies
    seconds = time.perf_counter() - start
    log_summary(log, summary, source=source, out=out, copied_bytes=copied_bytes, seconds=seconds)
    return summary
