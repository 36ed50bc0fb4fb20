"""NIH ChestX-ray14 as a second dataset: the box file as NIH publishes it,
rescaling, the class mapping, a split by patient, and bad rows named by line."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.data.classes import NIH_CLASSES, NIH_FINDINGS, VINBIGDATA_CLASSES
from cxr.data.coco_format import group_by
from cxr.data.nih import PATIENT, read_nih_table
from cxr.data.preparation import prepare
from cxr.data.vinbigdata import read_vinbigdata
from cxr.run.errors import UserError

quiet = {"log": lambda *_: None}
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def write_nih(folder, rows, png=512, trailing=True):
    """NIH's CSV (CRLF, the header's empty columns, optionally the rows' too) and
    a PNG of side `png` per image, each a picture of its own (seeded by its name)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [",".join(map(str, row)) + (",,," if trailing else "") for row in rows]
    (folder / "BBox_List_2017.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for name in {row[0] for row in rows}:
        coarse = np.random.default_rng(zlib.crc32(name.encode())).integers(0, 256, (6, 6))
        picture = Image.fromarray(coarse.astype(np.uint8)).resize((png, png), Image.BICUBIC)
        picture.save(folder / "images" / name)
    return folder / "BBox_List_2017.csv", folder / "images"


ROWS = [
    ("00000001_000.png", "Mass", 100, 200, 50, 80),
    ("00000001_000.png", "Nodule", 600, 100, 20, 22),
    ("00000001_001.png", "Pneumonia", 300, 400, 200, 210),
    ("00000002_000.png", "Effusion", 10, 20, 30, 40),
    ("00000003_000.png", "Infiltrate", 700, 700, 100, 90),
    ("00000004_000.png", "Cardiomegaly", 300, 500, 400, 200),
]


@pytest.mark.parametrize("trailing", [True, False])
def test_the_published_file_parses_with_or_without_trailing_columns(tmp_path, trailing):
    csv_path, _ = write_nih(tmp_path, ROWS, trailing=trailing)
    table = read_nih_table(csv_path, classes="vinbigdata")
    names, image_index, class_ids, boxes = (
        table.image_names,
        table.image_index,
        table.class_ids,
        table.boxes,
    )
    assert names == ["00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000004_000"]
    assert table.file_names == [f"{name}.png" for name in names]
    assert image_index.tolist() == [0, 0, 1, 2, 3, 4]
    assert [VINBIGDATA_CLASSES[c] for c in class_ids] == [
        "Nodule/Mass",
        "Nodule/Mass",
        "Lung Opacity",
        "Pleural effusion",
        "Infiltration",
        "Cardiomegaly",
    ]
    assert boxes[0].tolist() == [100, 200, 150, 280]
    assert table.reference_sizes.tolist() == [[1024, 1024]] * 5


def test_nih_data_speaks_its_own_eight_findings_by_default(tmp_path):
    csv_path, _ = write_nih(tmp_path, ROWS)
    table = read_nih_table(csv_path)
    assert table.classes == NIH_CLASSES and len(NIH_CLASSES) == 8
    assert [table.classes[c] for c in table.class_ids] == [row[1] for row in ROWS]


def test_every_nih_finding_maps_to_a_vinbigdata_class():
    assert (
        set(NIH_FINDINGS)
        == set(NIH_CLASSES)
        == {
            "Atelectasis",
            "Cardiomegaly",
            "Effusion",
            "Infiltrate",
            "Mass",
            "Nodule",
            "Pneumonia",
            "Pneumothorax",
        }
    )
    assert set(NIH_FINDINGS.values()) <= set(VINBIGDATA_CLASSES)


@pytest.mark.parametrize(
    "classes, mass, nodule",
    [("nih", "Mass", "Nodule"), ("vinbigdata", "Nodule/Mass", "Nodule/Mass")],
)
def test_prepare_rescales_one_reader_boxes_and_splits_by_patient(tmp_path, classes, mass, nodule):
    csv_path, images = write_nih(tmp_path / "nih", ROWS * 1)
    summary = prepare(
        csv_path,
        images,
        tmp_path / "data",
        data_format="nih",
        nih_classes=classes,
        test_fraction=0.5,
        seed=3,
        **quiet,
    )
    assert summary["boxes"] == summary["input_boxes"] == 6  # one reader: nothing fused
    split = json.loads((tmp_path / "data" / "split.json").read_text())
    patient_of = group_by(PATIENT)
    patients = {side: {patient_of(n) for n in split[side]} for side in ("train", "test")}
    assert (
        not patients["train"] & patients["test"] and len(patients["test"]) == 2
    )  # 2 of 4 patients
    boxes = {}
    for side in ("train", "test"):
        coco = json.loads((tmp_path / "data" / f"{side}_annotations.json").read_text())
        files = {i["id"]: Path(i["file_name"]).stem for i in coco["images"]}
        for a in coco["annotations"]:
            boxes.setdefault(files[a["image_id"]], []).append(
                (a["category_id"], a["bbox"], a["readers"])
            )
    # 1024 px coordinates on a 512 px PNG: halved; the Mass and the Nodule stay two boxes,
    # of one class where VinBigData's classes merge them.
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted((names[c], box, readers) for c, box, readers in boxes["00000001_000"]) == sorted(
        [(mass, [50.0, 100.0, 25.0, 40.0], 1), (nodule, [300.0, 50.0, 10.0, 11.0], 1)]
    )


@pytest.mark.parametrize(
    "row, message",
    [
        (("x.png", "Hernia", 1, 2, 3, 4), "line 3: finding 'Hernia' is not one of NIH's"),
        (("x.png", "Mass", 1, "two", 3, 4), "line 3: the box 1,two,3,4 is not four numbers"),
        (("x.png", "Mass", 1, 2, 0, 4), "line 3: the box needs .* a positive width"),
        (("x.png", "Mass", 1, 2, 3), "line 3: 5 fields, expected 6"),
    ],
)
def test_a_bad_row_is_named_by_its_line(tmp_path, row, message):
    csv_path, images = write_nih(tmp_path, [ROWS[0]])
    csv_path.write_text(csv_path.read_text() + ",".join(map(str, row)) + "\n")
    with pytest.raises(UserError, match=message):
        prepare(csv_path, images, tmp_path / "data", data_format="nih", **quiet)
    assert not (tmp_path / "data").exists()


def test_a_vinbigdata_table_given_as_nih_is_refused_by_its_header(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.csv").write_text("image_id,class_name,class_id\n")
    with pytest.raises(UserError, match="expected NIH's header"):
        prepare(
            tmp_path / "train.csv",
            tmp_path / "images",
            tmp_path / "data",
            data_format="nih",
            **quiet,
        )


@pytest.mark.parametrize(
    "reader, expected",
    [(read_nih_table, "NIH's BBox_List_2017.csv"), (read_vinbigdata, "VinBigData's train.csv")],
)
def test_an_unreadable_table_is_one_error_naming_the_file(tmp_path, reader, expected):
    latin1 = tmp_path / "table.csv"
    latin1.write_bytes("Image Index,Finding Label\nrésumé.png,Mass\n".encode("latin-1"))
    with pytest.raises(UserError, match=f"table.csv is not a UTF-8 text file; expected {expected}"):
        reader(latin1)
    with pytest.raises(UserError, match="cannot read .*missing.csv: No such file"):
        reader(tmp_path / "missing.csv")


def test_a_bad_row_after_blank_lines_is_named_by_the_files_line(tmp_path):
    csv_path, _ = write_nih(tmp_path, [ROWS[0]])
    text = csv_path.read_text().rstrip("\n") + "\n\n\nx.png,Hernia,1,2,3,4\n"  # line 5
    csv_path.write_text(text)
    with pytest.raises(UserError, match="line 5: finding 'Hernia'"):
        read_nih_table(csv_path)
