"""The data-safety findings, one test each (docs/reliability.md): a finished model is
never retrained over without --replace, a resume refuses a re-prepared data folder,
data that cannot give a result is refused before anything is written, and images
reach the prepared folder as files, linked or copied with a word."""

import argparse
import csv
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import prepared_synthetic, ssl_args, tiny_detector_args
from PIL import Image

import evaluate
import train_det
import train_ssl
from cxr.data import image_files
from cxr.data.classes import VINBIGDATA_CLASSES as CLASSES
from cxr.data.preparation import prepare
from cxr.data.synthetic_xrays import CSV_COLUMNS
from cxr.run.errors import UserError
from cxr.run.model_files import load_detector


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("safety"), num_images=40, seed=5)


def write_vinbig(folder, rows, sizes):
    """A VinBigData train.csv of `rows` (image, class, x0, y0, x1, y1) with one PNG per
    image of the given (width, height)."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for image, name, *box in rows:
            writer.writerow([image, name, CLASSES.index(name), "R1", *box, *sizes[image]])
    for image, size in sizes.items():
        Image.new("L", size, 90).save(folder / "images" / f"{image}.png")
    return folder / "train.csv", folder / "images"


def box_rows(count, box=(10, 10, 40, 40)):
    return [(f"img{i:02d}", "Nodule/Mass", *box) for i in range(count)]


def sizes_of(rows, size=(64, 64)):
    return {row[0]: size for row in rows}


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [None, 1])
def test_a_finished_ssl_model_is_not_retrained_when_its_checkpoint_is_gone(
    data_dir, tmp_path, stop_after
):
    train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1"))
    run = tmp_path / "exp" / "pretrain"
    model = (run / "pretrained-backbone.pth").read_bytes()
    (run / "checkpoint.pth").unlink()  # users delete checkpoints to save space
    extra = [] if stop_after is None else ["--stop-after", str(stop_after)]
    with pytest.raises(UserError, match="already holds a run .*pretrained-backbone.pth"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", *extra))
    with pytest.raises(UserError, match="already holds a run"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", "--auto-resume"))
    with pytest.raises(UserError, match="finished .*nothing to resume"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", "--resume"))
    assert (run / "pretrained-backbone.pth").read_bytes() == model


@pytest.mark.slow
def test_a_finished_detector_is_not_retrained_when_its_checkpoint_is_gone(data_dir, tmp_path):
    train_det.main(tiny_detector_args(data_dir, tmp_path, "det", epochs=1))
    run = tmp_path / "det"
    model = (run / "fasterrcnn_final.pth").read_bytes()
    (run / "checkpoint.pth").unlink()
    with pytest.raises(UserError, match="already holds a run .*fasterrcnn_final"):
        train_det.main(tiny_detector_args(data_dir, tmp_path, "det", epochs=1))
    assert (run / "fasterrcnn_final.pth").read_bytes() == model


@pytest.mark.slow
def test_a_resume_refuses_a_data_folder_prepared_again(tmp_path):
    data = prepared_synthetic(tmp_path, num_images=40, seed=6)
    train_ssl.main(ssl_args(data, tmp_path / "runs", "exp", "--epochs", "2", "--stop-after", "1"))
    prepare(
        tmp_path / "vin" / "train.csv",
        tmp_path / "vin" / "train",
        data,
        keep_normal=True,
        seed=2,
        replace=True,
        log=lambda *_: None,
    )
    with pytest.raises(UserError, match="was prepared again since"):
        train_ssl.main(ssl_args(data, tmp_path / "runs", "exp", "--epochs", "2", "--resume"))


@pytest.mark.parametrize(
    "rows, sizes, message",
    [
        (box_rows(6, (10, 10, 10, 40)), None, "no image has a box|no training image has a box"),
        (box_rows(6), {**sizes_of(box_rows(6)), "img03": (1, 1)}, "1 x 1 px, smaller than"),
    ],
    ids=["every-box-empty", "one-pixel-image"],
)
def test_data_that_cannot_give_a_result_is_refused_before_writing(tmp_path, rows, sizes, message):
    csv_path, images = write_vinbig(tmp_path / "in", rows, sizes or sizes_of(rows))
    with pytest.raises(UserError, match=message):
        prepare(csv_path, images, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_duplicated_rows_are_counted_and_dropped(tmp_path):
    rows = box_rows(6)
    csv_path, images = write_vinbig(tmp_path / "in", rows + rows[:2], sizes_of(rows))
    summary = prepare(csv_path, images, tmp_path / "out", log=lambda *_: None)
    assert summary["duplicate_rows_dropped"] == 2
    boxes = [
        len(json.loads((tmp_path / "out" / f"{split}_annotations.json").read_text())["annotations"])
        for split in ("train", "test")
    ]
    assert sum(boxes) == 6


def test_linked_images_are_files_and_a_copy_is_announced_with_its_size(tmp_path, monkeypatch):
    rows = box_rows(6)
    csv_path, elsewhere = write_vinbig(tmp_path / "in", rows, sizes_of(rows))
    links = tmp_path / "links"
    links.mkdir()
    for png in elsewhere.iterdir():  # relative symbolic links, as a user's archive may hold
        (links / png.name).symlink_to(os.path.relpath(png, links))
    prepare(csv_path, links, tmp_path / "linked", log=lambda *_: None)
    prepared = [p for p in (tmp_path / "linked").rglob("*.png")]
    assert len(prepared) == 6 and not any(p.is_symlink() for p in prepared)
    assert all(p.stat().st_ino == (elsewhere / p.name).stat().st_ino for p in prepared)

    def no_hard_links(source, target):  # as across file systems
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(image_files.os, "link", no_hard_links)
    lines = []
    summary = prepare(csv_path, links, tmp_path / "copied", log=lines.append)
    assert summary["image_copies_instead_of_links"] == 6
    size_mb = sum(p.stat().st_size for p in elsewhere.iterdir()) / 1e6
    assert any(f"6 images copied ({size_mb:.1f} MB)" in line for line in lines), lines


@pytest.mark.slow
def test_non_finite_weights_are_refused_where_they_would_be_used(data_dir, tmp_path):
    train_det.main(tiny_detector_args(data_dir, tmp_path, "det", epochs=2, stop_after=1))
    checkpoint = tmp_path / "det" / "checkpoint.pth"
    state = torch.load(checkpoint, weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key].view(-1)[0] = float("nan")
    torch.save(state, checkpoint)
    with pytest.raises(UserError, match=f"non-finite weights .*{key}"):
        load_detector(checkpoint)


@pytest.mark.parametrize("images, boxes", [(0, 0), (3, 0)], ids=["no-images", "no-boxes"])
def test_a_score_is_refused_on_a_test_split_with_nothing_to_score(tmp_path, images, boxes):
    coco = {
        "images": [
            {"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(images)
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "Nodule/Mass"}],
    }
    (tmp_path / "test").mkdir()
    (tmp_path / "test_annotations.json").write_text(json.dumps(coco))
    args = argparse.Namespace(data_dir=tmp_path, test_data_dir=None, test_ann_file=None)
    with pytest.raises(UserError, match="holds no test images|hold no box, so mAP is undefined"):
        evaluate.labeled_test_set(args, ["Nodule/Mass"], scored=True)


@pytest.mark.slow
def test_a_kill_between_the_checkpoint_and_the_history_cannot_count_an_epoch_twice(
    data_dir, tmp_path
):
    train_det.main(tiny_detector_args(data_dir, tmp_path, "det", epochs=3, stop_after=1))
    history_file = tmp_path / "det" / "eval_history.json"
    history = json.loads(history_file.read_text())
    assert [h["epoch"] for h in history] == [1]
    # as if epoch 2's history had been written and the run killed before its checkpoint
    history_file.write_text(json.dumps(history + [{**history[0], "epoch": 2}]))
    train_det.main(tiny_detector_args(data_dir, tmp_path, "det", epochs=3, resume=True))
    assert [h["epoch"] for h in json.loads(history_file.read_text())] == [1, 2, 3]


def test_a_run_inside_the_data_folder_is_refused_before_anything_is_written(tmp_path):
    data_dir = prepared_synthetic(tmp_path / "prepared", num_images=24, seed=2)
    for script, argv in (
        (train_ssl, ssl_args(data_dir, data_dir / "runs", "inside")),
        (train_det, tiny_detector_args(data_dir, data_dir / "runs", "inside")),
    ):
        with pytest.raises(UserError, match="is inside the input"):
            script.main(argv)
        assert not (data_dir / "runs").exists()
