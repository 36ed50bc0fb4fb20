"""torchvision Faster R-CNN (Ren et al., 2015) on a ResNet-FPN, the checked transfer
of a pretrained trunk into it, its file format, and batched inference.

The detector has one label per class of the prepared data plus background
(label = COCO category id, 1..K), reads images at their own size (min_size =
max_size = image_size, so 512 px images are not upscaled to torchvision's
800) and normalizes them with the ImageNet statistics `cxr.data.datasets` uses for
SSL. Norms: 'frozen' (FrozenBatchNorm2d everywhere), 'bn' or 'syncbn'
(trainable BatchNorm in the trainable stages; stages outside
trainable_layers are frozen completely, their norms included). Anchors are
torchvision's 32-512 px, one size per FPN level, whatever the image size.

`transfer_trunk` maps a torchvision ResNet state dict onto backbone.body and
refuses any missing, unexpected or mis-shaped tensor. `save_detector` writes
fasterrcnn_final.pth with a JSON of what rebuilding it needs;
`load_detector` reads exactly that (or a training checkpoint.pth).
"""

import json
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from cxr.data.datasets import IMAGE_MEAN, IMAGE_STD
from cxr.nn.resnet import FEATURE_DIMS, check_trunk_state, load_trunk_weights
from cxr.run.checkpoints import atomic_torch_save, check_finite, load_torch_file
from cxr.run.errors import UserError
from cxr.run.layout import DETECTOR, DETECTOR_META
from cxr.run.progress import progress

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
        raise UserError(
            f"unknown --arch {arch!r}; expected one of {', '.join(sorted(FEATURE_DIMS))}"
        )
    if norm not in NORMS:
        raise UserError(f"unknown --norm {norm!r}; expected one of {', '.join(NORMS)}")
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


def transfer_trunk(detector, state, arch, source):
    """Load a ResNet trunk state dict into detector.backbone.body, checked; returns
    "loaded K/K tensors from SOURCE into backbone.body"."""
    check_trunk_state(state, arch, source)
    body = detector.backbone.body
    expected = body.state_dict()
    # A frozen body has no num_batches_tracked counters: the only keys it may ignore.
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
    path = Path(ssl_backbone_path if init == "ssl" else init)
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


# The settings that rebuild a detector (build_detector's arguments), recorded beside
# its weights by save_detector and in every training checkpoint's config.
REBUILD_KEYS = ("arch", "image_size", "classes", "norm", "trainable_layers", "anchor_sizes")


def save_detector(folder, model, meta):
    """fasterrcnn_final.pth (the FasterRCNN state dict) and fasterrcnn_final.json:
    meta, which holds at least REBUILD_KEYS; folder: the run's OutputFolder."""
    missing = [key for key in REBUILD_KEYS if key not in meta]
    assert not missing, f"detector metadata lacks {missing}"
    state = model.state_dict()
    check_finite(state, "the trained detector")
    atomic_torch_save(folder.inside(DETECTOR), state)
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


def detection_collate(batch):
    """A batch of (image, target) pairs as (images, targets): images differ in size."""
    return tuple(zip(*batch))


@torch.no_grad()
def predict(model, dataset, *, indices, device, batch_size=8, workers=0, log=None):
    """COCO results (image_id, category_id, bbox xywh, score) of dataset[i] for i in
    indices; the dataset yields (image (1, H, W), target with image_id). log:
    where progress lines go (`cxr.run.progress`; None: nowhere)."""
    model.eval()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, list(indices)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=detection_collate,
    )
    results = []
    for images, targets in progress(loader, "inference", log=log):
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
