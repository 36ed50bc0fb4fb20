"""Any COCO detection file (an annotation tool's export, ChestX-Det, TBX11K), read
into a `cxr.data.box_table.BoxTable` with the file's own classes.

The classes are the file's categories, names and order kept (they become
category ids 1..K in that order, whatever ids the file used). Each image's
file_name must be a bare file name under --images; its width and height,
when given, are the pixels its boxes refer to (they are rescaled to the
image file's own size), else the boxes are taken to be in the file's pixels.
An image without annotations is a normal film. Crowd annotations (iscrowd
1) mark regions to ignore, not lesions: they are dropped and counted. Each
box must have finite coordinates and a positive width and height. Several
boxes of one class on one image are kept as they are (one reader), or fused
with `--fuse` when the file holds several readers' boxes.
"""

import argparse
import math
import re
from pathlib import Path

import numpy as np

from cxr.data.box_table import BoxTable, drop_duplicate_rows
from cxr.data.names import check_name
from cxr.run.errors import UserError
from cxr.run.reading import json_object, read_json, type_name

WHAT = "a COCO detection file"


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _positive_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def check_coco(coco, path):
    """`coco` if its structure is a COCO detection file's: an object of three lists of
    objects, ids that are whole numbers or strings (image ids of one kind), widths and
    heights that are positive numbers; else one UserError naming the entry."""
    json_object(coco, source=path, what=WHAT, keys=("images", "annotations", "categories"))
    fields = {"images": ("id",), "categories": ("id",), "annotations": ("image_id", "category_id")}
    for key, ids in fields.items():
        if not isinstance(coco[key], list):
            raise UserError(f"{path}: {key!r} must be a list, found {type_name(coco[key])}")
        for number, entry in enumerate(coco[key]):
            if not isinstance(entry, dict):
                raise UserError(
                    f"{path}, {key}[{number}]: expected an object, found {type_name(entry)}"
                )
            for field in ids:
                if field in entry and not _is_id(entry[field]):
                    raise UserError(
                        f"{path}, {key}[{number}]: {field} {entry[field]!r} must be a whole "
                        "number or a string"
                    )
            for field in ("width", "height") if key == "images" else ():
                if entry.get(field) is not None and not _positive_number(entry[field]):
                    raise UserError(
                        f"{path}, images[{number}]: {field} {entry[field]!r} must be a positive "
                        "number"
                    )
    for key in ("images", "categories"):
        if len({type(entry["id"]) for entry in coco[key] if "id" in entry}) > 1:
            raise UserError(f"{path}: the {key[:-1]} ids mix numbers and strings")
    return coco


def check_ground_truth(coco, path):
    """`coco` checked as an evaluation's ground truth (`check_coco`, then every box of a
    listed image and category, four finite numbers); pycocotools' area and iscrowd filled in
    where a file leaves them out."""
    check_coco(coco, path)
    for key in ("images", "categories"):
        for number, entry in enumerate(coco[key]):
            if "id" not in entry:
                raise UserError(f"{path}, {key}[{number}]: it has no id")
    images = {image["id"] for image in coco["images"]}
    categories = {category["id"] for category in coco["categories"]}
    for number, annotation in enumerate(coco["annotations"]):
        where = _listed(path, number, annotation, images, categories)
        x_min, y_min, x_max, y_max = _box(where, annotation)
        annotation.setdefault("area", (x_max - x_min) * (y_max - y_min))
        annotation.setdefault("iscrowd", 0)
    return coco


def _load(path):
    coco = check_coco(read_json(path, what=WHAT), path)
    if not coco["categories"]:
        raise UserError(f"{path} has no categories: nothing to detect")
    if not coco["images"]:
        raise UserError(f"{path} has no images: nothing to prepare")
    return coco


def _classes(path, categories):
    """({file's category id: class index}, class names in the file's order)."""
    index, names = {}, []
    for number, category in enumerate(categories):
        where = f"{path}, categories[{number}]"
        if "id" not in category or not str(category.get("name", "")).strip():
            raise UserError(f"{where}: a category needs an id and a name")
        if category["id"] in index or category["name"] in names:
            raise UserError(f"{where}: id {category['id']} or name {category['name']!r} repeats")
        index[category["id"]] = len(names)
        names.append(str(category["name"]))
    return index, tuple(names)


def _images(path, images):
    """({image id: position}, file names, (images, 2) reference sizes or None)."""
    position, files, sizes = {}, [], []
    for number, image in enumerate(images):
        where = f"{path}, images[{number}]"
        if "id" not in image or image["id"] in position:
            raise UserError(f"{where}: every image needs an id of its own")
        position[image["id"]] = len(files)
        files.append(check_name(str(image.get("file_name", "")), where))
        width, height = image.get("width"), image.get("height")
        if width is not None or height is not None:
            if not all(isinstance(v, (int, float)) and v > 0 for v in (width, height)):
                raise UserError(f"{where}: width and height must be positive numbers")
            sizes.append((width, height))
    if sizes and len(sizes) != len(files):
        raise UserError(f"{path}: some images give width and height and others do not")
    return position, files, (np.array(sizes, dtype=np.float64) if sizes else None)


def _listed(path, number, annotation, images, categories):
    """'PATH, annotations[N]' of an annotation whose image and category are listed."""
    where = f"{path}, annotations[{number}]"
    if annotation.get("image_id") not in images:
        raise UserError(f"{where}: image_id {annotation.get('image_id')!r} is not an image")
    if annotation.get("category_id") not in categories:
        raise UserError(f"{where}: category_id {annotation.get('category_id')!r} is unknown")
    return where


def _box(where, annotation):
    """xyxy of a COCO annotation's [x, y, w, h], checked."""
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise UserError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        raise UserError(f"{where}: bbox {bbox} needs four finite numbers")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise UserError(f"{where}: bbox {bbox} needs a positive width and height")
    return (x, y, x + w, y + h)


def group_by(pattern):
    """image name -> the first group of the regular expression `pattern` (a patient,
    kept on one side of a split); a name it does not match is an error."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserError(f"--group-by {pattern!r} is not a regular expression: {error}") from None
    if regex.groups < 1:
        raise UserError(f"--group-by {pattern!r} needs a group, e.g. '^([0-9]+)_'")

    def group_of(name):
        match = regex.search(name)
        if match is None or match.group(1) is None:
            raise UserError(f"--group-by {pattern!r} finds no patient in the image name {name!r}")
        return match.group(1)

    return group_of


def group_pattern(text):
    """argparse type of --group-by: a regular expression with a group (`group_by`)."""
    try:
        group_by(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def read_coco(path, *, fuse=False, patient_pattern=None):
    """A COCO detection file as a BoxTable; fuse: it holds several readers' boxes."""
    path = Path(path)
    coco = _load(path)
    class_of, classes = _classes(path, coco["categories"])
    position, files, sizes = _images(path, coco["images"])
    image_index, class_ids, boxes, crowd = [], [], [], 0
    for number, annotation in enumerate(coco["annotations"]):
        where = _listed(path, number, annotation, position, class_of)
        if annotation.get("iscrowd", 0):
            crowd += 1
            continue
        image_index.append(position[annotation["image_id"]])
        class_ids.append(class_of[annotation["category_id"]])
        boxes.append(_box(where, annotation))
    boxed = set(image_index)
    normal = [i for i in range(len(files)) if i not in boxed]  # one row without a box each
    table = BoxTable(
        path=path,
        format="coco",
        classes=classes,
        image_names=[Path(f).stem for f in files],
        file_names=files,
        image_index=np.array(image_index + normal, dtype=np.int64),
        class_ids=np.array(class_ids + [-1] * len(normal), dtype=np.int64),
        boxes=np.array(boxes + [(np.nan,) * 4] * len(normal), dtype=np.float64).reshape(-1, 4),
        reference_sizes=sizes,
        several_readers=fuse,
        group_pattern=patient_pattern,
        crowd=crowd,
    )
    return drop_duplicate_rows(table, [table.class_ids[:, None], table.boxes])
