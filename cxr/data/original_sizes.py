"""The original sizes of images, which a submission's boxes refer to: a CSV
image_id,width,height or image_id,dim0,dim1 (the 512 px download's
test_meta.csv; dim0 is the height), or a COCO JSON written by
`python -m cxr.prepare` (its original_width and original_height).
"""

import csv
import json
from pathlib import Path

from cxr.run.errors import UserError


def _positive_int(value, path, line, column):
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        number = 0
    if number <= 0:
        raise UserError(
            f"{path}, line {line}: {column} must be a positive number of pixels, got {value!r}"
        )
    return number


def read_original_sizes(path):
    """{image_id: (width, height)} from a meta CSV or a cxr.prepare COCO JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--original-sizes {path}: file not found")
    if path.suffix == ".json":
        images = json.loads(path.read_text()).get("images", [])
        return {
            Path(i["file_name"]).stem: (i["original_width"], i["original_height"])
            for i in images
            if "original_width" in i
        }
    with open(path, newline="") as f:
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
        return {
            row["image_id"]: (
                _positive_int(row[width_key], path, line, width_key),
                _positive_int(row[height_key], path, line, height_key),
            )
            for line, row in enumerate(reader, start=2)
        }
