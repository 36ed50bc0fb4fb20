"""The image lists a run records: which images it pretrained or fine-tuned on.

ssl_images.json and labeled_images.json are JSON, so every file name
survives (a name with a space or a comma is one name), and each carries the
fingerprint of the prepared data it was drawn from (`data_fingerprint`):
train_det.py refuses an SSL pool drawn from another preparation of the data,
and --resume refuses a data folder that changed since the run started.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cxr.run.errors import UserError
from cxr.run.outputs import atomic_write_json
from cxr.run.reading import json_object, read_json

FINGERPRINTED = ("split.json", "train_annotations.json", "test_annotations.json")


def data_fingerprint(data_dir):
    """A hash of a prepared folder's split and annotations: equal for the same
    preparation, different after preparing again with another seed or table."""
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        path = Path(data_dir) / name
        if not path.is_file():
            raise UserError(
                f"{path} not found; run python -m cxr.prepare first or check --data-dir"
            )
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ImageList:
    names: list  # image names (or, for --extra-images, paths), sorted
    data_fingerprint: str  # of the prepared data they were drawn from


def write_image_list(path, names, *, fingerprint):
    atomic_write_json(path, {"data_fingerprint": fingerprint, "images": sorted(names)}, indent=0)


def read_image_list(path):
    """The ImageList written at path, or None if there is none."""
    what = "an image list written by cxr"
    record = read_json(path, what=what, default=None)
    if record is None:
        return None
    json_object(record, source=path, what=what, keys=("images", "data_fingerprint"))
    names, fingerprint = record["images"], record["data_fingerprint"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: expected {what}; 'images' is not a list of names")
    if not isinstance(fingerprint, str):
        raise UserError(f"{path}: expected {what}; 'data_fingerprint' is not a string")
    return ImageList(names, fingerprint)
