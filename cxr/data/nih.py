"""NIH ChestX-ray14's box file (BBox_List_2017.csv), read into a `cxr.data.box_table.BoxTable`.

As NIH publishes it: a header `Image Index,Finding Label,Bbox [x,y,w,h],,,`
and one row per box, `00013118_008.png,Atelectasis,225.08,547.01,86.4,79.19`,
with or without trailing empty fields; x, y is the box's top-left corner in
the original 1024 x 1024 image (`original_size`). Each image was boxed by
one NIH radiologist, so its boxes are not fused. The classes are NIH's eight
findings (`cxr.data.classes.NIH_CLASSES`), or VinBigData's by
`cxr.data.classes.NIH_FINDINGS`. File names are
`<patient>_<follow-up>.png`; `PATIENT` finds the patient, so that a split
keeps a patient's images together.
"""

from pathlib import Path

import numpy as np

from cxr.data.box_table import BoxTable, drop_duplicate_rows, numbered_rows, read_table_text
from cxr.data.classes import NIH_CLASSES, NIH_FINDINGS, VINBIGDATA_CLASSES
from cxr.data.names import check_name
from cxr.run.errors import UserError

COLUMNS = ("Image Index", "Finding Label")
PATIENT = r"^([^_]+)_"  # 00013118_008 -> patient 00013118


def _rows(path):
    """(line number, row) of the CSV's rows (header first), stripped, without blank lines;
    the numbers are the file's lines, blank ones counted."""
    text = read_table_text(path, expected="NIH's BBox_List_2017.csv")
    numbered = [(line, [field.strip() for field in row]) for line, row in numbered_rows(text)]
    numbered = [(line, row) for line, row in numbered if any(row)]
    rows = [row for _, row in numbered]
    if not rows or tuple(rows[0][:2]) != COLUMNS:
        raise UserError(
            f"{path}: expected NIH's header 'Image Index,Finding Label,Bbox [x,y,w,h]', "
            f"found {','.join(rows[0])[:80] if rows else 'an empty file'}"
        )
    if len(rows) == 1:
        raise UserError(f"{path} has a header but no rows: nothing to prepare")
    return numbered


def _box_row(path, line, row):
    """(image file, finding, xyxy) of one row, checked."""
    fields = list(row)
    while fields and not fields[-1]:
        fields.pop()  # NIH's trailing empty columns
    if len(fields) != 6:
        raise UserError(
            f"{path}, line {line}: {len(fields)} fields, expected 6 (Image Index, Finding "
            "Label, x, y, w, h)"
        )
    image, finding = check_name(fields[0], f"{path}, line {line}"), fields[1]
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
    return image, finding, (x, y, x + w, y + h)


CLASS_LISTS = {"nih": NIH_CLASSES, "vinbigdata": VINBIGDATA_CLASSES}


def class_of(finding, classes):
    """The index of an NIH finding in NIH's classes or, mapped, in VinBigData's."""
    if classes == "nih":
        return NIH_CLASSES.index(finding)
    return VINBIGDATA_CLASSES.index(NIH_FINDINGS[finding])


def read_nih_table(path, *, original_size=1024, classes="nih"):
    """NIH's box file as a BoxTable, validated (errors name the line); boxes in the
    pixels of the original_size x original_size images; classes: "nih" (its eight
    findings) or "vinbigdata" (mapped by NIH_FINDINGS)."""
    path = Path(path)
    files, image_index, class_ids, boxes = {}, [], [], []
    for line, row in _rows(path)[1:]:
        image, finding, box = _box_row(path, line, row)
        image_index.append(files.setdefault(image, len(files)))
        class_ids.append(class_of(finding, classes))
        boxes.append(box)
    class_ids, boxes = np.array(class_ids), np.array(boxes, dtype=np.float64)
    table = BoxTable(
        path=path,
        format="nih",
        classes=CLASS_LISTS[classes],
        image_names=[Path(f).stem for f in files],
        file_names=list(files),
        image_index=np.array(image_index),
        class_ids=class_ids,
        boxes=boxes,
        reference_sizes=np.full((len(files), 2), original_size, dtype=np.int64),
        several_readers=False,
        group_pattern=PATIENT,
    )
    return drop_duplicate_rows(table, [class_ids[:, None], boxes])
