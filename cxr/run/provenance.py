"""What a model learnt from, recorded in its metadata and checked wherever it is used.

pretrained-backbone.json and fasterrcnn_final.json hold `trained_on`: one entry
per set of images the model learnt from (a backbone: its SSL pool; a detector:
its backbone's entries, then its fine-tuning images), each with the images'
names, their pixel keys (`cxr.data.pixel_keys`) and the fingerprint of the data
folder they came from. train_det.py, whatever its --init, and evaluate.py
compare these keys with the images they are about to fine-tune on or score,
so a model that learnt from a test image is refused whatever its file's path,
name or experiment, and a renamed or re-encoded copy counts as the image. A
model without a record (ImageNet weights, another tool's checkpoint) is
accepted, and the run says that it was not checked.
"""

from dataclasses import dataclass

import torch

from cxr.data.image_lists import data_fingerprint
from cxr.data.pixel_keys import decode_keys, encode_keys, pixel_keys, same_pictures
from cxr.run.distributed import computed_together
from cxr.run.errors import UserError, first_few

ENTRY_KEYS = ("what", "data_fingerprint", "images", "pixel_keys")


@dataclass(frozen=True)
class TrainedOn:
    """One set of images a model learnt from."""

    what: str  # "SSL pool", "fine-tuning images"
    data_fingerprint: str  # `cxr.data.image_lists.data_fingerprint` of their data folder
    names: list  # image names (--extra-images: their paths)
    keys: torch.Tensor  # (len(names), KEY_SIZE) pixel keys, in the order of names


def trained_on_entry(what, names, keys, *, data_dir):
    """The JSON entry of `trained_on` for images `names` with pixel keys `keys`."""
    return {
        "what": what,
        "data_fingerprint": data_fingerprint(data_dir),
        "images": list(names),
        "pixel_keys": encode_keys(keys),
    }


def parse_trained_on(value):
    """The TrainedOn entries of a metadata's `trained_on` value, or None where it is not
    a list of entries `trained_on_entry` writes."""
    if not isinstance(value, list):
        return None
    entries = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS):
            return None
        what, fingerprint, names = entry["what"], entry["data_fingerprint"], entry["images"]
        if not all(isinstance(v, str) for v in (what, fingerprint, entry["pixel_keys"])):
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        keys = decode_keys(entry["pixel_keys"], len(names))
        if keys is None:
            return None
        entries.append(TrainedOn(what, fingerprint, names, keys))
    return entries


def model_record(meta):
    """The TrainedOn entries of checked metadata, or None for a model without a record."""
    return None if "trained_on" not in meta else parse_trained_on(meta["trained_on"])


def keys_of(images, *, what, log, dist_info=None, workers=0):
    """(names, keys) of {name: path} images, decoded by `workers` loader processes in each
    of the run's processes (dist_info; None: this one alone), which share the files."""
    names = list(images)
    paths = [images[n] for n in names]

    def compute(part):
        return pixel_keys(part, what=f"pixel keys of {what}", log=log, workers=workers)

    keys = compute(paths) if dist_info is None else computed_together(paths, compute, dist_info)
    return names, keys


def seen_in(record, names, keys):
    """{name: (entry's what, the name it has there)} of the images `names` (keys `keys`)
    that an entry of `record` holds by their pixels."""
    seen = {}
    for entry in record:
        for i, j in same_pictures(keys, entry.keys):
            seen.setdefault(names[i], (entry.what, entry.names[j]))
    return seen


def refuse_learnt(record, names, keys, *, model, role, advice, listing=None):
    """One UserError naming how many and which of the images `names` (keys `keys`, the
    `role` of this run: "test images of DATA") the model learnt from; nothing if none.
    listing: where each of them is written first, one line each (None: nowhere)."""
    seen = seen_in(record, names, keys)
    if not seen:
        return
    learnt = [
        name + ("" if theirs == name else f" (as {theirs})") + f" in its {what}"
        for name, (what, theirs) in sorted(seen.items())
    ]
    for line in learnt if listing is not None else ():
        listing(f"learnt: {line}")
    raise UserError(
        f"{model} learnt from {len(seen)} of the {len(names)} {role} (the same pictures, by "
        f"their pixels): {first_few(learnt)}. {advice}"
    )


def describe_record(record, model):
    """One line: what `model` learnt from, or that it keeps no record."""
    if record is None:
        return f"{model} keeps no record of the images it learnt from: not checked against them"
    sets = " and ".join(f"its {entry.what} ({len(entry.names)} images)" for entry in record)
    return f"{model} learnt from {sets}: checked against this run's images by their pixels"


def check_unlearnt(meta, images, *, model, role, log, dist_info=None, workers=0):
    """Refuse a model (its checked metadata `meta`) that learnt from any of `images`
    ({name: path}, the `role` of this run: "test images of ..."), their keys computed as
    `keys_of` says; returns what was checked."""
    record = model_record(meta)
    if record is not None:
        names, keys = keys_of(images, what=role, log=log, dist_info=dist_info, workers=workers)
        advice = "Its scores on them would not be a test: score it on images it never saw"
        refuse_learnt(record, names, keys, model=model, role=role, advice=advice)
    return describe_record(record, model)
