"""The datasets the models read: decoded images of a list of files (SimCLR, the probe)
and (image, boxes) pairs of a COCO dict (the detector).

Loaders return images as uint8 (1, size, size) tensors (`ImageList`) or
floats in [0, 1] (`DetectionDataset`); `cxr.nn.resnet.to_network_input`
turns them into the network's input on the device.
"""

from pathlib import Path

import torch

from cxr.data.image_files import image_size
from cxr.data.images import read_grayscale
from cxr.data.prepared import load_coco
from cxr.run.errors import UserError, first_few


def xyxy(bbox):
    """A COCO [x, y, width, height] box as (x_min, y_min, x_max, y_max)."""
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


class ImageList(torch.utils.data.Dataset):
    """Decoded grayscale images of a list of paths, each resized to `size`; after
    `decode_once`, the same tensors from memory."""

    def __init__(self, paths, size):
        self.paths, self.size = list(paths), size
        self.decoded = None  # (N, 1, size, size) uint8, once decode_once has run

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if self.decoded is not None:
            return self.decoded[index]
        return read_grayscale(self.paths[index], self.size)

    def decoded_bytes(self):
        return len(self.paths) * self.size * self.size

    def decode_once(self, *, workers):
        """Decode every image now (with `workers` loader processes), so that epochs read
        memory: loader workers started later share it (fork) instead of decoding again."""
        loader = torch.utils.data.DataLoader(self, batch_size=64, num_workers=workers)
        self.decoded = torch.cat(list(loader)) if len(self) else torch.zeros(0, 1, 1, 1)


def check_sizes(coco, image_dir, *, names=None):
    """Refuse images (of `names`, if given) whose files are not the width x height
    their COCO entries give (where they give one): boxes in one size scored on
    pictures of another would be wrong without a word. Reads each file's header."""
    wrong = []
    for image in coco["images"]:
        given = image.get("width"), image.get("height")
        if None in given or (names is not None and Path(image["file_name"]).stem not in names):
            continue
        path = Path(image_dir) / image["file_name"]
        size = image_size(path)
        if size != given:
            wrong.append(f"{path} is {size[0]} x {size[1]}, its entry says {given[0]} x {given[1]}")
    if wrong:
        raise UserError(
            f"{len(wrong)} images are not the size their annotations give them (their "
            f"boxes are in those pixels): {first_few(wrong)}. Prepare them again"
        )


class DetectionDataset(torch.utils.data.Dataset):
    """(image (1, H, W) float in [0, 1], target) pairs of a COCO dict's images.

    target: boxes (N, 4) float xyxy in the PNG's pixels, labels (N,) COCO
    category ids, image_id (the COCO id; -1 for added box-free negatives).
    names: keep only these image names; negatives: extra image paths without
    boxes. Every image file must have the width and height its COCO entry gives
    it (the boxes are in those pixels), or one UserError names the first that do
    not (`check_sizes`). augment: a callable (image, boxes, labels, generator) -> (image,
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
        check_sizes(coco, image_dir, names=names)
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
