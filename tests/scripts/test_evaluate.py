"""evaluate.py --mode map / visualize / predict, the submission format and the pictures."""

import argparse
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import prepared_synthetic, tiny_detector_args, torchrun
from PIL import Image

import evaluate
import train_det
from cxr.data.classes import NO_FINDING_ID, VINBIGDATA_CLASSES
from cxr.data.original_sizes import read_original_sizes
from cxr.data.prepared import image_labels
from cxr.evaluation.coco_metrics import coco_ground_truth, coco_metrics
from cxr.evaluation.pictures import class_color, draw_detections, readable_text_color
from cxr.evaluation.submission import prediction_string
from cxr.nn.resnet import headless_resnet
from cxr.nn.seeds import stream_seed
from cxr.run.cli import flags
from cxr.run.errors import UserError
from cxr.run.model_files import _read_detector_file
from cxr.run.outputs import open_output_folder
from cxr.run.provenance import keys_of, trained_on_entry

# --- the submission format ------------------------------------------------------------------------


def test_prediction_string_scales_to_original_pixels_and_sorts_by_score():
    detections = [(1, 0.5, (10.0, 20.0, 30.0, 40.0)), (4, 0.9, (0.0, 0.0, 64.0, 32.0))]
    # PNG 128 x 128 from an original of 2048 wide, 3072 high: x * 16, y * 24.
    assert prediction_string(detections, no_finding=14, scale=(16.0, 24.0)) == (
        "3 0.9000 0.0 0.0 1024.0 768.0 "  # category 4 is class 3, listed first (higher score)
        "0 0.5000 160.0 480.0 480.0 960.0 "
        "14 0.1000 0 0 1 1"  # No finding, scored 1 - the top score, as the metric scores it
    )


def test_no_box_above_the_threshold_is_no_finding_with_confidence_one():
    below = prediction_string([(2, 0.04, (1, 1, 5, 5))], no_finding=14, score_threshold=0.05)
    assert below == f"{NO_FINDING_ID} 1.0000 0 0 1 1" == prediction_string([], no_finding=14)


def test_original_sizes_from_both_meta_csv_layouts_and_errors_name_the_line(tmp_path):
    (tmp_path / "a.csv").write_text("image_id,width,height\nabc,2000,3000\n")
    (tmp_path / "b.csv").write_text("image_id,dim0,dim1\nabc,3000,2000\n")  # dim0 = rows = height
    assert (
        read_original_sizes(tmp_path / "a.csv")
        == read_original_sizes(tmp_path / "b.csv")
        == {"abc": (2000, 3000)}
    )
    (tmp_path / "bad.csv").write_text("image_id,width,height\nabc,2000,3000\ndef,-1,3000\n")
    with pytest.raises(UserError, match=r"bad.csv, line 3: width"):
        read_original_sizes(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("id,w,h\n")
    with pytest.raises(UserError, match="expected columns image_id,width,height"):
        read_original_sizes(tmp_path / "cols.csv")


# --- pictures -------------------------------------------------------------------------------------


def test_ground_truth_is_solid_predictions_dashed_and_low_scores_hidden():
    gray = Image.new("L", (100, 100), 0)
    picture = draw_detections(
        gray,
        ground_truth=[(1, (10, 10, 90, 90))],
        predictions=[(4, 0.8, (20, 20, 80, 80)), (6, 0.1, (5, 50, 95, 95))],
        classes=VINBIGDATA_CLASSES,
        score_threshold=0.3,
        size=100,
    )
    pixels = picture.load()
    gt_color, prediction_color = class_color(1), class_color(4)
    left_gt_edge = [pixels[10, y] for y in range(30, 80)]
    assert all(p == gt_color for p in left_gt_edge)  # solid
    left_prediction_edge = [pixels[80, y] for y in range(22, 60)]
    assert (
        prediction_color in left_prediction_edge and (0, 0, 0) in left_prediction_edge
    )  # dashed: gaps
    assert class_color(6) not in {
        pixels[x, y] for x in range(100) for y in range(100)
    }  # score 0.1 < 0.3
    assert picture.size == (100, 100 + 22)  # legend strip below


def test_tag_text_is_readable_on_dark_and_light_colors():
    assert readable_text_color((128, 0, 0)) == (255, 255, 255)
    assert readable_text_color((255, 225, 25)) == (0, 0, 0)


# --- evaluate.py on a trained detector ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = prepared_synthetic(root, num_images=60, seed=5)
    train_det.main(tiny_detector_args(data_dir, root / "out", "exp", epochs=1, eval_every=0))
    model = torch.load(root / "out" / "exp" / "fasterrcnn_final.pth", weights_only=True)
    meta_path = root / "out" / "exp" / "fasterrcnn_final.json"
    return root, data_dir, model, json.loads(meta_path.read_text())


def eval_args(root, data_dir, mode, *extra):
    """Score threshold 0: the barely trained detector's boxes all count, so the tests see many."""
    common = flags(output_dir=root / "out", experiment_name="exp", device="cpu", workers=0)
    return ["--mode", mode, *common, *flags(data_dir=data_dir, score_threshold=0), *extra]


def test_map_writes_metrics_that_match_its_predictions(trained):
    root, data_dir, _, _ = trained
    summary = evaluate.main(eval_args(root, data_dir, "map"))
    eval_dir = root / "out" / "exp" / "eval"
    coco = json.loads((data_dir / "test_annotations.json").read_text())
    predictions = json.loads((eval_dir / "test_predictions.json").read_text())
    recomputed = coco_metrics(coco_ground_truth(coco), predictions)
    written = json.loads((eval_dir / "metrics.json").read_text())
    assert len(predictions) > 10 * len(coco["images"])
    assert (
        written["AP"] == recomputed["AP"] == summary["AP"] and written["AP40"] == recomputed["AP40"]
    )
    assert written["test_images"] == len(coco["images"]) and written["image_size"] == 64
    with open(eval_dir / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["gt_boxes"]) for r in rows] == [r["gt_boxes"] for r in recomputed["per_class"]]
    assert sum(int(r["gt_boxes"]) for r in rows) == len(coco["annotations"])
    with pytest.raises(UserError, match="already exists"):
        evaluate.main(eval_args(root, data_dir, "map"))


def test_a_model_that_learnt_a_test_image_is_not_scored_on_it(trained, tmp_path):
    root, data_dir, model, meta = trained
    assert [entry["what"] for entry in meta["trained_on"]] == ["fine-tuning images"]
    _, in_checkpoint = _read_detector_file(root / "out" / "exp" / "checkpoint.pth")
    assert in_checkpoint["trained_on"] == meta["trained_on"]  # checked like the final model
    evaluate.main(eval_args(root, data_dir, "map", "--eval-dir", str(tmp_path / "eval")))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "learnt from its fine-tuning images (" in written["provenance"]
    test_image = sorted((data_dir / "test").glob("*.png"))[0]
    with Image.open(test_image) as image:
        image.resize((32, 32), Image.BOX).save(tmp_path / "small.png")
    names, keys = keys_of({"small": tmp_path / "small.png"}, what="copy", log=None)
    leaked = [*meta["trained_on"], trained_on_entry("SSL pool", names, keys, data_dir=data_dir)]
    folder = tmp_path / "out" / "exp"
    folder.mkdir(parents=True)
    torch.save(model, folder / "fasterrcnn_final.pth")
    (folder / "fasterrcnn_final.json").write_text(json.dumps({**meta, "trained_on": leaked}))
    tests = len(list((data_dir / "test").glob("*.png")))
    with pytest.raises(
        UserError,
        match=f"the detector .* learnt from 1 of the {tests} test images of .*{test_image.stem} "
        r"\(as small\) in its SSL pool\. Its scores on them would not be a test",
    ):
        evaluate.main(eval_args(tmp_path, data_dir, "map"))
    assert sorted(p.name for p in folder.iterdir()) == [
        "fasterrcnn_final.json",
        "fasterrcnn_final.pth",
    ]

    pretrain = folder / "pretrain"  # the probe's backbone, the same way
    pretrain.mkdir()
    torch.save(headless_resnet("resnet18").state_dict(), pretrain / "pretrained-backbone.pth")
    backbone = {"arch": "resnet18", "image_size": 48, "trained_on": leaked[1:]}
    (pretrain / "pretrained-backbone.json").write_text(json.dumps(backbone))
    with pytest.raises(UserError, match=r"the backbone .* learnt from 1 of the .*\(as small\)"):
        evaluate.main(eval_args(tmp_path, data_dir, "probe"))


@pytest.mark.parametrize("classes", [VINBIGDATA_CLASSES, ("Mass", "Nodule")])
def test_the_competition_metric_is_scored_only_on_vinbigdatas_classes(tmp_path, capsys, classes):
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    coco = {
        "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [4, 4, 20, 20],
                "area": 400,
                "iscrowd": 0,
            }
        ],
        "categories": categories,
    }
    results = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}]
    meta = {"arch": "resnet18", "image_size": 64, "classes": list(classes)}
    with open_output_folder(tmp_path / "eval", command="test") as folder:
        summary = evaluate.write_map(folder, coco=coco, results=results, meta=meta, run={})
    printed = capsys.readouterr().out
    if classes == VINBIGDATA_CLASSES:  # the lesion found, the normal film scored 1 - 0 = 1
        assert (
            summary["competition"]["mAP40"] == pytest.approx(1.0) and "competition mAP" in printed
        )
        assert summary["competition"]["test_images_without_boxes"] == 1
    else:
        assert summary["competition"] is None and "competition mAP" not in printed
    assert summary["AP50"] == pytest.approx(1.0)


def test_map_accepts_the_seed_projects_flags(trained):
    root, data_dir, _, _ = trained
    evaluate.main(
        [
            "--mode",
            "map",
            "--checkpoint",
            "fasterrcnn_final.pth",
            "--experiment-name",
            "exp",
            "--output-dir",
            str(root / "out"),
            "--test-data-dir",
            str(data_dir / "test"),
            "--test-ann-file",
            str(data_dir / "test_annotations.json"),
            "--device",
            "cpu",
            "--eval-dir",
            str(root / "seed_eval"),
            "--workers",
            "0",
        ]
    )
    assert json.loads((root / "seed_eval" / "metrics.json").read_text())["test_images"] > 0


def test_bad_inputs_give_one_clear_message(trained, tmp_path):
    root, data_dir, model, meta = trained

    def refused(message, *flags):
        with pytest.raises(UserError, match=message) as error:
            evaluate.main(eval_args(root, data_dir, "map", *flags, "--eval-dir", str(tmp_path)))
        return str(error.value)

    def checkpoint(name, state):
        torch.save(state, tmp_path / f"{name}.pth")
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))
        return ["--checkpoint", str(tmp_path / f"{name}.pth")]

    def annotations(name, change):
        coco = json.loads((data_dir / "test_annotations.json").read_text())
        change(coco)
        (tmp_path / f"{name}.json").write_text(json.dumps(coco))
        return ["--test-ann-file", str(tmp_path / f"{name}.json")]

    resnet = checkpoint("resnet", torchvision.models.resnet18().state_dict())
    refused("is not a cxr Faster R-CNN resnet18-FPN", *resnet)
    five_classes = dict(model)
    for key in (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
    ):
        five_classes[key] = five_classes[key][:5]
    refused(
        r"with 14 classes .*wrong shape \['roi_heads.box_predictor",
        *checkpoint("five", five_classes),
    )

    def lose_an_image(coco):
        coco["images"][0]["file_name"] = "gone.png"

    def rename_a_class(coco):
        coco["categories"][0]["name"] = "Aorta"

    def unknown_category(coco):
        coco["annotations"][0]["category_id"] = 17

    refused(
        r"1 of the \d+ images of .*gone.json are not in .* \(e.g. gone.png\)",
        *annotations("gone", lose_an_image),
    )

    def another_size(coco):
        coco["images"][1].update(width=128, height=96)  # the file is 64 x 64

    refused("are not the detector's", *annotations("cats", rename_a_class))
    refused(
        r"1 images are not the size their annotations give them .*is 64 x 64, its entry says "
        r"128 x 96\. Prepare them again",
        *annotations("sizes", another_size),
    )
    refused(
        r"ids.json, annotations\[0\]: category_id 17 is unknown",
        *annotations("ids", unknown_category),
    )
    torch.save({"model": Exploit()}, tmp_path / "pickled.pth")
    (tmp_path / "notes.pth").write_text("these are my notes")
    for bad, message in (
        ("pickled.pth", "is not a cxr Faster R-CNN: it holds Python objects"),
        ("notes.pth", "cannot read .*notes.pth: it is not a PyTorch file"),
    ):
        assert "weights_only" not in refused(message, "--checkpoint", str(tmp_path / bad))
    assert not (tmp_path / "metrics.json").exists() and not PWNED.exists()


PWNED = Path(tempfile.gettempdir()) / f"cxr-test-pwned-{os.getpid()}"


class Exploit:
    """What a malicious checkpoint holds: unpickling it would run code (create PWNED)."""

    def __reduce__(self):
        return (open, (str(PWNED), "w"))


def test_predict_writes_one_submission_row_per_image(trained, tmp_path):
    root, data_dir, _, _ = trained
    predict = [*eval_args(root, data_dir, "predict", "--eval-dir", str(tmp_path)), "--submission"]
    predict += ["--images", str(data_dir / "test")]
    with pytest.raises(UserError, match="--submission without --original-sizes .* --png-pixels"):
        evaluate.main(predict)
    other = tmp_path.parent / f"{tmp_path.name}-other"  # a second folder, one name in both
    other.mkdir()
    twin = next((data_dir / "test").glob("*.png"))
    shutil.copy(next((data_dir / "train").glob("*.png")), other / twin.name)
    with pytest.raises(UserError, match=f"--images: .*{twin.name} and .*{other}/{twin.name} share "
                       f"the name {twin.stem}"):  # fmt: skip
        evaluate.main([*predict, str(other), "--png-pixels"])
    assert not any(tmp_path.iterdir())
    evaluate.main([*predict, "--original-sizes", str(data_dir / "test_annotations.json")])
    images = sorted(p.stem for p in (data_dir / "test").glob("*.png"))
    with open(tmp_path / "submission.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == images
    sizes = read_original_sizes(data_dir / "test_annotations.json")
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    for row in rows:
        fields = row["PredictionString"].split()
        assert len(fields) % 6 == 0
        for group in range(0, len(fields), 6):
            class_id, score, x0, y0, x1, y1 = map(float, fields[group : group + 6])
            width, height = sizes[row["image_id"]]
            if class_id == NO_FINDING_ID:
                others = [float(fields[g + 1]) for g in range(0, group, 6)]
                assert fields[group + 2 : group + 6] == "0 0 1 1".split()
                assert score == pytest.approx(1 - max(others, default=0.0), abs=1e-4)
                assert group == len(fields) - 6  # one, last
            else:
                assert 0 <= class_id < 14 and 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    boxes_in_csv = sum(len(r["PredictionString"].split()) // 6 - 1 for r in rows)
    assert boxes_in_csv == len(predictions) > 0


def test_visualize_writes_a_picture_per_image_and_a_contact_sheet(trained):
    root, data_dir, _, _ = trained
    coco = json.loads((data_dir / "test_annotations.json").read_text())
    names = [Path(i["file_name"]).stem for i in coco["images"][:2]]
    evaluate.main(eval_args(root, data_dir, "visualize", "--image-ids", ",".join(names)))
    out = root / "out" / "exp" / "eval" / "visualize"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.png" for n in names] + ["contact_sheet.png", ".cxr-output"]
    )
    with pytest.raises(UserError, match="--image-ids: nope not in the test annotations"):
        evaluate.main(eval_args(root, data_dir, "visualize", "--image-ids", "nope", "--replace"))


def test_map_draws_the_pictures_visualize_would_from_its_own_predictions(trained, tmp_path):
    """map --pictures 2 draws, from the predictions it scored, the pictures that a
    separate visualize of the same images (score threshold 0.3) draws."""
    root, data_dir, _, _ = trained
    evaluate.main(
        eval_args(
            root,
            data_dir,
            "map",
            "--eval-dir",
            str(tmp_path / "map"),
            "--pictures",
            "2",
            "--seed",
            "4",
        )
    )
    evaluate.main(
        eval_args(
            root, data_dir, "visualize", "--eval-dir", str(tmp_path / "alone"), "--num-images", "2"
        )
        + ["--seed", "4", "--score-threshold", "0.3"]
    )
    drawn = sorted((tmp_path / "map" / "visualize").glob("*.png"))
    assert len(drawn) == 3  # two pictures and the contact sheet
    for picture in drawn:
        assert (
            picture.read_bytes() == (tmp_path / "alone" / "visualize" / picture.name).read_bytes()
        )


@pytest.mark.slow
def test_map_on_two_processes_equals_one(trained, tmp_path):
    root, data_dir, _, _ = trained
    one = evaluate.main(eval_args(root, data_dir, "map", "--eval-dir", str(tmp_path / "one")))
    torchrun("evaluate.py", *eval_args(root, data_dir, "map", "--eval-dir", str(tmp_path / "two")))
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and one["detections"] > 0
    assert {k: two[k] for k in ("AP", "AP50", "AP40", "AR100", "detections")} == {
        k: one[k] for k in ("AP", "AP50", "AP40", "AR100", "detections")
    }


# --- evaluate.py --mode probe ---------------------------------------------------------------------


def test_probe_reads_the_backbone_json_reports_every_class_and_matches_the_random_baseline(
    tmp_path,
):
    """The saved backbone holds exactly the weights of the random baseline's
    seed, so the two ways of loading a trunk must give the same figures; the
    per-class table and the left-out classes follow from the test labels."""
    data_dir = prepared_synthetic(tmp_path, num_images=60, seed=6)
    pretrain = tmp_path / "out" / "exp" / "pretrain"
    pretrain.mkdir(parents=True)
    torch.manual_seed(stream_seed("weights", seed=3))  # the random baseline of seed 3
    torch.save(headless_resnet("resnet18").state_dict(), pretrain / "pretrained-backbone.pth")
    (pretrain / "pretrained-backbone.json").write_text(
        json.dumps({"arch": "resnet18", "image_size": 48})
    )
    common = flags(output_dir=tmp_path / "out", experiment_name="exp", device="cpu", workers=0)
    args = ["--mode", "probe", *common, *flags(data_dir=data_dir, batch_size=16)]

    ssl = evaluate.main(args)
    written = json.loads((tmp_path / "out" / "exp" / "eval" / "probe-ssl.json").read_text())
    assert written == json.loads(json.dumps(ssl)) and (ssl["arch"], ssl["image_size"]) == (
        "resnet18",
        48,
    )
    random = evaluate.main([*args, "--backbone", "random", "--seed", "3"])
    assert random["backbone"] == "random-seed3" and random["macro_auroc"] == ssl["macro_auroc"]

    test_labels = np.stack(list(image_labels(data_dir, "test").values()))
    train_labels = np.stack(list(image_labels(data_dir, "train").values()))
    assert [row["test_positives"] for row in ssl["per_class"]] == test_labels.sum(0).tolist()
    assert [row["train_positives"] for row in ssl["per_class"]] == train_labels.sum(0).tolist()
    undefined = [
        VINBIGDATA_CLASSES[k]
        for k in range(len(VINBIGDATA_CLASSES))
        if test_labels[:, k].sum() in (0, len(test_labels))
    ]
    assert undefined and ssl["excluded_classes"] == undefined
    defined = [row["auroc"] for row in ssl["per_class"] if row["auroc"] is not None]
    assert len(defined) == len(VINBIGDATA_CLASSES) - len(undefined)
    assert ssl["macro_auroc"] == pytest.approx(sum(defined) / len(defined), abs=1e-12)
    assert ssl["test_images"] == len(test_labels) and ssl["train_images"] == len(train_labels)

    with pytest.raises(UserError, match="already exists"):
        evaluate.main(args)
    with pytest.raises(UserError, match="not found.*--experiment-name other"):
        evaluate.main([*args, "--experiment-name", "other"])


def test_the_probe_refuses_a_test_split_where_no_auroc_is_defined(tmp_path):
    """Every test image has the one class: no negatives, no AUROC, before any feature."""
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in (1, 2)],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 4, 4]} for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "Mass"}],
    }
    (tmp_path / "test_annotations.json").write_text(json.dumps(coco))
    args = argparse.Namespace(data_dir=tmp_path)
    with pytest.raises(UserError, match="no class has both test images with it and without it"):
        evaluate.probe_figures(None, ["Mass"], args=args, size=32, device="cpu")
