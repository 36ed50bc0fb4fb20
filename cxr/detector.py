"""torchvision Faster R-CNN (Ren et al., 2015) on a ResNet-FPN backbone, and the
CHECKED transfer of a pretrained trunk into it.

The detector has 15 classes (background + the 14 lesions; label = COCO
category id), reads images at their own size (min_size = max_size =
image_size, so 512 px images are not upscaled to torchvision's 800) and
normalizes them with the ImageNet statistics `cxr.data` uses for SSL.

Norm layers: 'frozen' (FrozenBatchNorm2d everywhere, torchvision's choice for
fine-tuning), 'bn' or 'syncbn' (trainable BatchNorm in the trainable layers;
the layers outside --trainable-layers are frozen completely, their norms
included, so frozen really means unchanged).

`transfer_trunk` maps a torchvision ResNet state dict onto backbone.body,
asserts the exact sets of missing and unexpected keys and every shape, and
returns "loaded K/K tensors from FILE". BatchNorm's num_batches_tracked
counters are the only keys a frozen body may ignore.
"""

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from .backbone import FEATURE_DIMS, check_trunk_state, load_trunk_weights
from .classes import NUM_CLASSES
from .data import IMAGE_MEAN, IMAGE_STD
from .errors import UserError

NORMS = ("frozen", "bn", "syncbn")


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


def build_detector(arch, image_size, norm="frozen", trainable_layers=3, roi_batch_size=512):
    """Faster R-CNN with a randomly initialized `arch`-FPN backbone.

    roi_batch_size: proposals sampled per image to train the box head
    (torchvision's default 512); the box head's cost grows with it."""
    if arch not in FEATURE_DIMS:
        raise UserError(f"unknown --arch {arch!r}; expected one of {', '.join(sorted(FEATURE_DIMS))}")
    if norm not in NORMS:
        raise UserError(f"unknown --norm {norm!r}; expected one of {', '.join(NORMS)}")
    if not 0 <= trainable_layers <= 5:
        raise UserError(f"--trainable-layers must be in 0..5, got {trainable_layers}")
    backbone = resnet_fpn_backbone(backbone_name=arch, weights=None,
                                   norm_layer=FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d,
                                   trainable_layers=trainable_layers)
    _freeze_norms_of_frozen_layers(backbone.body)
    return FasterRCNN(backbone, num_classes=NUM_CLASSES + 1, min_size=image_size, max_size=image_size,
                      image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
                      box_batch_size_per_image=roi_batch_size)


def transfer_trunk(detector, state, arch, source):
    """Load a ResNet trunk state dict into detector.backbone.body, checked."""
    check_trunk_state(state, arch, source)
    body = detector.backbone.body
    expected = body.state_dict()
    incoming = {k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(incoming))
    unexpected = sorted(set(incoming) - set(expected))
    if missing or unexpected:
        raise UserError(f"{source}: cannot map onto the detector's backbone: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}")
    body.load_state_dict(incoming, strict=True)
    return f"loaded {len(incoming)}/{len(expected)} tensors from {source} into backbone.body"


def initialize_backbone(detector, init, arch, ssl_backbone_path):
    """--init ssl|random|PATH; returns the log message of what was loaded."""
    if init == "random":
        return f"backbone: random {arch} initialization (torchvision defaults)"
    path = ssl_backbone_path if init == "ssl" else init
    if init == "ssl" and not path.is_file():
        raise UserError(f"--init ssl: {path} not found; pretrain with train_ssl.py first, "
                        "or use --init random or --init PATH")
    return transfer_trunk(detector, load_trunk_weights(path), arch, path)


def changed_backbone_tensors(detector, state):
    """Names of backbone.body tensors that differ from `state` (empty when identical)."""
    body = detector.backbone.body.state_dict()
    return sorted(k for k, v in body.items() if k in state and not torch.equal(v.cpu(), state[k].cpu()))
