"""Any COCO detection file through prepare, with its own classes: names and order kept,
boxes rescaled to each image, one reader's boxes kept, several readers' fused,
patients kept on one side, every bad entry named; and a COCO dataset trains,
pretrains and scores with those classes."""

import csv
import json

import numpy as np
import pytest
from conftest import ssl_args, tiny_detector_args
from PIL import Image

import evaluate
import train_det
import train_ssl
from cxr.data.classes import dataset_classes
from cxr.data.preparation import prepare
from cxr.run.errors import UserError
from cxr.run.model_files import load_detector

CATEGORIES = [{"id": 7, "name": "Zeta"}, {"id": 3, "name": "Alpha"}, {"id": 11, "name": "Mid"}]


def write_coco(folder, *, images, annotations, categories=CATEGORIES, pixels=64, stated=128):
    """A COCO file whose boxes refer to `stated` px images, and `pixels` px PNG files
    with a bright square where each box is."""
    (folder / "images").mkdir(parents=True)
    scale = pixels / stated
    for name in images:
        picture = np.full((pixels, pixels), 40, np.uint8)
        for a in annotations:
            if a["image_id"] == images.index(name):
                x, y, w, h = (round(v * scale) for v in a["bbox"])
                picture[y : y + h, x : x + w] = 220
        Image.fromarray(picture).save(folder / "images" / name)
    coco = {
        "images": [
            {"id": i, "file_name": n, "width": stated, "height": stated}
            for i, n in enumerate(images)
        ],
        "annotations": [{"id": k, "iscrowd": 0, **a} for k, a in enumerate(annotations)],
        "categories": categories,
    }
    (folder / "boxes.json").write_text(json.dumps(coco))
    return folder / "boxes.json", folder / "images"


def test_an_image_of_other_proportions_than_its_entry_is_refused_by_name(tmp_path):
    names = [f"p{i}_1.png" for i in range(4)]
    annotations = [{"image_id": i, "category_id": 7, "bbox": [20, 20, 40, 40]} for i in range(4)]
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    coco = json.loads(path.read_text())
    coco["images"][2]["height"] = 100  # 128 x 100: not the 64 x 64 file's proportions
    path.write_text(json.dumps(coco))
    with pytest.raises(
        UserError, match=r"boxes.json: 1 images are not of the proportions .*p2_1 is 64 x 64, "
        r"its entry 128 x 100"
    ):  # fmt: skip
        prepare(path, images, tmp_path / "out", data_format="coco", log=quiet)
    assert not (tmp_path / "out").exists()


def prepared(out, split="train"):
    return json.loads((out / f"{split}_annotations.json").read_text())


def quiet(*_):
    pass


def test_the_files_classes_boxes_and_readers_are_kept(tmp_path):
    names = [f"p{i}_1.png" for i in range(5)]
    annotations = [
        {"image_id": i, "category_id": category, "bbox": [20, 20, 40, 40]}
        for i in range(5)
        for category in (7, 3)
    ]
    annotations.append({"image_id": 0, "category_id": 7, "bbox": [24, 24, 40, 40]})
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    prepare(path, images, tmp_path / "one", data_format="coco", test_fraction=0, log=quiet)
    coco = prepared(tmp_path / "one")
    assert coco["categories"] == [
        {"id": 1, "name": "Zeta", "supercategory": "lesion"},
        {"id": 2, "name": "Alpha", "supercategory": "lesion"},
        {"id": 3, "name": "Mid", "supercategory": "lesion"},
    ]
    assert dataset_classes(coco, "train") == ("Zeta", "Alpha", "Mid")
    first = next(i["id"] for i in coco["images"] if i["file_name"] == "p0_1.png")
    boxes = sorted(
        (a["category_id"], a["bbox"]) for a in coco["annotations"] if a["image_id"] == first
    )
    # 128 px coordinates on 64 px files: halved; the two Zeta boxes stay two (one reader)
    assert boxes == [(1, [10.0, 10.0, 20.0, 20.0]), (1, [12.0, 12.0, 20.0, 20.0]),
                     (2, [10.0, 10.0, 20.0, 20.0])]  # fmt: skip

    prepare(path, images, tmp_path / "fused", data_format="coco", test_fraction=0, fuse=True,
            log=quiet)  # fmt: skip
    fused = prepared(tmp_path / "fused")
    first = next(i["id"] for i in fused["images"] if i["file_name"] == "p0_1.png")
    zeta = [a["bbox"] for a in fused["annotations"] if a["image_id"] == first and a[
        "category_id"] == 1]  # fmt: skip
    assert len(zeta) == 1 and zeta[0] == pytest.approx([11.0, 11.0, 20.0, 20.0])


@pytest.mark.parametrize("seed", range(3))
def test_group_by_keeps_each_patient_on_one_side(tmp_path, seed):
    rng = np.random.default_rng(seed)
    names = [f"{patient:04d}_{film:03d}.png" for patient in range(12) for film in range(3)]
    annotations = [
        {"image_id": i, "category_id": int(rng.choice([7, 3, 11])), "bbox": [10, 10, 50, 50]}
        for i in range(len(names))
    ]
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    out = tmp_path / "out"
    prepare(path, images, out, data_format="coco", group_pattern="^([0-9]+)_", seed=seed,
            keep_normal=True, log=quiet)  # fmt: skip
    assert prepared(out, "normal")["images"] == []  # none here, but the SSL pool may ask
    sides = [{i["file_name"][:4] for i in prepared(out, split)["images"]}
             for split in ("train", "test")]  # fmt: skip
    assert sides[0] and sides[1] and not sides[0] & sides[1]
    assert json.loads((out / "split.json").read_text())["group_pattern"] == "^([0-9]+)_"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["annotations"][0].update(category_id=99), r"annotations\[0\]: category_id 99"),
        (lambda c: c["annotations"][1].update(bbox=[1, 1, 0, 5]), r"annotations\[1\]: bbox"),
        (lambda c: c["annotations"][0].update(bbox=[1, 1, "w", 5]), r"four finite numbers"),
        (lambda c: c["annotations"][0].update(image_id=42), r"image_id 42 is not an image"),
        (lambda c: c["images"][2].update(file_name="../x.png"), r"images\[2\]"),
        (lambda c: c["images"][1].update(width=0), r"images\[1\]: width 0 must be a positive"),
        (lambda c: c["images"][1].update(width=True), r"images\[1\]: width True must be a posit"),
        (lambda c: c["images"][1].update(id=[1]), r"images\[1\]: id \[1\] must be a whole"),
        (lambda c: c["images"][1].update(id="p1"), r"image ids mix numbers and strings"),
        (lambda c: c["categories"][0].update(id={}), r"categories\[0\]: id \{\} must be a whole"),
        (lambda c: c["annotations"].append(3), r"annotations\[4\]: expected an object, found a"),
        (lambda c: c.update(images={"0": {}}), r"'images' must be a list, found an object"),
        (lambda c: c["categories"].append({"id": 8, "name": "Zeta"}), r"categories\[3\]"),
        (lambda c: c.pop("categories"), r"lacks 'categories'"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(tmp_path, change, message):
    names = [f"p{i}.png" for i in range(4)]
    annotations = [{"image_id": i, "category_id": 7, "bbox": [10, 10, 40, 40]} for i in range(4)]
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(UserError, match=message):
        prepare(path, images, tmp_path / "out", data_format="coco", log=quiet)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("3", "expected a COCO detection file, a JSON object; found a number"),
        ("[{}]", "found a list"),
        ("", "is not valid JSON"),
        ('{"images": [', "is not valid JSON"),
        ("[" * 100000 + "]" * 100000, r"not valid JSON \(nested too deeply\)"),
        ('{"images": [{"id": 1, "width": Infinity}]}', "Infinity is not a JSON number"),
    ],
)
def test_a_file_that_is_not_a_coco_object_is_one_error(tmp_path, text, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "boxes.json").write_text(text)
    with pytest.raises(UserError, match=message):
        prepare(tmp_path / "boxes.json", tmp_path / "images", tmp_path / "out", data_format="coco",
                log=quiet)  # fmt: skip


def test_crowd_regions_are_dropped_and_counted(tmp_path):
    names = [f"p{i}.png" for i in range(4)]
    annotations = [{"image_id": i, "category_id": 3, "bbox": [10, 10, 40, 40]} for i in range(4)]
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    coco = json.loads(path.read_text())
    coco["annotations"][0]["iscrowd"] = 1
    path.write_text(json.dumps(coco))
    summary = prepare(path, images, tmp_path / "out", data_format="coco", log=quiet)
    assert summary["crowd_regions_dropped"] == 1
    boxes = sum(len(prepared(tmp_path / "out", s)["annotations"]) for s in ("train", "test"))
    assert boxes == 3


@pytest.mark.slow
def test_a_coco_dataset_pretrains_trains_and_scores_with_its_own_classes(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"{i:03d}_0.png" for i in range(48)]
    annotations = []
    for i in range(40):  # the last 8 images have no box: normal films
        x, y = (int(v) for v in rng.integers(0, 64, 2))
        annotations.append(
            {"image_id": i, "category_id": [7, 3, 11][i % 3], "bbox": [x, y, 48, 48]}
        )
    path, images = write_coco(tmp_path / "in", images=names, annotations=annotations)
    data = tmp_path / "data"
    prepare(path, images, data, data_format="coco", keep_normal=True, log=quiet)
    assert len(prepared(data, "normal")["images"]) == 8
    train_ssl.main(ssl_args(data, tmp_path / "runs", "coco", "--epochs", "1"))
    train_det.main(
        tiny_detector_args(data, tmp_path / "runs", "coco", init="ssl", epochs=1, image_size=64)
    )
    model, meta = load_detector(tmp_path / "runs" / "coco" / "fasterrcnn_final.pth")
    assert meta["classes"] == ["Zeta", "Alpha", "Mid"]
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    evaluate.main(
        ["--mode", "map", "--data-dir", str(data), "--output-dir", str(tmp_path / "runs"),
         "--experiment-name", "coco", "--device", "cpu", "--workers", "0"]
    )  # fmt: skip
    with open(tmp_path / "runs" / "coco" / "eval" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    listed = {value for row in rows for value in row.values()}
    assert {"Zeta", "Alpha", "Mid"} <= listed
