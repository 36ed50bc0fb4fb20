"""The rows every input format is read into: one row per box, or per image without one.

`cxr.data.vinbigdata`, `cxr.data.nih` and `cxr.data.coco_format` read their files into a
`BoxTable`; `cxr.prepare` checks the images, fuses or cleans the boxes and
splits the images from it, whatever the format.
"""

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from cxr.run.errors import UserError


def read_table_text(path, *, expected):
    """The text of a table file; a byte-order mark (as Excel writes) is dropped, and an
    unreadable or non-UTF-8 file is one error naming what was `expected`."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; expected {expected}") from None


@dataclass
class BoxTable:
    path: Path  # the file read
    format: str  # vinbigdata, nih or coco
    classes: tuple  # class names; class ids index into them
    image_names: list  # distinct image names (file stems), in order of first appearance
    file_names: list  # per image, its file under --images
    image_index: np.ndarray  # (N,) int: row -> position in image_names
    class_ids: np.ndarray  # (N,) int: 0..K-1, or -1 on a row without a box ("No finding")
    boxes: np.ndarray  # (N, 4) float xyxy in reference pixels; NaN on rows without a box
    reference_sizes: Optional[np.ndarray]  # (images, 2) width, height the boxes refer to;
    # None: the boxes are in the image files' own pixels
    several_readers: bool  # each image was read by several readers: fuse their boxes
    group_pattern: Optional[str] = None  # its first group: an image name's patient
    duplicates: int = 0  # rows that repeated an earlier row exactly, dropped
    crowd: int = 0  # COCO crowd regions (iscrowd 1), dropped


def numbered_rows(text):
    """(line, row) of each CSV record of `text`: the file's line on which the record starts
    (a quoted field may span lines), blank lines counted; a blank line is an empty row."""
    reader = csv.reader(io.StringIO(text))
    numbered, last = [], 0
    for row in reader:
        numbered.append((last + 1, row))
        last = reader.line_num
    return numbered


def drop_duplicate_rows(table, key_columns):
    """The table without rows whose key (image, then key_columns: (N, k) arrays of the
    rows' other identifying values) repeats an earlier row; counts them."""
    keys = np.concatenate(
        [table.image_index[:, None].astype(np.float64), *key_columns], axis=1
    )  # (N, 1 + k)
    keys = np.where(np.isnan(keys), np.inf, keys)  # NaN (no box) compares equal to itself
    order = np.lexsort(keys.T[::-1])  # stable: equal rows in table order
    ordered = keys[order]
    repeats = np.zeros(len(keys), dtype=bool)
    repeats[1:] = (ordered[1:] == ordered[:-1]).all(axis=1)
    keep = np.ones(len(keys), dtype=bool)
    keep[order[repeats]] = False
    return replace(
        table,
        image_index=table.image_index[keep],
        class_ids=table.class_ids[keep],
        boxes=table.boxes[keep],
        duplicates=int((~keep).sum()),
    )
