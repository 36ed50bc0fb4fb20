"""VinBigData's train.csv, read and validated into a `cxr.data.box_table.BoxTable`.

One row per reader box: image_id,class_name,class_id,rad_id,x_min,y_min,x_max,
y_max and, in the 512 px download, width,height (the original DICOM's size,
which the boxes refer to). "No finding" rows (class_id 14) have empty
coordinates. Each image was read by three radiologists, so its boxes are
fused in `cxr.prepare`. Errors name the CSV line; a row that repeats an
earlier one exactly is dropped and counted. Needs numpy only.
"""

from pathlib import Path

import numpy as np

from cxr.data.box_table import BoxTable, drop_duplicate_rows, numbered_rows, read_table_text
from cxr.data.classes import (
    CSV_BOX_COLUMNS,
    CSV_SIZE_COLUMNS,
    NO_FINDING_ID,
    NO_FINDING_NAME,
    VINBIGDATA_CLASSES,
)
from cxr.data.names import check_name
from cxr.run.errors import UserError


class Rows:
    """Where the body rows of a CSV file are, for errors: `at(row)` is "PATH, line N",
    N the file's line, blank lines counted."""

    def __init__(self, path, lines):
        self.path, self.lines = path, lines

    def at(self, row):
        return f"{self.path}, line {self.lines[row]}"


def _parse_numbers(rows, column, values, indexes, dtype):
    """Convert `values` (strings of the body rows `indexes` of `rows`) to `dtype`, naming
    the first bad line."""
    try:  # Python's own parse is twice numpy's for a list of strings
        numbers = np.fromiter(map(dtype, values), dtype=dtype, count=len(values))
    except ValueError:
        numbers = None
    if numbers is not None and (dtype is int or np.isfinite(numbers).all()):
        return numbers
    for row, value in zip(indexes, values):
        try:
            ok = np.isfinite(dtype(value))
        except ValueError:
            ok = False
        if not ok:
            raise UserError(
                f"{rows.at(row)}: column {column} is {value!r}, "
                f"expected a {'whole' if dtype is int else 'finite'} number"
            )


def _read_columns(path):
    """(header, {column: list of strings}, `Rows`) of a CSV file.

    A file without quotes (the real train.csv) is joined into one flat list of
    fields and sliced into columns, several times faster than splitting it
    row by row with the csv module, which is used for files with quotes."""
    text = read_table_text(path, expected="VinBigData's train.csv")
    if '"' in text:
        numbered = [(line, row) for line, row in numbered_rows(text) if row]
        rows = [row for _, row in numbered]
        lines = [",".join(row) for row in rows]
    else:
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line]
        lines = [line for _, line in numbered]
        rows = None
    located = Rows(path, [n for n, _ in numbered][1:])  # where each body row is
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
        raise UserError(f"{located.at(bad)}: {counts[bad]} fields, the header has {len(header)}")
    columns = {name: fields[i :: len(header)] for i, name in enumerate(header)}
    return header, columns, located


def _original_sizes_per_image(rows, sizes, image_index, image_names):
    """One (width, height) per image; an image listed with two sizes is an error."""
    _, first_row = np.unique(image_index, return_index=True)
    per_image = sizes[first_row]
    mismatch = np.flatnonzero((per_image[image_index] != sizes).any(axis=1))
    if len(mismatch):
        row = mismatch[0]
        raise UserError(
            f"{rows.at(row)}: image {image_names[image_index[row]]} has width/height "
            f"{sizes[row].tolist()}, but {per_image[image_index[row]].tolist()} on an earlier line"
        )
    return per_image


def _class_ids(rows, columns):
    """(N,) class_id of every row, checked against the range and the class_name column."""
    indexes = range(len(rows.lines))
    class_ids = _parse_numbers(rows, "class_id", columns["class_id"], indexes, int)
    bad_class = np.flatnonzero((class_ids < 0) | (class_ids > NO_FINDING_ID))
    if len(bad_class):
        row = bad_class[0]
        raise UserError(f"{rows.at(row)}: class_id {class_ids[row]} is not in 0..{NO_FINDING_ID}")
    names = VINBIGDATA_CLASSES + (NO_FINDING_NAME,)
    id_of_name = {name: class_id for class_id, name in enumerate(names)}
    named_ids = np.array(
        [id_of_name.get(name, -1) for name in columns["class_name"]], dtype=np.int64
    )
    wrong_name = np.flatnonzero(named_ids != class_ids)
    if len(wrong_name):
        row = wrong_name[0]
        raise UserError(
            f"{rows.at(row)}: class_name {columns['class_name'][row]!r} does not "
            f"match class_id {class_ids[row]} ({names[class_ids[row]]!r})"
        )
    return class_ids


def _boxes(rows, columns, class_ids):
    """(N, 4) xyxy of every row; NaN on the "No finding" rows."""
    lesion_rows = np.flatnonzero(class_ids != NO_FINDING_ID)
    boxes = np.full((len(class_ids), 4), np.nan)
    for k, name in enumerate(("x_min", "y_min", "x_max", "y_max")):
        values = [columns[name][i] for i in lesion_rows]
        boxes[lesion_rows, k] = _parse_numbers(rows, name, values, lesion_rows, float)
    return boxes


def _image_index(rows, columns):
    """({image name: position}, (N,) position of each row's image); names checked once."""
    codes = {}
    for row, name in enumerate(columns["image_id"]):
        if name not in codes:
            codes[name] = len(codes)
            check_name(name, rows.at(row))
    return codes, np.array([codes[name] for name in columns["image_id"]], dtype=np.int64)


def _original_sizes(rows, columns, image_index, image_names):
    """(images, 2) width, height of each image's DICOM, checked."""
    indexes = range(len(image_index))
    sizes = np.stack(
        [_parse_numbers(rows, c, columns[c], indexes, int) for c in CSV_SIZE_COLUMNS], 1
    )
    bad_size = np.flatnonzero((sizes <= 0).any(axis=1))
    if len(bad_size):
        row = bad_size[0]
        raise UserError(
            f"{rows.at(row)}: width and height must be positive, got {sizes[row].tolist()}"
        )
    return _original_sizes_per_image(rows, sizes, image_index, image_names)


def read_vinbigdata(path):
    """Read and validate train.csv (with or without width/height columns) into a BoxTable."""
    path = Path(path)
    header, columns, rows = _read_columns(path)
    missing = [c for c in CSV_BOX_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"{path} lacks column(s) {', '.join(missing)}; its header is {','.join(header)}"
        )
    size_present = [c in header for c in CSV_SIZE_COLUMNS]
    if any(size_present) and not all(size_present):
        raise UserError(f"{path} has only one of the columns width/height; give both or neither")
    if not rows.lines:
        raise UserError(f"{path} has a header but no rows: nothing to prepare")
    class_ids = _class_ids(rows, columns)
    boxes = _boxes(rows, columns, class_ids)
    codes, image_index = _image_index(rows, columns)
    sizes = _original_sizes(rows, columns, image_index, list(codes)) if all(size_present) else None
    readers = np.unique(np.asarray(columns["rad_id"]), return_inverse=True)[1]
    table = BoxTable(
        path=path,
        format="vinbigdata",
        classes=VINBIGDATA_CLASSES,
        image_names=list(codes),
        file_names=[f"{name}.png" for name in codes],
        image_index=image_index,
        class_ids=np.where(class_ids == NO_FINDING_ID, -1, class_ids),
        boxes=boxes,
        reference_sizes=sizes,
        several_readers=True,
    )
    return drop_duplicate_rows(table, [class_ids[:, None], readers[:, None], boxes])
