"""The model files: a pretrained backbone and a detector, each a state dict of tensors
with a JSON beside it saying what rebuilds it.

    <experiment>/pretrain/pretrained-backbone.pth (+ .json)   train_ssl.py
    <experiment>/fasterrcnn_final.pth (+ .json)               train_det.py

Every load goes through `cxr.run.checkpoints.load_torch_file` (weights only)
and is checked before any tensor is used: finite values, and exactly the
tensors the model has, key by key and shape by shape, or one error naming
the file and the first keys that differ.
"""

import json
from pathlib import Path

import torch

from cxr.detection.detector import build_detector
from cxr.nn.resnet import headless_resnet, trunk_mismatch, trunk_shapes
from cxr.run.checkpoints import check_finite, load_torch_file, torch_bytes
from cxr.run.errors import UserError
from cxr.run.layout import BACKBONE, BACKBONE_META, DETECTOR, DETECTOR_META

# The settings that rebuild a detector (build_detector's arguments), recorded beside
# its weights by save_detector and in every training checkpoint's config.
REBUILD_KEYS = ("arch", "image_size", "classes", "norm", "trainable_layers", "anchor_sizes")


def _sample(keys):
    return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")


def load_trunk_weights(path):
    """A ResNet trunk state dict from `path`, stripped of fc: a pretrained backbone
    of cxr's, or any torchvision ResNet checkpoint (e.g. ImageNet weights)."""
    state = load_torch_file(path, "ResNet weights (a state dict)")
    if isinstance(state, dict) and "model" in state and "config" in state:
        raise UserError(
            f"{path} is a training checkpoint, not a backbone; pass the run's "
            f"{BACKBONE} (written beside it when the run finishes)"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    check_finite(state, str(path))
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def read_trunk(path, arch):
    """(state dict, 'loaded K/K tensors from PATH') of an `arch` trunk file, every
    tensor checked against the architecture."""
    state = load_trunk_weights(path)
    missing, unexpected, misshaped = trunk_mismatch(state, arch)
    if missing or unexpected or misshaped:
        raise UserError(
            f"{path} does not hold a torchvision {arch} trunk: {len(missing)} missing "
            f"({_sample(missing)}), {len(unexpected)} unexpected ({_sample(unexpected)}), "
            f"{len(misshaped)} of the wrong shape ({_sample(misshaped)}). Check --arch, and that "
            "the file has torchvision ResNet keys (conv1.weight, layer1.0.conv1.weight, ...)"
        )
    return state, f"loaded {len(state)}/{len(trunk_shapes(arch))} tensors from {path}"


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


def backbone_meta(path):
    """The metadata save_backbone wrote beside a backbone file ({} if there is none:
    a state dict from elsewhere, e.g. ImageNet weights)."""
    meta_path = Path(path).with_suffix(".json")
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


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
        return saved["model"], saved["config"]  # a training checkpoint
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(
            f"{meta_path} not found: train_det.py writes it beside {Path(path).name} with the "
            "architecture, image size and classes the weights need"
        )
    return saved, json.loads(meta_path.read_text())


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
    check_finite(state, str(path))
    model = build_detector(
        arch=meta["arch"],
        image_size=meta["image_size"],
        num_classes=len(meta["classes"]),
        norm="bn" if meta["norm"] == "syncbn" else meta["norm"],
        trainable_layers=meta["trainable_layers"],
        anchor_sizes=meta["anchor_sizes"],
    )
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise UserError(
            f"{path} is not a cxr Faster R-CNN {meta['arch']}-FPN with {len(meta['classes'])} "
            f"classes ({meta['norm']} norm): missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong_shape[:3]}"
        )
    model.load_state_dict(state)
    return model.eval(), meta
