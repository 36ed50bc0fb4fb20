"""NIH ChestX-ray14's box file (BBox_List_2017.csv) read into the same table
that VinBigData's train.csv gives (`cxr.prepare.Table`).

The file, as NIH publishes it: a header `Image Index,Finding Label,Bbox
[x,y,w,h],,,` (the box's four numbers under one split-up name, then empty
columns), and one row per box, `00013118_008.png,Atelectasis,225.08,547.01,
86.4,79.19`, with or without trailing empty fields; x, y is the box's top-left
corner in the original 1024 x 1024 image (`original_size`). Each image was
boxed by one NIH radiologist. Findings become VinBigData classes by
`cxr.classes.NIH_FINDINGS`. File names are `<patient>_<follow-up>.png`;
`patient_of` gives the patient, so that a split can keep a patient's images
together.
"""

import csv
import io
from pathlib import Path

import numpy as np

from .classes import CLASS_NAMES, NIH_FINDINGS
from .errors import UserError

COLUMNS = ("Image Index", "Finding Label")


def patient_of(image_name):
    """The patient id of an NIH image name: 00013118_008 -> 00013118."""
    return image_name.split("_")[0]


def read_nih_table(path, original_size=1024):
    """(image names, image index per row, class id per row, xyxy boxes in original
    pixels, original sizes per image), validated; errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(
            f"{path} is not a UTF-8 text file; expected NIH's BBox_List_2017.csv"
        ) from None
    rows = [[field.strip() for field in row] for row in csv.reader(io.StringIO(text))]
    rows = [row for row in rows if any(row)]
    if not rows or tuple(rows[0][:2]) != COLUMNS:
        raise UserError(
            f"{path}: expected NIH's header 'Image Index,Finding Label,Bbox [x,y,w,h]', "
            f"found {','.join(rows[0]) if rows else 'an empty file'}"
        )
    if len(rows) == 1:
        raise UserError(f"{path} has a header but no rows: nothing to prepare")
    names, image_index, class_ids, boxes = {}, [], [], []
    for line, row in enumerate(rows[1:], start=2):
        fields = list(row)
        while fields and not fields[-1]:
            fields.pop()  # NIH's trailing empty columns
        if len(fields) != 6:
            raise UserError(
                f"{path}, line {line}: {len(fields)} fields, expected 6 (Image Index, Finding "
                "Label, x, y, w, h)"
            )
        image, finding = fields[0], fields[1]
        if finding not in NIH_FINDINGS:
            raise UserError(
                f"{path}, line {line}: finding {finding!r} is not one of NIH's "
                f"{', '.join(sorted(NIH_FINDINGS))}"
            )
        try:
            x, y, w, h = (float(value) for value in fields[2:])
        except ValueError:
            raise UserError(
                f"{path}, line {line}: the box {','.join(fields[2:])} is not four numbers"
            ) from None
        if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
            raise UserError(
                f"{path}, line {line}: the box needs finite numbers and a positive width and "
                f"height, got x={x}, y={y}, w={w}, h={h}"
            )
        image_index.append(names.setdefault(Path(image).stem, len(names)))
        class_ids.append(CLASS_NAMES.index(NIH_FINDINGS[finding]))
        boxes.append((x, y, x + w, y + h))
    sizes = np.full((len(names), 2), original_size, dtype=np.int64)
    return (
        list(names),
        np.array(image_index),
        np.array(class_ids),
        np.array(boxes, dtype=np.float64),
        sizes,
    )
