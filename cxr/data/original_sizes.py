"""The original sizes of images, which a submission's boxes refer to: a CSV
image_id,width,height or image_id,dim0,dim1 (the 512 px download's
test_meta.csv; dim0 is the height), or a COCO JSON written by
`python -m cxr.prepare` (its original_width and original_height).
"""

import csv
from pathlib import Path

from cxr.data.coco_format import check_coco
from cxr.run.errors import UserError
from cxr.run.reading import read_json


def _positive_int(value, where, column):
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        number = 0
    if number <= 0 or isinstance(value, bool):
        raise UserError(f"{where}: {column} must be a positive number of pixels, got {value!r}")
    return number


def read_original_sizes(path):
    """{image_id: (width, height)} from a meta CSV or a cxr.prepare COCO JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--original-sizes {path}: file not found")
    if path.suffix == ".json":
        coco = check_coco(read_json(path, what="a COCO file of cxr.prepare"), path)
        sizes = {}
        for number, image in enumerate(coco["images"]):
            if "original_width" in image:
                where = f"{path}, images[{number}]"
                sizes[Path(str(image.get("file_name", ""))).stem] = (
                    _positive_int(image["original_width"], where, "original_width"),
                    _positive_int(image.get("original_height"), where, "original_height"),
                )
        return sizes
    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is no column
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        if {"image_id", "width", "height"} <= columns:
            width_key, height_key = "width", "height"
        elif {"image_id", "dim0", "dim1"} <= columns:
            width_key, height_key = "dim1", "dim0"
        else:
            raise UserError(
                f"{path}: expected columns image_id,width,height or image_id,dim0,dim1; "
                f"found {','.join(reader.fieldnames or ())}"
            )
        sizes = {}
        for row in reader:
            where = f"{path}, line {reader.line_num}"  # the file's line, blank lines counted
            sizes[row["image_id"]] = (
                _positive_int(row[width_key], where, width_key),
                _positive_int(row[height_key], where, height_key),
            )
        return sizes
