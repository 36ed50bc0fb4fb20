"""Faster R-CNN: the checked transfer of a trunk, frozen layers stay frozen, torchvision's
anchors, and per-rank augmentation draws."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from conftest import free_port, trunk_file
from PIL import Image
from torch import nn

from cxr.data.classes import VINBIGDATA_CLASSES
from cxr.data.datasets import DetectionDataset
from cxr.detection.augment import BoxAugment, BoxAugmentConfig
from cxr.detection.detector import ANCHOR_SIZES, build_detector, detection_collate, transfer_trunk
from cxr.detection.samplers import RepeatFactorSampler
from cxr.run.errors import UserError
from cxr.run.model_files import read_trunk


def vinbig_detector(arch, image_size, **options):
    return build_detector(
        arch=arch, image_size=image_size, num_classes=len(VINBIGDATA_CLASSES), **options
    )


def changed_backbone_tensors(detector, state):
    """Names of backbone.body tensors that differ from `state` (empty when identical)."""
    body = detector.backbone.body.state_dict()
    return sorted(
        k for k, v in body.items() if k in state and not torch.equal(v.cpu(), state[k].cpu())
    )


def test_transfer_loads_every_backbone_tensor_and_says_so(tmp_path):
    path, state = trunk_file(tmp_path)
    detector = vinbig_detector("resnet18", 64)
    body_keys = detector.backbone.body.state_dict().keys()
    state, read = read_trunk(path, "resnet18")
    assert read == f"loaded {len(body_keys)}/{len(body_keys)} tensors from {path}"
    assert transfer_trunk(detector, state, "resnet18") == (
        f"loaded {len(body_keys)}/{len(body_keys)} tensors"
    )
    assert changed_backbone_tensors(detector, state) == []
    assert all(key in state for key in body_keys)


def test_transfer_refuses_sequential_keys_and_wrong_arch(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(
        nn.Sequential(*list(reference.children())[:-1]).state_dict(), tmp_path / "sequential.pth"
    )
    with pytest.raises(UserError, match="does not hold a torchvision resnet18 trunk"):
        read_trunk(tmp_path / "sequential.pth", "resnet18")
    sequential = torch.load(tmp_path / "sequential.pth", weights_only=True)
    with pytest.raises(
        ValueError, match="not a resnet18 trunk: missing .*bn1.bias.*unexpected .*0.weight"
    ):
        transfer_trunk(vinbig_detector("resnet18", 64), sequential, "resnet18")
    path, state = trunk_file(tmp_path)
    with pytest.raises(UserError, match="does not hold a torchvision resnet50 trunk"):
        read_trunk(path, "resnet50")
    with pytest.raises(ValueError, match="not a resnet50 trunk"):
        transfer_trunk(vinbig_detector("resnet50", 64), state, "resnet50")


@pytest.mark.parametrize("norm", ["frozen", "bn"])
def test_frozen_layers_are_unchanged_by_training(tmp_path, norm):
    path, state = trunk_file(tmp_path)
    detector = build_detector(
        arch="resnet18", image_size=64, num_classes=14, norm=norm, trainable_layers=2
    )
    transfer_trunk(detector, state, "resnet18")
    optimizer = torch.optim.SGD(
        [p for p in detector.parameters() if p.requires_grad], lr=0.05, momentum=0.9
    )
    detector.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
        targets = [
            {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([3])}
            for _ in range(2)
        ]
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = changed_backbone_tensors(detector, state)
    assert changed and all(k.startswith(("layer3", "layer4")) for k in changed), changed


def _augmentation_worker(rank, world_size, port, image_path, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        coco = {
            "images": [{"id": i, "file_name": image_path.name} for i in range(1, 9)],
            "annotations": [],
        }
        dataset = DetectionDataset(
            coco, image_path.parent, augment=BoxAugment(BoxAugmentConfig(geometric_p=1.0))
        )
        sampler = RepeatFactorSampler(
            [1.0] * 8, num_replicas=world_size, rank=rank, seed=0, batch_size=2
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=2, sampler=sampler, collate_fn=detection_collate
        )
        sampler.set_epoch(0)
        torch.manual_seed(0)  # the same global state on both ranks
        torch.save([torch.stack(images) for images, _ in loader], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_draw_different_augmentations(tmp_path):
    """Eight copies of one image, two real processes: every augmented image
    differs between the ranks at the same batch position, and within a rank."""
    Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)).save(
        tmp_path / "same.png"
    )
    mp.spawn(
        _augmentation_worker,
        args=(2, free_port(), tmp_path / "same.png", str(tmp_path / "batches")),
        nprocs=2,
        join=True,
    )
    rank0, rank1 = (
        torch.load(f"{tmp_path / 'batches'}.{rank}", weights_only=True) for rank in (0, 1)
    )
    assert len(rank0) == len(rank1) == 2
    images = torch.cat(rank0 + rank1).flatten(1)
    distances = torch.cdist(images, images)
    assert (distances + torch.eye(len(images)) > 1e-3).all()


def test_anchors_are_torchvisions_and_the_default_protocol_trains_a_random_start():
    model = vinbig_detector("resnet18", 128)
    assert ANCHOR_SIZES == (32, 64, 128, 256, 512)
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    body = model.backbone.body
    assert all(p.requires_grad for p in body.parameters())  # all five stages train
    norms = [m for m in body.modules() if "Norm" in type(m).__name__]
    assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)  # normalization that learns


def test_the_box_head_scores_every_class_and_the_background():
    detector = build_detector(arch="resnet18", image_size=64, num_classes=3)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 4  # 0: background
    assert detector.roi_heads.box_predictor.bbox_pred.out_features == 4 * 4
