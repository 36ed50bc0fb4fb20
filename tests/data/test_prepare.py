"""Preparation: fused COCO ground truth, rescaling, split, and every bad-input path."""

import csv
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from cxr.data.classes import VINBIGDATA_CLASSES
from cxr.data.preparation import prepare
from cxr.data.synthetic_xrays import CSV_COLUMNS, generate
from cxr.run.errors import UserError
from cxr.run.outputs import staged_directory

REPO = Path(__file__).resolve().parents[2]
quiet = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    generate(root / "vin", num_images=80, size=96, seed=5, test_images=0, **quiet)
    summary = prepare(
        root / "vin" / "train.csv", root / "vin" / "train", root / "data", keep_normal=True, **quiet
    )
    return root, summary


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_coco_files_load_and_hold_every_finding_image(synthetic):
    root, summary = synthetic
    rows = read_rows(root / "vin" / "train.csv")
    finding = {r["image_id"] for r in rows if r["class_id"] != "14"}
    normal = {r["image_id"] for r in rows} - finding
    seen = {}
    for split in ("train", "test", "normal"):
        coco = COCO(str(root / "data" / f"{split}_annotations.json"))
        seen[split] = {Path(img["file_name"]).stem for img in coco.dataset["images"]}
        assert [c["name"] for c in coco.dataset["categories"]] == list(VINBIGDATA_CLASSES)
        assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, 15))
        assert {p.stem for p in (root / "data" / split).glob("*.png")} == seen[split]
    assert seen["train"] | seen["test"] == finding and not seen["train"] & seen["test"]
    assert seen["normal"] == normal
    assert COCO(str(root / "data" / "normal_annotations.json")).dataset["annotations"] == []
    assert summary["test_images"] == round(len(finding) * 0.2)


def test_normal_in_test_adds_box_free_normal_images_to_the_test_split_only(synthetic, tmp_path):
    root, summary = synthetic
    with_normal = prepare(
        root / "vin" / "train.csv",
        root / "vin" / "train",
        tmp_path / "data",
        keep_normal=True,
        normal_in_test=True,
        **quiet,
    )
    split = json.loads((tmp_path / "data" / "split.json").read_text())
    normal_before = set(json.loads((root / "data" / "split.json").read_text())["normal"])
    assert (
        split["train"] == json.loads((root / "data" / "split.json").read_text())["train"]
    )  # findings unchanged
    assert set(split["test_normal"]) | set(split["normal"]) == normal_before
    assert not set(split["test_normal"]) & set(split["normal"])
    assert (
        len(split["test_normal"])
        == round(len(normal_before) * 0.2)
        == with_normal["test_normal_images"]
    )
    test = COCO(str(tmp_path / "data" / "test_annotations.json")).dataset
    names = {Path(image["file_name"]).stem: image["id"] for image in test["images"]}
    assert set(names) == set(split["test"]) | set(split["test_normal"])
    boxed = {a["image_id"] for a in test["annotations"]}
    assert not boxed & {names[n] for n in split["test_normal"]}
    assert {p.stem for p in (tmp_path / "data" / "test").glob("*.png")} == set(names)


def test_fused_boxes_lie_within_their_sources_rescaled_independently(synthetic):
    """Each fused box is a weighted mean of radiologist boxes of its class on
    its image, so it lies between their min and max, per coordinate, after
    rescaling x by png_w / width and y by png_h / height."""
    root, _ = synthetic
    sources = defaultdict(list)
    for r in read_rows(root / "vin" / "train.csv"):
        if r["class_id"] == "14":
            continue
        sx, sy = 96 / int(r["width"]), 96 / int(r["height"])
        box = [
            float(r["x_min"]) * sx,
            float(r["y_min"]) * sy,
            float(r["x_max"]) * sx,
            float(r["y_max"]) * sy,
        ]
        sources[r["image_id"], int(r["class_id"]) + 1].append(box)
    fused_count = defaultdict(int)
    for split in ("train", "test"):
        coco = COCO(str(root / "data" / f"{split}_annotations.json"))
        for ann in coco.dataset["annotations"]:
            image_id = Path(coco.imgs[ann["image_id"]]["file_name"]).stem
            group = np.array(sources[image_id, ann["category_id"]])
            x, y, w, h = ann["bbox"]
            box = np.array([x, y, x + w, y + h])
            assert (box >= group.min(axis=0) - 1e-3).all() and (
                box <= group.max(axis=0) + 1e-3
            ).all()
            assert ann["area"] == pytest.approx(w * h)
            fused_count[image_id, ann["category_id"]] += 1
    assert set(fused_count) == set(sources)
    assert all(fused_count[k] <= len(v) for k, v in sources.items())
    assert sum(fused_count.values()) < sum(len(v) for v in sources.values())


def test_split_is_seeded_recorded_and_images_are_hard_linked(synthetic, tmp_path):
    root, _ = synthetic
    split = json.loads((root / "data" / "split.json").read_text())
    assert split["seed"] == 1 and split["test_fraction"] == 0.2
    again = prepare(root / "vin" / "train.csv", root / "vin" / "train", tmp_path / "again", **quiet)
    assert json.loads((tmp_path / "again" / "split.json").read_text())["test"] == split["test"]
    prepare(root / "vin" / "train.csv", root / "vin" / "train", tmp_path / "seed2", seed=2, **quiet)
    assert json.loads((tmp_path / "seed2" / "split.json").read_text())["test"] != split["test"]
    name = split["test"][0] + ".png"
    assert (
        os.stat(root / "data" / "test" / name).st_ino
        == os.stat(root / "vin" / "train" / name).st_ino
    )
    assert again["image_copies_instead_of_links"] == 0


def write_table(folder, rows, header=CSV_COLUMNS, png=(500, 500)):
    """A tiny train.csv plus a blank PNG per image id, for hand-made cases."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    with open(folder / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    for image_id in {r[0] for r in rows}:
        Image.new("L", png).save(folder / "train" / f"{image_id}.png")
    return folder / "train.csv", folder / "train"


def test_hand_computed_rescale_and_fusion(tmp_path):
    # Original 1000 x 2000, PNG 500 x 500: x scales by 0.5, y by 0.25.
    rows = [
        ("img", "Nodule/Mass", 8, "R1", 100, 200, 300, 400, 1000, 2000),
        ("img", "Nodule/Mass", 8, "R2", 110, 210, 310, 410, 1000, 2000),
        ("img", "Cardiomegaly", 3, "R3", 0, 1000, 1000, 1500, 1000, 2000),
    ]
    csv_path, images = write_table(tmp_path / "vin", rows)
    prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, **quiet)
    anns = json.loads((tmp_path / "data" / "train_annotations.json").read_text())["annotations"]
    by_category = {a["category_id"]: a for a in anns}
    assert by_category[9]["bbox"] == pytest.approx([52.5, 51.25, 100.0, 50.0], abs=1e-4)
    assert by_category[9]["readers"] == 2
    assert by_category[4]["bbox"] == pytest.approx([0.0, 250.0, 500.0, 125.0], abs=1e-4)


def test_without_size_columns_boxes_are_png_pixels(tmp_path):
    rows = [("img", "Nodule/Mass", 8, "R1", 10, 20, 30, 40)]
    csv_path, images = write_table(tmp_path / "vin", rows, header=CSV_COLUMNS[:-2])
    messages = []
    prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, log=messages.append)
    anns = json.loads((tmp_path / "data" / "train_annotations.json").read_text())["annotations"]
    assert anns[0]["bbox"] == pytest.approx([10, 20, 20, 20], abs=1e-4)
    assert any("no width/height columns" in m for m in messages)


def test_swapped_and_clipped_boxes_are_counted(tmp_path):
    rows = [
        ("a", "Nodule/Mass", 8, "R1", 300, 400, 100, 200, 1000, 1000),
        ("a", "ILD", 5, "R1", -50, 0, 1200, 100, 1000, 1000),
        ("a", "Calcification", 2, "R1", 100, 100, 100, 300, 1000, 1000),
        ("b", "Calcification", 2, "R1", 100, 100, 100, 300, 1000, 1000),
    ]
    csv_path, images = write_table(tmp_path / "vin", rows)
    summary = prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, **quiet)
    assert (
        summary["boxes_swapped"],
        summary["boxes_clipped"],
        summary["boxes_dropped_zero_area"],
    ) == (1, 1, 2)
    assert summary["finding_images_left_without_boxes"] == 1  # image b keeps its place, with no box
    assert summary["train_images"] == 2


GOOD = ("img", "Nodule/Mass", 8, "R1", 10, 20, 30, 40, 100, 100)


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([GOOD[:3] + GOOD[4:]], CSV_COLUMNS[:3] + CSV_COLUMNS[4:], "lacks column\\(s\\) rad_id"),
        (
            [GOOD, ("img", "Nodule/Mass", 15, "R1", 1, 2, 3, 4, 100, 100)],
            CSV_COLUMNS,
            "line 3: class_id 15 is not in 0..14",
        ),
        (
            [GOOD, ("img", "Nodule/Mass", "x", "R1", 1, 2, 3, 4, 100, 100)],
            CSV_COLUMNS,
            "line 3: column class_id is 'x'",
        ),
        (
            [GOOD, ("img", "Atelectasis", 8, "R1", 1, 2, 3, 4, 100, 100)],
            CSV_COLUMNS,
            "line 3: class_name 'Atelectasis' does not match class_id 8",
        ),
        (
            [GOOD, GOOD, ("img", "Nodule/Mass", 8, "R1", 1, "abc", 3, 4, 100, 100)],
            CSV_COLUMNS,
            "line 4: column y_min is 'abc'",
        ),
        (
            [GOOD, ("img", "Nodule/Mass", 8, "R1", 1, 2, "", 4, 100, 100)],
            CSV_COLUMNS,
            "line 3: column x_max is ''",
        ),
        (
            [GOOD, ("img", "Nodule/Mass", 8, "R1", 1, 2, 3, 4, 0, 100)],
            CSV_COLUMNS,
            "line 3: width and height must be positive",
        ),
        (
            [GOOD, ("img", "Nodule/Mass", 8, "R1", 1, 2, 3, 4, 200, 100)],
            CSV_COLUMNS,
            "line 3: image img has width/height",
        ),
    ],
)
def test_bad_csv_is_reported_with_its_line(tmp_path, rows, header, message):
    csv_path, images = write_table(tmp_path / "vin", rows, header=header)
    with pytest.raises(UserError, match=message):
        prepare(csv_path, images, tmp_path / "data", **quiet)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("quoted", [False, True])  # two parsers: plain split and csv module
def test_an_error_names_the_files_line_with_blank_lines_counted(tmp_path, quoted):
    csv_path, images = write_table(tmp_path / "vin", [GOOD])
    good = ",".join(map(str, GOOD)).replace("R1", '"R1"' if quoted else "R1")
    bad = good.replace(",8,", ",99,", 1)
    text = ",".join(CSV_COLUMNS) + "\n\n" + good + "\n\n\n" + bad + "\n"  # bad: line 6
    csv_path.write_text(text)
    with pytest.raises(UserError, match=r"train.csv, line 6: class_id 99 is not in 0..14"):
        prepare(csv_path, images, tmp_path / "data", **quiet)


def test_missing_images_are_reported_or_skipped(tmp_path):
    rows = [GOOD] + [(f"gone{i}",) + GOOD[1:] for i in range(7)]
    csv_path, images = write_table(tmp_path / "vin", rows)
    for i in range(7):
        (images / f"gone{i}.png").unlink()
    (images / "gone0.png").write_bytes(b"not a png at all, just text")
    with pytest.raises(
        UserError, match="7 of 8 images .* missing or unusable.*not a PNG.*--skip-missing"
    ):
        prepare(csv_path, images, tmp_path / "data", **quiet)
    summary = prepare(
        csv_path, images, tmp_path / "data", skip_missing=True, test_fraction=0.0, **quiet
    )
    assert summary["missing_images"] == 7 and summary["train_images"] == 1


def test_a_fifo_or_folder_named_like_an_image_is_refused_not_waited_on(tmp_path):
    rows = [GOOD, ("pipe",) + GOOD[1:], ("dir",) + GOOD[1:]]
    csv_path, images = write_table(tmp_path / "vin", rows)
    for name in ("pipe", "dir"):
        (images / f"{name}.png").unlink()
    os.mkfifo(images / "pipe.png")  # opening it to read would wait for a writer forever
    (images / "dir.png").mkdir()
    signal.alarm(20)  # a wait on the FIFO ends the test (SIGALRM) instead of hanging it
    try:
        with pytest.raises(UserError, match=r"2 of 3 images .*pipe.png \(not a regular file\)"):
            prepare(csv_path, images, tmp_path / "data", **quiet)
    finally:
        signal.alarm(0)


def test_existing_output_needs_replace(tmp_path):
    csv_path, images = write_table(tmp_path / "vin", [GOOD])
    prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, **quiet)
    (tmp_path / "data" / "marker").write_text("previous run")
    with pytest.raises(UserError, match="already exists; pass --replace"):
        prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, **quiet)
    assert (tmp_path / "data" / "marker").exists()
    prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, replace=True, **quiet)
    assert not (tmp_path / "data" / "marker").exists()
    assert (tmp_path / "data" / "train_annotations.json").exists()


def test_replace_never_deletes_the_inputs_or_a_folder_cxr_did_not_make(tmp_path):
    """--out vin --replace with the CSV and images in vin/ once deleted them; a
    folder of the user's own is not replaced either."""
    csv_path, images = write_table(tmp_path / "vin", [GOOD])
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "vin").rglob("*"))
    for out in (tmp_path / "vin", images, tmp_path):
        with pytest.raises(UserError, match="contains the input"):
            prepare(csv_path, images, out, replace=True, **quiet)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "vin").rglob("*")) == before
    own = tmp_path / "mine"
    (own / "sub").mkdir(parents=True)
    (own / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not made by cxr .*will not delete it"):
        prepare(csv_path, images, own, replace=True, **quiet)
    assert (own / "notes.txt").read_text() == "mine" and (own / "sub").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(
        csv_path, images, empty, test_fraction=0.0, **quiet
    )  # an empty folder holds nothing to lose
    assert (empty / ".cxr-output").is_file()


def test_incomplete_pngs_empty_tables_and_a_byte_order_mark(tmp_path):
    csv_path, images = write_table(tmp_path / "vin", [GOOD])
    png = next(images.glob("*.png"))
    whole = png.read_bytes()
    png.write_bytes(whole[: len(whole) // 2])  # header intact, cut short
    with pytest.raises(UserError, match="truncated or corrupt PNG"):
        prepare(csv_path, images, tmp_path / "data", **quiet)
    png.write_bytes(whole + b"trailing bytes")  # decodes: accepted
    prepare(csv_path, images, tmp_path / "data", test_fraction=0.0, **quiet)
    png.write_bytes(whole)
    csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n")
    with pytest.raises(UserError, match="header but no rows"):
        prepare(csv_path, images, tmp_path / "data2", **quiet)
    write_table(tmp_path / "vin", [GOOD])
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # UTF-8 with BOM, as Excel saves
    summary = prepare(csv_path, images, tmp_path / "data3", test_fraction=0.0, **quiet)
    assert summary["input_rows"] == 1


def test_interrupted_staging_leaves_previous_output_and_no_debris(tmp_path):
    final = tmp_path / "out"
    with staged_directory(final) as staging:
        (staging / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(final, replace=True) as staging:
            (staging / "half").write_text("partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in final.iterdir()) == [".cxr-output", "keep"]


def test_command_line_reports_errors_without_traceback_and_never_imports_torch(tmp_path):
    csv_path, images = write_table(tmp_path / "vin", [GOOD[:2] + (99,) + GOOD[3:]])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxr.prepare",
            "--csv",
            str(csv_path),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert (
        "error:" in bad.stderr
        and "line 2: class_id 99" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    probe = (
        "import sys, runpy; sys.argv = ['prepare', '--csv', sys.argv[1], '--images', sys.argv[2], "
        "'--out', sys.argv[3]];\ntry: runpy.run_module('cxr.prepare', run_name='__main__')\n"
        "except SystemExit: pass\nassert 'torch' not in sys.modules, 'prepare imported torch'"
    )
    csv_path, images = write_table(tmp_path / "vin2", [GOOD])
    ok = subprocess.run(
        [sys.executable, "-c", probe, str(csv_path), str(images), str(tmp_path / "d2")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "d2" / "train_annotations.json").exists()


@pytest.mark.parametrize("quoted", [False, True])
def test_row_with_wrong_field_count_is_reported(tmp_path, quoted):
    csv_path, images = write_table(tmp_path / "vin", [GOOD, GOOD])
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2] + ",extra"
    if quoted:
        lines[1] = lines[1].replace("Nodule/Mass", '"Nodule/Mass"')
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 3: 11 fields, the header has 10"):
        prepare(csv_path, images, tmp_path / "data", **quiet)


def test_quoted_csv_reads_like_the_plain_one(tmp_path):
    csv_path, images = write_table(tmp_path / "vin", [GOOD])
    plain = prepare(csv_path, images, tmp_path / "plain", test_fraction=0.0, **quiet)
    csv_path.write_text(csv_path.read_text().replace("Nodule/Mass", '"Nodule/Mass"'))
    quoted = prepare(csv_path, images, tmp_path / "quoted", test_fraction=0.0, **quiet)
    assert (tmp_path / "plain" / "train_annotations.json").read_text() == (
        tmp_path / "quoted" / "train_annotations.json"
    ).read_text()
    assert plain["boxes"] == quoted["boxes"] == 1
