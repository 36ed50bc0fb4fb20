"""The SSL pool, and the guarantee that no prepared image enters it from outside.

The pool is the first --ssl-fraction of the prepared training images (a
prefix of `cxr.data.splits.partition`'s permutation, the labeled set being the
suffix), the normal images with --include-normal, and --extra-images. An
extra image is refused when it is a prepared image (any split) by name, by
file (the same inode) or by its pixels (the same picture however named,
encoded or resized: `cxr.data.pixel_keys`), and,
where the data has patients (split.json's group_pattern), when it is a film
of a patient with a test image (--drop-prepared leaves such images out
instead). Each is also checked to be an image Pillow will open, no larger than
its decompression-bomb limit, before training.
"""

import re
from pathlib import Path

from cxr.data.image_files import check_readable
from cxr.data.images import list_images
from cxr.data.pixel_keys import same_pictures
from cxr.data.prepared import normal_images, split_images
from cxr.data.splits import partition
from cxr.run.errors import UserError, first_few
from cxr.run.provenance import keys_of
from cxr.run.reading import json_object, read_json

SPLITS = ("train", "test", "normal")


def _file_id(path):
    """The (device, inode) that names a file whatever its path."""
    status = Path(path).stat()
    return status.st_dev, status.st_ino


def _prepared_twins(extra, data_dir, *, log, dist_info, workers):
    """{extra image: why} of every extra image that is a prepared image (pixel keys
    computed as `cxr.run.provenance.keys_of` says)."""
    prepared = {
        name: path
        for split in SPLITS
        if (Path(data_dir) / f"{split}_annotations.json").is_file()
        for name, path in split_images(data_dir, split).items()
    }
    files = {_file_id(p): p for p in prepared.values() if p.is_file()}
    twins = {}
    for path in extra:
        if path.stem in prepared:
            twins[path] = f"its name is that of {prepared[path.stem]}"
        elif (same := files.get(_file_id(path))) is not None:
            twins[path] = f"the same file as {same}"
    theirs = list(prepared.values())
    rest = [path for path in extra if path not in twins]

    def keys(paths, what):
        images = dict(enumerate(paths))
        return keys_of(images, what=what, log=log, dist_info=dist_info, workers=workers)[1]

    pairs = same_pictures(keys(rest, "--extra-images"), keys(theirs, "the prepared images"))
    for i, j in pairs:
        twins.setdefault(rest[i], f"the same picture as {theirs[j]}")
    return twins


def _test_patients(extra, data_dir):
    """{extra image: why} of every extra image of a patient with a test image."""
    path, what = Path(data_dir) / "split.json", "the split cxr.prepare writes"
    split = json_object(read_json(path, what=what), source=path, what=what, keys=("test",))
    pattern = split.get("group_pattern")
    if not isinstance(split["test"], list) or not all(isinstance(n, str) for n in split["test"]):
        raise UserError(f"{path}: expected {what}; 'test' is not a list of image names")
    if pattern is not None and not isinstance(pattern, str):
        raise UserError(f"{path}: expected {what}; 'group_pattern' is not a regular expression")
    if not pattern:
        return {}
    regex = re.compile(pattern)
    patients = {m.group(1) for m in map(regex.search, split["test"]) if m}
    return {
        path: f"a film of patient {match.group(1)}, who has test images"
        for path in extra
        if (match := regex.search(path.stem)) and match.group(1) in patients
    }


def extra_images(entries, data_dir, *, drop_prepared=False, log=print, dist_info=None, workers=0):
    """(the --extra-images files, each once, checked; {left out: why}). An image that is
    a prepared one or a film of a test patient (module docstring) is refused, all of them
    named in one message, or with drop_prepared left out. dist_info, workers: who
    computes the pixel keys (`cxr.run.provenance.keys_of`)."""
    extra = list_images(entries, "--extra-images")
    check_readable(extra, flag="--extra-images", log=log)
    twins = _prepared_twins(extra, data_dir, log=log, dist_info=dist_info, workers=workers)
    clashes = {**_test_patients(extra, data_dir), **twins}
    if clashes and not drop_prepared:
        named = first_few([f"{path} ({why})" for path, why in clashes.items()])
        raise UserError(
            f"--extra-images: {len(clashes)} of {len(extra)} images are prepared images of "
            f"{data_dir} or films of its test patients, which the SSL pool must not see: "
            f"{named}. "
            "Pass --drop-prepared to leave them out (the run's log lists each; with --dry-run "
            "they are printed), or remove them"
        )
    return [path for path in extra if path not in clashes], clashes


def ssl_pool(data_dir, *, ssl_fraction, split_seed, include_normal, extra=()):
    """{name: path} of the SSL pool; extra images are named by their paths."""
    train = split_images(data_dir, "train")
    chosen = partition(list(train), ssl_fraction, seed=split_seed).ssl
    paths = {name: train[name] for name in chosen}
    if include_normal:
        paths.update(normal_images(data_dir, flag="--include-normal"))
    paths.update({str(p): p for p in extra})
    return paths
