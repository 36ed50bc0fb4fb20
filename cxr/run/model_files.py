"""The model files: a pretrained backbone and a detector, each a state dict of tensors
with a JSON beside it saying what rebuilds it.

    <experiment>/pretrain/pretrained-backbone.pth (+ .json)   train_ssl.py
    <experiment>/fasterrcnn_final.pth (+ .json)               train_det.py

Every load goes through `cxr.run.checkpoints.load_torch_file` (weights only)
and is checked before any tensor is used: finite values, and exactly the
tensors the model has, key by key and shape by shape, or one error naming
the file and the first keys that differ.
"""

from pathlib import Path

import torch

from cxr.detection.detector import build_detector
from cxr.nn.resnet import FEATURE_DIMS, headless_resnet, infer_arch, trunk_mismatch, trunk_shapes
from cxr.run.checkpoints import check_finite, load_torch_file, state_mismatch, torch_bytes
from cxr.run.errors import UserError
from cxr.run.layout import BACKBONE, BACKBONE_META, DETECTOR, DETECTOR_META
from cxr.run.provenance import parse_trained_on
from cxr.run.reading import json_object, read_json

# The settings that rebuild a detector (build_detector's arguments), recorded beside
# its weights by save_detector and in every training checkpoint's config.
REBUILD_KEYS = ("arch", "image_size", "classes", "norm", "trainable_layers", "anchor_sizes")


def _sample(keys):
    return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")


# Where other tools keep a model's weights in their checkpoints (Lightning: "state_dict";
# torchvision's references and timm: "model"), and the prefixes their keys carry (DDP:
# "module."; a SimCLR or Lightning module: "backbone.", "encoder.", "trunk.", "model.").
WRAPPERS = ("state_dict", "model", "net")
PREFIXES = ("module.", "backbone.", "encoder.", "trunk.", "model.")


def _tensors_of(path):
    """(the state dict of tensors in `path`, where it was found in the file)."""
    saved = load_torch_file(path, "ResNet weights (a state dict)")
    if isinstance(saved, dict) and "model" in saved and "config" in saved:
        raise UserError(
            f"{path} is a cxr training checkpoint, not a backbone; pass the run's "
            f"{BACKBONE} (written beside it when the run finishes)"
        )
    where = []
    while isinstance(saved, dict) and not all(isinstance(v, torch.Tensor) for v in saved.values()):
        inner = next((key for key in WRAPPERS if isinstance(saved.get(key), dict)), None)
        if inner is None:
            break
        saved, where = saved[inner], [*where, f"its {inner!r}"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise UserError(f"{path} is not a state dict of tensors (nor holds one under {WRAPPERS})")
    if not all(isinstance(key, str) for key in saved):
        raise UserError(f"{path}: its state dict has keys that are not names")
    check_finite(saved, str(path))
    return saved, where


def trunk_candidates(state):
    """(what was taken, trunk state without fc) of every reading of `state` as a ResNet
    trunk: all of it, then the keys under each prefix, prefixes stacked (module.backbone.)."""
    found, queue = [], [((), state)]
    while queue:
        prefixes, current = queue.pop(0)
        found.append((prefixes, {k: v for k, v in current.items() if not k.startswith("fc.")}))
        for prefix in PREFIXES:
            inner = {k[len(prefix) :]: v for k, v in current.items() if k.startswith(prefix)}
            if inner and len(prefixes) < 3:
                queue.append(((*prefixes, prefix), inner))
    return found


def _taken(where, prefixes, state, kept):
    parts = list(where)
    if prefixes:
        parts.append(f"the keys under {''.join(prefixes)!r}")
        if len(kept) < len(state):
            parts.append(f"{len(state) - len(kept)} other tensors left out")
    return f" ({', '.join(parts)})" if parts else ""


def load_trunk_weights(path):
    """A ResNet trunk state dict (torchvision keys, no fc) from `path`: a pretrained
    backbone of cxr's, a torchvision ResNet (ImageNet weights), or another tool's
    checkpoint holding one (`WRAPPERS`, `PREFIXES`); the first reading that is a whole
    trunk of some ResNet, else the file's own keys."""
    readings = [trunk for _, trunk in trunk_candidates(_tensors_of(path)[0])]
    return next((trunk for trunk in readings if infer_arch(trunk) is not None), readings[0])


def read_trunk(path, arch):
    """(state dict, 'loaded K/K tensors from PATH (where)') of an `arch` trunk in
    `path`, every tensor checked against the architecture; another tool's checkpoint is
    read as `load_trunk_weights` says, and what was taken is said."""
    state, where = _tensors_of(path)
    readings = trunk_candidates(state)
    for prefixes, trunk in readings:
        if trunk_mismatch(trunk, arch) == ([], [], []):
            taken = _taken(where, prefixes, state, trunk)
            return (
                trunk,
                f"loaded {len(trunk)}/{len(trunk_shapes(arch))} tensors from {path}{taken}",
            )
    missing, unexpected, misshaped = trunk_mismatch(readings[0][1], arch)
    raise UserError(
        f"{path} does not hold a torchvision {arch} trunk: {len(missing)} missing "
        f"({_sample(missing)}), {len(unexpected)} unexpected ({_sample(unexpected)}), "
        f"{len(misshaped)} of the wrong shape ({_sample(misshaped)}), also under the prefixes "
        f"{', '.join(PREFIXES)}. Check --arch, and that the file has torchvision ResNet keys "
        "(conv1.weight, layer1.0.conv1.weight, ...)"
    )


def pretrained_trunk(arch, path):
    """(a headless `arch` ResNet holding the checked weights of `path`, message)."""
    state, message = read_trunk(path, arch)
    model = headless_resnet(arch)
    model.load_state_dict(state, strict=True)
    return model, message


def save_backbone(folder, state, meta):
    """pretrained-backbone.pth (a trunk state dict with torchvision ResNet keys, no fc)
    and beside it pretrained-backbone.json: meta, with at least arch and image_size;
    folder: the run's `cxr.run.outputs.OutputFolder`."""
    assert {"arch", "image_size"} <= set(meta), "backbone metadata needs arch and image_size"
    check_finite(state, "the trained backbone")
    folder.write_bytes(BACKBONE, torch_bytes(state))
    folder.write_json(BACKBONE_META, meta, indent=1)


def _count(value, low, high=10**6):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# What each metadata entry must be: a check, and the form an error names.
META_FORMS = {
    "arch": (
        lambda v: isinstance(v, str) and v in FEATURE_DIMS,
        f"one of {', '.join(FEATURE_DIMS)}",
    ),
    "image_size": (lambda v: _count(v, 1), "a positive whole number"),
    "classes": (
        lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v),
        "a list of class names",
    ),
    "norm": (
        lambda v: isinstance(v, str) and v in ("frozen", "bn", "syncbn"),
        "frozen, bn or syncbn",
    ),
    "trainable_layers": (lambda v: _count(v, 0, 5), "a whole number from 0 to 5"),
    "anchor_sizes": (
        lambda v: isinstance(v, list) and v and all(_count(a, 1) for a in v),
        "a list of positive whole numbers",
    ),
    "split_seed": (lambda v: _count(v, 0, 2**32 - 1), "a seed (a whole number from 0)"),
    "ssl_fraction": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
        "a share from 0 to 1",
    ),
    "trained_on": (
        lambda v: parse_trained_on(v) is not None,
        "a list of the entries cxr writes (what, data_fingerprint, images, pixel_keys)",
    ),
}


def check_meta(meta, source, *, what, keys=()):
    """Model metadata (a JSON object holding `keys`), each entry META_FORMS knows checked."""
    json_object(meta, source=source, what=what, keys=keys)
    for key, (valid, form) in META_FORMS.items():
        if key in meta and not valid(meta[key]):
            raise UserError(f"{source}: {key} {meta[key]!r} is not {form}; expected {what}")
    return meta


def backbone_meta(path):
    """The metadata save_backbone wrote beside a backbone file ({} if there is none:
    a state dict from elsewhere, e.g. ImageNet weights)."""
    meta_path, what = Path(path).with_suffix(".json"), "the metadata train_ssl.py writes"
    meta = read_json(meta_path, what=what, default=None)
    return {} if meta is None else check_meta(meta, meta_path, what=what)


def save_detector(folder, model, meta):
    """fasterrcnn_final.pth (the FasterRCNN state dict) and fasterrcnn_final.json:
    meta, which holds at least REBUILD_KEYS; folder: the run's OutputFolder."""
    missing = [key for key in REBUILD_KEYS if key not in meta]
    assert not missing, f"detector metadata lacks {missing}"
    state = model.state_dict()
    check_finite(state, "the trained detector")
    folder.write_bytes(DETECTOR, torch_bytes(state))
    folder.write_json(DETECTOR_META, meta, indent=1)


def _read_detector_file(path):
    """(state dict, metadata) of fasterrcnn_final.pth + its JSON, or of a checkpoint.pth."""
    saved = load_torch_file(path, "a cxr Faster R-CNN")
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict) and "config" in saved:
        what = "a training checkpoint's config"  # a training checkpoint
        record = {"trained_on": saved["trained_on"]} if "trained_on" in saved else {}
        return saved["model"], check_meta({**saved["config"], **record}, path, what=what)
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(
            f"{meta_path} not found: train_det.py writes it beside {Path(path).name} with the "
            "architecture, image size and classes the weights need"
        )
    what = "the metadata train_det.py writes"
    return saved, check_meta(read_json(meta_path, what=what), meta_path, what=what)


def load_detector(path):
    """(detector in eval mode, metadata) from a file written by train_det.py."""
    state, meta = _read_detector_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    missing = [key for key in REBUILD_KEYS if key not in meta]
    if missing:
        raise UserError(
            f"{path}: its metadata lacks {', '.join(missing)}; train it with train_det.py"
        )
    if not all(isinstance(key, str) for key in state):
        raise UserError(f"{path}: its state dict has keys that are not names")
    check_finite(state, str(path))
    model = build_detector(
        arch=meta["arch"],
        image_size=meta["image_size"],
        num_classes=len(meta["classes"]),
        norm="bn" if meta["norm"] == "syncbn" else meta["norm"],
        trainable_layers=meta["trainable_layers"],
        anchor_sizes=meta["anchor_sizes"],
    )
    missing, unexpected, wrong_shape = state_mismatch(state, model.state_dict())
    if missing or unexpected or wrong_shape:
        raise UserError(
            f"{path} is not a cxr Faster R-CNN {meta['arch']}-FPN with {len(meta['classes'])} "
            f"classes ({meta['norm']} norm): missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong_shape[:3]}"
        )
    model.load_state_dict(state)
    return model.eval(), meta
