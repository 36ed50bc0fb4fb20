"""Predictions for unlabeled images in the VinBigData competition's CSV format.

    image_id,PredictionString
    0a1b...,3 0.9120 690.0 1500.5 1902.0 2048.0 14 0.0880 0 0 1 1
    0c2d...,14 1.0000 0 0 1 1

A PredictionString lists `class_id score x_min y_min x_max y_max` groups
(boxes in the ORIGINAL DICOM's pixels), then "No finding" on a one-pixel
box scored 1 - the image's highest lesion score, which is how cxr's
competition metric scores it. Boxes are scaled back with each image's
original size (`read_original_sizes`): a CSV image_id,width,height or
image_id,dim0,dim1 (the 512 px download's test_meta.csv; dim0 is the
height), or a COCO JSON written by `python -m cxr.prepare`.
"""

import csv
import json
from pathlib import Path

from cxr.data.classes import class_index
from cxr.run.errors import UserError
from cxr.run.outputs import atomic_write_text


def _positive_int(value, path, line, column):
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        number = 0
    if number <= 0:
        raise UserError(
            f"{path}, line {line}: {column} must be a positive number of pixels, got {value!r}"
        )
    return number


def read_original_sizes(path):
    """{image_id: (width, height)} from a meta CSV or a cxr.prepare COCO JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--original-sizes {path}: file not found")
    if path.suffix == ".json":
        images = json.loads(path.read_text()).get("images", [])
        return {
            Path(i["file_name"]).stem: (i["original_width"], i["original_height"])
            for i in images
            if "original_width" in i
        }
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        if {"image_id", "width", "height"} <= columns:
            width_key, height_key = "width", "height"
        elif {"image_id", "dim0", "dim1"} <= columns:
            width_key, height_key = "dim1", "dim0"
        else:
            raise UserError(
                f"{path}: expected columns image_id,width,height or image_id,dim0,dim1; "
                f"found {','.join(reader.fieldnames or ())}"
            )
        return {
            row["image_id"]: (
                _positive_int(row[width_key], path, line, width_key),
                _positive_int(row[height_key], path, line, height_key),
            )
            for line, row in enumerate(reader, start=2)
        }


def prediction_string(detections, *, no_finding, scale=(1.0, 1.0), score_threshold=0.0):
    """One image's PredictionString. detections: (category_id, score, xyxy in PNG
    pixels), those at or above score_threshold written with boxes scaled by
    scale = (x, y) to the original; then "No finding" (class id no_finding)
    on (0, 0, 1, 1) scored 1 - the highest of those scores (1 without any),
    the rule `cxr.evaluation.coco_metrics.competition_metrics` scores."""
    kept = sorted((d for d in detections if d[1] >= score_threshold), key=lambda d: -d[1])
    groups = [
        f"{class_index(category)} {score:.4f} {x0 * scale[0]:.1f} {y0 * scale[1]:.1f} "
        f"{x1 * scale[0]:.1f} {y1 * scale[1]:.1f}"
        for category, score, (x0, y0, x1, y1) in kept
    ]
    normal = 1.0 - (kept[0][1] if kept else 0.0)
    return " ".join([*groups, f"{no_finding} {normal:.4f} 0 0 1 1"])


def write_submission(path, rows):
    """rows: (image_id, PredictionString) pairs; written atomically."""
    lines = ["image_id,PredictionString"] + [f"{image_id},{string}" for image_id, string in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
