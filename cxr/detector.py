"""torchvision Faster R-CNN (Ren et al., 2015) on a ResNet-FPN backbone, and the
CHECKED transfer of a pretrained trunk into it.

The detector has 15 classes (background + the 14 lesions; label = COCO
category id), reads images at their own size (min_size = max_size =
image_size, so 512 px images are not upscaled to torchvision's 800) and
normalizes them with the ImageNet statistics `cxr.data` uses for SSL.

Norm layers: 'frozen' (FrozenBatchNorm2d everywhere, torchvision's choice for
fine-tuning), 'bn' or 'syncbn' (trainable BatchNorm in the trainable layers;
the layers outside --trainable-layers are frozen completely, their norms
included, so frozen really means unchanged; train_det.py makes 'syncbn'
global across processes with `cxr.global_batchnorm`).

Anchors: torchvision's sizes 32, 64, 128, 256, 512 px, one per FPN level
(strides 4 to 64, so each anchor is 8 strides wide), aspect ratios 0.5, 1, 2,
whatever the image size ('torchvision', the default). 'scaled' multiplies
them by image_size / 800, the share of the image they cover on torchvision's
own 800 px resize (5 to 82 px at 128 px); it keeps the strides, so an object
is matched on a level whose grid is 8 times coarser relative to its size,
and it halved mAP at 128 px (docs/experiments.md, "Do anchors need to scale
with the image?").

`transfer_trunk` maps a torchvision ResNet state dict onto backbone.body,
asserts the exact sets of missing and unexpected keys and every shape, and
returns "loaded K/K tensors from FILE". BatchNorm's num_batches_tracked
counters are the only keys a frozen body may ignore.

`load_detector` rebuilds a trained detector for inference from
fasterrcnn_final.pth and the metadata JSON train_det.py writes beside it (or
from a training checkpoint.pth, whose config says the same), refusing a file
that is not a cxr Faster R-CNN of that shape or whose classes differ.
"""

import json
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from .backbone import FEATURE_DIMS, check_trunk_state, load_trunk_weights
from .checkpoint_io import load_torch_file
from .classes import CLASS_NAMES, NUM_CLASSES
from .data import IMAGE_MEAN, IMAGE_STD
from .errors import UserError

NORMS = ("frozen", "bn", "syncbn")
ANCHORS = ("torchvision", "scaled")
TORCHVISION_ANCHOR_SIZES = (32, 64, 128, 256, 512)
TORCHVISION_IMAGE_SIZE = 800


def anchor_sizes(image_size, anchors="torchvision"):
    """One anchor size per FPN level, in pixels of the image the model reads."""
    if anchors not in ANCHORS:
        raise UserError(f"unknown --anchors {anchors!r}; expected one of {', '.join(ANCHORS)}")
    scale = image_size / TORCHVISION_IMAGE_SIZE if anchors == "scaled" else 1.0
    return tuple((max(1, round(size * scale)),) for size in TORCHVISION_ANCHOR_SIZES)


def _freeze_norms_of_frozen_layers(module):
    """Replace each BatchNorm2d whose parameters are frozen with FrozenBatchNorm2d."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not child.weight.requires_grad:
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _freeze_norms_of_frozen_layers(child)


def build_detector(
    arch,
    image_size,
    norm="syncbn",
    trainable_layers=5,
    roi_batch_size=512,
    anchors="torchvision",
    rpn_proposals=2000,
):
    """Faster R-CNN with a randomly initialized `arch`-FPN backbone.

    roi_batch_size: proposals sampled per image to train the box head
    (torchvision's default 512); rpn_proposals: proposals the RPN keeps per
    image in training, before and after NMS (torchvision's 2000; inference
    keeps torchvision's 1000). Both are sized for 800 px COCO images and
    dominate a CPU step at small sizes (tests/bench/bench_det.py)."""
    if arch not in FEATURE_DIMS:
        raise UserError(
            f"unknown --arch {arch!r}; expected one of {', '.join(sorted(FEATURE_DIMS))}"
        )
    if norm not in NORMS:
        raise UserError(f"unknown --norm {norm!r}; expected one of {', '.join(NORMS)}")
    if not 0 <= trainable_layers <= 5:
        raise UserError(f"--trainable-layers must be in 0..5, got {trainable_layers}")
    backbone = resnet_fpn_backbone(
        backbone_name=arch,
        weights=None,
        norm_layer=FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d,
        trainable_layers=trainable_layers,
    )
    _freeze_norms_of_frozen_layers(backbone.body)
    sizes = anchor_sizes(image_size, anchors)
    anchor_generator = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return FasterRCNN(
        backbone,
        num_classes=NUM_CLASSES + 1,
        min_size=image_size,
        max_size=image_size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchor_generator,
        box_batch_size_per_image=roi_batch_size,
        rpn_pre_nms_top_n_train=rpn_proposals,
        rpn_post_nms_top_n_train=rpn_proposals,
    )


def transfer_trunk(detector, state, arch, source):
    """Load a ResNet trunk state dict into detector.backbone.body, checked."""
    check_trunk_state(state, arch, source)
    body = detector.backbone.body
    expected = body.state_dict()
    incoming = {
        k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")
    }
    missing = sorted(set(expected) - set(incoming))
    unexpected = sorted(set(incoming) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{source}: cannot map onto the detector's backbone: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    body.load_state_dict(incoming, strict=True)
    return f"loaded {len(incoming)}/{len(expected)} tensors from {source} into backbone.body"


def initialize_backbone(detector, init, arch, ssl_backbone_path):
    """--init ssl|random|PATH; returns the log message of what was loaded."""
    if init == "random":
        return f"backbone: random {arch} initialization (torchvision defaults)"
    path = ssl_backbone_path if init == "ssl" else init
    if init == "ssl" and not path.is_file():
        raise UserError(
            f"--init ssl: {path} not found; pretrain with train_ssl.py first, "
            "or use --init random or --init PATH"
        )
    return transfer_trunk(detector, load_trunk_weights(path), arch, path)


def changed_backbone_tensors(detector, state):
    """Names of backbone.body tensors that differ from `state` (empty when identical)."""
    body = detector.backbone.body.state_dict()
    return sorted(
        k for k, v in body.items() if k in state and not torch.equal(v.cpu(), state[k].cpu())
    )


def _read_detector_file(path):
    """(state dict, metadata) of fasterrcnn_final.pth + its JSON, or of a checkpoint.pth."""
    saved = load_torch_file(path, "a cxr Faster R-CNN")
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict) and "config" in saved:
        return saved["model"], saved["config"]
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(
            f"{meta_path} not found: train_det.py writes it beside {Path(path).name} with the "
            "architecture and image size the weights need"
        )
    return saved, json.loads(meta_path.read_text())


def load_detector(path):
    """(detector in eval mode, metadata) from a file written by train_det.py."""
    state, meta = _read_detector_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    classes = meta.get("classes", list(CLASS_NAMES))
    head = state.get("roi_heads.box_predictor.cls_score.weight")
    if list(classes) != list(CLASS_NAMES) or (
        head is not None and head.shape[0] != NUM_CLASSES + 1
    ):
        found = head.shape[0] if head is not None else len(classes) + 1
        raise UserError(
            f"{path}: its classes do not match cxr's: it predicts {found} labels, cxr has "
            f"{NUM_CLASSES + 1} (background + the 14 VinBigData lesions in cxr/classes.py)"
        )
    # Files written before anchors and norms were recorded were trained with these defaults.
    norm = "bn" if meta.get("norm") == "syncbn" else meta.get("norm", "frozen")
    model = build_detector(
        meta["arch"],
        meta["image_size"],
        norm,
        meta.get("trainable_layers", 3),
        anchors=meta.get("anchors", "torchvision"),
    )
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise UserError(
            f"{path} is not a cxr Faster R-CNN {meta['arch']}-FPN "
            f"({meta.get('norm', 'frozen')} norm): missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]}"
        )
    model.load_state_dict(state)
    return model.eval(), meta
