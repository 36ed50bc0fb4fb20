"""torchvision Faster R-CNN (Ren et al., 2015) on a ResNet-FPN, the checked transfer
of a pretrained trunk into it, and batched inference.

The detector has one label per class of the prepared data plus background
(label = COCO category id, 1..K), reads images at their own size (min_size =
max_size = image_size, so 512 px images are not upscaled to torchvision's
800) and normalizes them with the ImageNet statistics of `cxr.nn.resnet`, as
SimCLR does. Norms: 'frozen' (FrozenBatchNorm2d everywhere), 'bn' or
'syncbn' (trainable BatchNorm in the trainable stages; stages outside
trainable_layers are frozen completely, their norms included). Anchors are
torchvision's 32-512 px, one size per FPN level, whatever the image size.
`transfer_trunk` maps a torchvision ResNet trunk's state dict onto
backbone.body and refuses any missing, unexpected or mis-shaped tensor.
"""

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from cxr.nn.resnet import FEATURE_DIMS, IMAGE_MEAN, IMAGE_STD, trunk_mismatch

NORMS = ("frozen", "bn", "syncbn")
ANCHOR_SIZES = (32, 64, 128, 256, 512)  # torchvision's, one per FPN level (strides 4 to 64)
ASPECT_RATIOS = (0.5, 1.0, 2.0)


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
    *,
    arch,
    image_size,
    num_classes,
    norm="syncbn",
    trainable_layers=5,
    roi_batch_size=512,
    rpn_proposals=2000,
    anchor_sizes=ANCHOR_SIZES,
):
    """Faster R-CNN with a randomly initialized `arch`-FPN backbone.

    num_classes: the lesion classes (the model predicts num_classes + 1
    labels, 0 being background); roi_batch_size: proposals sampled per image
    to train the box head (torchvision: 512); rpn_proposals: proposals the
    RPN keeps per image in training (torchvision: 2000; inference keeps
    1000). Both are sized for 800 px COCO images and dominate a CPU step at
    small sizes (bench/bench_det.py)."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(FEATURE_DIMS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    backbone = resnet_fpn_backbone(
        backbone_name=arch,
        weights=None,
        norm_layer=FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d,
        trainable_layers=trainable_layers,
    )
    _freeze_norms_of_frozen_layers(backbone.body)
    sizes = tuple((size,) for size in anchor_sizes)
    return FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=image_size,
        max_size=image_size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes)),
        box_batch_size_per_image=roi_batch_size,
        rpn_pre_nms_top_n_train=rpn_proposals,
        rpn_post_nms_top_n_train=rpn_proposals,
    )


def transfer_trunk(detector, state, arch):
    """Load an `arch` trunk's state dict (torchvision ResNet keys, no fc) into
    detector.backbone.body, every tensor checked; returns "loaded K/K tensors"."""
    missing, unexpected, misshaped = trunk_mismatch(state, arch)
    if missing or unexpected or misshaped:
        raise ValueError(
            f"not a {arch} trunk: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"mis-shaped {misshaped[:4]}"
        )
    body = detector.backbone.body
    expected = body.state_dict()
    # A frozen body has no num_batches_tracked counters: the only keys it may ignore.
    incoming = {
        k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")
    }
    body.load_state_dict(incoming, strict=True)
    return f"loaded {len(incoming)}/{len(expected)} tensors"


def detection_collate(batch):
    """A batch of (image, target) pairs as (images, targets): images differ in size."""
    return tuple(zip(*batch))


@torch.no_grad()
def predict(model, batches, *, device):
    """COCO results (image_id, category_id, bbox xywh, score) of every image of
    `batches`: (images, targets) pairs as `detection_collate` makes them, each
    image (1, H, W) in [0, 1], each target holding its image_id."""
    model.eval()
    results = []
    for images, targets in batches:
        outputs = model([image.to(device).expand(3, -1, -1) for image in images])
        for output, target in zip(outputs, targets):
            boxes = output["boxes"].cpu()  # (N, 4) xyxy
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            for box, score, label in zip(
                xywh.tolist(), output["scores"].tolist(), output["labels"].tolist()
            ):
                results.append(
                    {
                        "image_id": int(target["image_id"]),
                        "category_id": int(label),
                        "bbox": box,
                        "score": score,
                    }
                )
    return results
