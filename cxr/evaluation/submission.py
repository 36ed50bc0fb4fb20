"""Predictions for unlabeled images in the VinBigData competition's CSV format.

    image_id,PredictionString
    0a1b...,3 0.9120 690.0 1500.5 1902.0 2048.0 14 0.0880 0 0 1 1
    0c2d...,14 1.0000 0 0 1 1

A PredictionString lists `class_id score x_min y_min x_max y_max` groups
(boxes in the ORIGINAL DICOM's pixels), then "No finding" on a one-pixel
box scored 1 - the image's highest lesion score, which is how cxr's
competition metric scores it. Boxes are scaled back with each image's
original size (`cxr.data.original_sizes`). A class_id is the COCO category
id minus 1 (VinBigData's train.csv class_id).
"""


def prediction_string(detections, *, no_finding, scale=(1.0, 1.0), score_threshold=0.0):
    """One image's PredictionString. detections: (category_id, score, xyxy in PNG
    pixels), those at or above score_threshold written with boxes scaled by
    scale = (x, y) to the original; then "No finding" (class id no_finding)
    on (0, 0, 1, 1) scored 1 - the highest of those scores (1 without any),
    the rule `cxr.evaluation.coco_metrics.competition_metrics` scores."""
    kept = sorted((d for d in detections if d[1] >= score_threshold), key=lambda d: -d[1])
    groups = [
        f"{category - 1} {score:.4f} {x0 * scale[0]:.1f} {y0 * scale[1]:.1f} "
        f"{x1 * scale[0]:.1f} {y1 * scale[1]:.1f}"
        for category, score, (x0, y0, x1, y1) in kept
    ]
    normal = 1.0 - (kept[0][1] if kept else 0.0)
    return " ".join([*groups, f"{no_finding} {normal:.4f} 0 0 1 1"])


def submission_csv(rows):
    """The CSV text of (image_id, PredictionString) rows, header first."""
    lines = ["image_id,PredictionString"] + [f"{image_id},{string}" for image_id, string in rows]
    return "\n".join(lines) + "\n"
