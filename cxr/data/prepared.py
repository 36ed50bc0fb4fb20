"""What a prepared data folder holds, read back (`python -m cxr.prepare` writes it).

    DATA/train/, DATA/test/, DATA/normal/         the images (hard links)
    DATA/{split}_annotations.json                COCO, category ids 1..K
    DATA/split.json, DATA/prepare_summary.json

Every stage after prepare reads its images, labels and classes here.
"""

from pathlib import Path

import numpy as np

from cxr.data.classes import class_index, dataset_classes
from cxr.data.coco_format import check_ground_truth
from cxr.run.errors import UserError
from cxr.run.reading import read_json


def load_coco(path):
    """A COCO file cxr.prepare wrote (or one in its form), its structure checked
    (`cxr.data.coco_format.check_ground_truth`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"annotation file {path} not found; run `python -m cxr.prepare` first "
            "or check --data-dir"
        )
    return check_ground_truth(read_json(path, what="a COCO file"), path)


def prepared_format(data_dir):
    """The source format (vinbigdata, nih, coco) prepare_summary.json records, or None
    where it cannot be read (the commands' own checks then say what is wrong)."""
    try:
        summary = read_json(Path(data_dir) / "prepare_summary.json", what="prepare's summary")
    except UserError:
        return None
    return summary.get("format") if isinstance(summary, dict) else None


def normal_images(data_dir, *, flag):
    """{name: path} of the normal images a flag (--include-normal, --negatives) asks for;
    an error saying how to get them where the data folder was prepared without them."""
    if not (Path(data_dir) / "normal_annotations.json").is_file():
        raise UserError(
            f"{flag} needs the normal images, and {data_dir} holds none: prepare it with "
            "python -m cxr.prepare --keep-normal"
        )
    return split_images(data_dir, "normal")


def read_classes(data_dir):
    """The class names of a prepared data folder (its categories, ids 1..K)."""
    path = Path(data_dir) / "train_annotations.json"
    return dataset_classes(load_coco(path), path)


def split_images(data_dir, split):
    """{image name: path} of one prepared split ('train', 'test' or 'normal')."""
    coco = load_coco(Path(data_dir) / f"{split}_annotations.json")
    folder = Path(data_dir) / split
    return {Path(image["file_name"]).stem: folder / image["file_name"] for image in coco["images"]}


def image_labels(data_dir, split):
    """{image name: (K,) float multi-hot of the classes present}."""
    coco = load_coco(Path(data_dir) / f"{split}_annotations.json")
    num_classes = len(dataset_classes(coco, Path(data_dir) / f"{split}_annotations.json"))
    names = {image["id"]: Path(image["file_name"]).stem for image in coco["images"]}
    labels = {name: np.zeros(num_classes, dtype=np.float32) for name in names.values()}
    for annotation in coco["annotations"]:
        labels[names[annotation["image_id"]]][class_index(annotation["category_id"])] = 1.0
    return labels


def check_images_exist(coco, image_dir, annotation_source):
    """Raise a UserError naming the first missing images of a COCO dict."""
    missing = [
        image["file_name"]
        for image in coco["images"]
        if not (Path(image_dir) / image["file_name"]).is_file()
    ]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(coco['images'])} images of {annotation_source} are not in "
            f"{image_dir} (e.g. {', '.join(missing[:3])}); check the image folder and annotation "
            "file"
        )
