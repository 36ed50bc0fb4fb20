"""The SSL pool, and the guarantee that no prepared image enters it from outside.

The pool is the first --ssl-fraction of the prepared training images (a
prefix of `cxr.data.splits.partition`'s permutation, the labeled set being the
suffix), the normal images with --include-normal, and --extra-images. An
extra image is refused when it is a prepared image (any split) by name, by
file (the same inode) or by content (the same bytes, however named), and,
where the data has patients (split.json's group_pattern), when it is a film
of a patient with a test image. Each is also checked to be an image Pillow
will open, no larger than its decompression-bomb limit, before training.
"""

import hashlib
import json
import re
import warnings
from pathlib import Path

from PIL import Image

from cxr.data.images import list_images
from cxr.data.prepared import split_images
from cxr.data.splits import partition
from cxr.run.errors import UserError
from cxr.run.progress import progress

SPLITS = ("train", "test", "normal")


def _content(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_readable(paths, log):
    """Refuse an image Pillow cannot open, or one over its decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS or float("inf")
    for path in progress(paths, "checking --extra-images", log=log):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
        except Image.DecompressionBombError:
            width = height = None
        except (OSError, ValueError, SyntaxError) as error:
            raise UserError(f"--extra-images: cannot read {path}: {error}") from None
        if width is None or width * height > limit:
            size = "larger than" if width is None else f"{width} x {height} pixels, more than"
            raise UserError(
                f"--extra-images: {path} is {size} Pillow's limit of {limit} pixels (a "
                "decompression bomb, or a scan to shrink first); leave it out"
            )


def _clash(extra, data_dir, log):
    """(extra image, why) of the first extra image that is a prepared image, or None."""
    prepared = {
        name: path
        for split in SPLITS
        if (Path(data_dir) / f"{split}_annotations.json").is_file()
        for name, path in split_images(data_dir, split).items()
    }
    files = {(p.stat().st_dev, p.stat().st_ino) for p in prepared.values() if p.is_file()}
    for path in extra:
        if path.stem in prepared:
            return path, f"its name is that of {prepared[path.stem]}"
        if (path.stat().st_dev, path.stat().st_ino) in files:
            return path, "it is the same file as a prepared image"
    hashing = progress(prepared.values(), "hashing the prepared images", log=log)
    contents = {_content(p): p for p in hashing}
    for path in progress(extra, "hashing --extra-images", log=log):
        twin = contents.get(_content(path))
        if twin is not None:
            return path, f"it holds the same bytes as {twin}"
    return None


def _test_patient(extra, data_dir):
    """(extra image, patient) of the first extra image of a patient with a test image."""
    split = json.loads((Path(data_dir) / "split.json").read_text())
    pattern = split.get("group_pattern")
    if not pattern:
        return None
    regex = re.compile(pattern)
    patients = {m.group(1) for m in map(regex.search, split["test"]) if m}
    for path in extra:
        match = regex.search(path.stem)
        if match and match.group(1) in patients:
            return path, match.group(1)
    return None


def extra_images(entries, data_dir, log=print):
    """The --extra-images files, each once, checked (module docstring)."""
    extra = list_images(entries, "--extra-images")
    check_readable(extra, log)
    clash = _clash(extra, data_dir, log)
    if clash:
        raise UserError(
            f"--extra-images {clash[0]} is in the prepared data {data_dir} ({clash[1]}): it may "
            "be a test or labeled image, which the SSL pool must not see. Remove it from the "
            "extra images"
        )
    patient = _test_patient(extra, data_dir)
    if patient:
        raise UserError(
            f"--extra-images {patient[0]} is a film of patient {patient[1]}, who has test images "
            f"in {data_dir}: pretraining on it would leak the test patient. Remove it"
        )
    return extra


def ssl_pool(data_dir, *, ssl_fraction, split_seed, include_normal, extra=()):
    """{name: path} of the SSL pool; extra images are named by their paths."""
    train = split_images(data_dir, "train")
    chosen = partition(list(train), ssl_fraction, seed=split_seed).ssl
    paths = {name: train[name] for name in chosen}
    if include_normal:
        paths.update(split_images(data_dir, "normal"))
    paths.update({str(p): p for p in extra})
    return paths
