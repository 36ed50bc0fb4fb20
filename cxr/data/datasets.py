"""Image reading and datasets over a prepared data folder (see cxr.prepare).

Images are grayscale PNGs (8-bit, or 16-bit scaled to 8 bits). Loaders
return them as uint8 tensors of shape (1, size, size); conversion to the
network's input (three identical channels, normalized with ImageNet
statistics, as torchvision's detection transform does) happens on the device
in `to_network_input`, so SSL pretraining and the detector see the same
input distribution.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.data.classes import class_index, dataset_classes
from cxr.run.errors import UserError

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def open_grayscale(path):
    """An image file as an 8-bit grayscale ('L') PIL image.

    16-bit grayscale PNGs (which Pillow opens as I;16 or I) are scaled from
    0..65535 to 0..255; Pillow's own conversion would clip them to white.
    Colour images are converted to their luminance."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # named, not printed
            image = Image.open(path)
        with image:
            if image.mode in SIXTEEN_BIT_MODES:
                wide = np.asarray(image, dtype=np.float64)
                return Image.fromarray(
                    np.clip(np.rint(wide * (255 / 65535)), 0, 255).astype(np.uint8)
                )
            return image.convert("L")
    except (OSError, ValueError, SyntaxError, Warning, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def read_grayscale(path, size=None):
    """An image as a uint8 tensor (1, H, W), resized (bilinear) to size x size if given."""
    image = open_grayscale(path)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).unsqueeze(0)


def uint8_to_network_input(images, device):
    """(B, 1, H, W) uint8 images -> normalized network input on the device."""
    return to_network_input(images.to(device).float() / 255)


def to_network_input(images):
    """(B, 1, H, W) floats in [0, 1] -> (B, 3, H, W) normalized network input."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images.expand(-1, 3, -1, -1) - mean) / std


def xyxy(bbox):
    """A COCO [x, y, width, height] box as (x_min, y_min, x_max, y_max)."""
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def load_coco(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"annotation file {path} not found; run `python -m cxr.prepare` first "
            "or check --data-dir"
        )
    return json.loads(path.read_text())


def read_classes(data_dir):
    """The class names of a prepared data folder (its categories, ids 1..K)."""
    path = Path(data_dir) / "train_annotations.json"
    return dataset_classes(load_coco(path), path)


def split_images(data_dir, split):
    """{image name: path} of one prepared split ('train', 'test' or 'normal')."""
    coco = load_coco(Path(data_dir) / f"{split}_annotations.json")
    folder = Path(data_dir) / split
    return {Path(image["file_name"]).stem: folder / image["file_name"] for image in coco["images"]}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(entries, flag):
    """The image files of folders and files, each file once (a file reached
    twice, by two names or through two folders, is listed once), in order."""
    files, seen = [], set()
    for entry in map(Path, entries):
        if entry.is_dir():
            found = sorted(
                p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif entry.is_file():
            found = [entry]
        else:
            raise UserError(f"{flag} {entry}: no such file or folder")
        for path in found:
            identity = (path.stat().st_dev, path.stat().st_ino)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    if not files:
        raise UserError(f"{flag} {' '.join(map(str, entries))}: no .png/.jpg images found")
    return files


def image_labels(data_dir, split):
    """{image name: (K,) float multi-hot of the classes present}."""
    coco = load_coco(Path(data_dir) / f"{split}_annotations.json")
    num_classes = len(dataset_classes(coco, Path(data_dir) / f"{split}_annotations.json"))
    names = {image["id"]: Path(image["file_name"]).stem for image in coco["images"]}
    labels = {name: np.zeros(num_classes, dtype=np.float32) for name in names.values()}
    for annotation in coco["annotations"]:
        labels[names[annotation["image_id"]]][class_index(annotation["category_id"])] = 1.0
    return labels


class ImageList(torch.utils.data.Dataset):
    """Decoded grayscale images of a list of paths, each resized to `size`."""

    def __init__(self, paths, size):
        self.paths, self.size = list(paths), size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return read_grayscale(self.paths[index], self.size)


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


class DetectionDataset(torch.utils.data.Dataset):
    """(image (1, H, W) float in [0, 1], target) pairs of a COCO dict's images.

    target: boxes (N, 4) float xyxy in the PNG's pixels, labels (N,) COCO
    category ids, image_id (the COCO id; -1 for added box-free negatives).
    names: keep only these image names; negatives: extra image paths without
    boxes; augment: a callable (image, boxes, labels, generator) -> (image,
    boxes, labels), e.g. BoxAugment. With augment the dataset is indexed by
    (index, seed) pairs, as `cxr.detection.samplers.RepeatFactorSampler` yields them,
    and each item's draws come from a generator seeded with its seed.
    `DetectionDataset.split(data_dir, split)` reads a prepared split.
    """

    def __init__(self, coco, image_dir, *, names=None, negatives=(), augment=None):
        boxes_of = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            boxes_of[annotation["image_id"]].append(annotation)
        self.items = []
        for image in coco["images"]:
            if names is not None and Path(image["file_name"]).stem not in names:
                continue
            annotations = boxes_of[image["id"]]
            boxes = torch.tensor([xyxy(a["bbox"]) for a in annotations], dtype=torch.float32).view(
                -1, 4
            )
            labels = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
            self.items.append((Path(image_dir) / image["file_name"], boxes, labels, image["id"]))
        for path in negatives:
            self.items.append(
                (Path(path), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), -1)
            )
        self.augment = augment

    @classmethod
    def split(cls, data_dir, split, **kwargs):
        return cls(
            load_coco(Path(data_dir) / f"{split}_annotations.json"),
            Path(data_dir) / split,
            **kwargs,
        )

    def __len__(self):
        return len(self.items)

    def image_classes(self):
        """The set of category ids on each image, for repeat factors."""
        return [set(labels.tolist()) for _, _, labels, _ in self.items]

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, boxes, labels, image_id = self.items[index]
        image = read_grayscale(path).float() / 255
        if self.augment is not None:
            if seed is None:
                raise TypeError("an augmenting DetectionDataset is indexed by (index, seed) pairs")
            image, boxes, labels = self.augment(
                image, boxes, labels, torch.Generator().manual_seed(seed)
            )
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id}
