"""The users' tables (VinBigData's train.csv, NIH's box file, a meta CSV of original sizes),
corrupted at random, give one UserError line naming the file, or a table whose values are
checked: never another exception."""

import math
import random

import numpy as np
import pytest

from cxr.data.nih import read_nih_table
from cxr.data.original_sizes import read_original_sizes
from cxr.data.vinbigdata import read_vinbigdata
from cxr.run.errors import UserError

VINBIGDATA = """image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max,width,height
a1,Aortic enlargement,0,R1,10,20,50,60,512,600
a1,Aortic enlargement,0,R2,12,22,52,58,512,600
a1,No finding,14,R3,,,,,512,600
b2,Nodule/Mass,8,R1,100,100,130,140,800,800
c3,No finding,14,R1,,,,,700,700
"""
NIH = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00000001_000.png,Mass,100,200,50,80
00000001_001.png,Nodule,600,100,20,22
00000002_000.png,Effusion,10,20,30,40
"""
META = """image_id,dim0,dim1
a1,600,512
b2,800,800
"""
JUNK = [
    *("", "x", "-1", "0", "nan", "inf", "-inf", "1e400", '"', '"a,b"', "\x00"),
    *("\uff11\uff12", "14", "99"),  # full-width 12; a class id; an unknown one
]


def corrupted(text, rng):
    """The table's text, structurally corrupted in one of several ways."""
    lines = text.splitlines()
    how = rng.choice(["field", "field", "drop field", "add field", "cut", "line", "header"])
    number = rng.randrange(len(lines))
    fields = lines[number].split(",")
    if how == "field":
        fields[rng.randrange(len(fields))] = rng.choice(JUNK)
    elif how == "drop field":
        fields.pop(rng.randrange(len(fields)))
    elif how == "add field":
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(JUNK))
    elif how == "cut":
        return text[: rng.randrange(len(text))]
    elif how == "line":
        lines.insert(number, rng.choice(["", ",,,,", '"', lines[number], "\ufeff"]))
    else:
        rng.shuffle(fields) if rng.random() < 0.5 else fields.pop()
        number = 0
    lines[number] = ",".join(fields)
    return "\n".join(lines) + "\n"


def checked_table(table):
    """What a reader returns is checked: finite boxes (prepare swaps inverted corners and
    clips them to the image, and counts both), known classes, positive sizes."""
    boxes = table.boxes[~np.isnan(table.boxes).any(axis=1)]
    assert np.isfinite(boxes).all()
    assert ((table.class_ids >= -1) & (table.class_ids < len(table.classes))).all()
    if table.reference_sizes is not None:
        assert (table.reference_sizes > 0).all() and np.isfinite(table.reference_sizes).all()


def checked_sizes(sizes):
    assert all(isinstance(v, int) and 0 < v < math.inf for size in sizes.values() for v in size), (
        sizes
    )


KINDS = {
    "VinBigData's train.csv": (VINBIGDATA, lambda p: checked_table(read_vinbigdata(p))),
    "NIH's box file": (NIH, lambda p: checked_table(read_nih_table(p))),
    "a meta CSV of original sizes": (META, lambda p: checked_sizes(read_original_sizes(p))),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupted_table_is_one_user_error_or_a_checked_table(tmp_path, kind):
    text, read = KINDS[kind]
    path = tmp_path / "table.csv"
    path.write_text(text)
    read(path)  # the valid table reads
    rng, outcomes = random.Random(kind), {"error": 0, "read": 0}
    for _ in range(150):
        path.write_text(corrupted(text, rng))
        try:
            read(path)
            outcomes["read"] += 1
        except UserError as error:
            assert "\n" not in str(error) and "table.csv" in str(error), str(error)
            outcomes["error"] += 1
    assert outcomes["error"] >= 50, outcomes
