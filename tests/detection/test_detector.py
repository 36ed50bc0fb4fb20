"""Faster R-CNN: checked backbone transfer, frozen layers stay frozen, train_det.py end to end."""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from conftest import free_port, prepared_synthetic, tiny_detector_args
from PIL import Image
from torch import nn

import train_det
from cxr.data.classes import VINBIGDATA_CLASSES
from cxr.data.datasets import DetectionDataset
from cxr.data.image_lists import data_fingerprint, read_image_list, write_image_list
from cxr.data.splits import partition
from cxr.detection.augment import BoxAugment, BoxAugmentConfig
from cxr.detection.detector import (
    ANCHOR_SIZES,
    build_detector,
    changed_backbone_tensors,
    initialize_backbone,
    transfer_trunk,
)
from cxr.detection.samplers import RepeatFactorSampler
from cxr.run import layout
from cxr.run.distributed import DistInfo
from cxr.run.errors import UserError
from cxr.run.outputs import make_folder

REPO = Path(__file__).resolve().parents[2]


def trunk_file(tmp_path, seed=3):
    torch.manual_seed(seed)
    state = {
        k: v
        for k, v in torchvision.models.resnet18().state_dict().items()
        if not k.startswith("fc.")
    }
    path = tmp_path / "trunk.pth"
    torch.save(state, path)
    return path, state


def vinbig_detector(arch, image_size, **options):
    return build_detector(
        arch=arch, image_size=image_size, num_classes=len(VINBIGDATA_CLASSES), **options
    )


def test_transfer_loads_every_backbone_tensor_and_says_so(tmp_path):
    path, state = trunk_file(tmp_path)
    detector = vinbig_detector("resnet18", 64)
    body_keys = detector.backbone.body.state_dict().keys()
    message = initialize_backbone(detector, str(path), "resnet18", None)
    assert (
        message
        == f"loaded {len(body_keys)}/{len(body_keys)} tensors from {path} into backbone.body"
    )
    assert changed_backbone_tensors(detector, state) == []
    assert all(key in state for key in body_keys)


def test_the_architecture_of_an_init_file_is_read_from_its_tensors(tmp_path):
    path, _ = trunk_file(tmp_path)
    assert train_det.default_arch(str(path), {}) == "resnet18"
    assert train_det.default_arch("random", {}) == "resnet50"
    assert train_det.default_arch("ssl", {"arch": "resnet34"}) == "resnet34"
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(
        UserError, match="notes.txt: it is not a PyTorch file .*expected ResNet weights"
    ):
        train_det.default_arch(str(tmp_path / "notes.txt"), {})


def test_transfer_refuses_sequential_keys_and_wrong_arch(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(
        nn.Sequential(*list(reference.children())[:-1]).state_dict(), tmp_path / "sequential.pth"
    )
    with pytest.raises(UserError, match="does not hold a torchvision resnet18 trunk"):
        initialize_backbone(
            vinbig_detector("resnet18", 64), str(tmp_path / "sequential.pth"), "resnet18", None
        )
    path, state = trunk_file(tmp_path)
    with pytest.raises(UserError, match="resnet50"):
        transfer_trunk(vinbig_detector("resnet50", 64), state, "resnet50", path)
    with pytest.raises(UserError, match="--init ssl: .* not found"):
        initialize_backbone(
            vinbig_detector("resnet18", 64), "ssl", "resnet18", tmp_path / "none.pth"
        )


@pytest.mark.parametrize("norm", ["frozen", "bn"])
def test_frozen_layers_are_unchanged_by_training(tmp_path, norm):
    path, state = trunk_file(tmp_path)
    detector = build_detector(
        arch="resnet18", image_size=64, num_classes=14, norm=norm, trainable_layers=2
    )
    initialize_backbone(detector, str(path), "resnet18", None)
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


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("det"), num_images=60, seed=21)


def det_args(data_dir, out, name, *extra):
    return [*tiny_detector_args(data_dir, out, name), *extra]


@pytest.mark.slow
def test_resumed_detector_run_equals_uninterrupted(data_dir, tmp_path):
    train_det.main(det_args(data_dir, tmp_path, "straight", "--repeat-rounding", "ceil"))
    train_det.main(
        det_args(data_dir, tmp_path, "resumed", "--repeat-rounding", "ceil", "--stop-after", "1")
    )
    assert not (tmp_path / "resumed" / "fasterrcnn_final.pth").exists()
    train_det.main(det_args(data_dir, tmp_path, "resumed", "--repeat-rounding", "ceil", "--resume"))
    straight = torch.load(tmp_path / "straight" / "fasterrcnn_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "fasterrcnn_final.pth", weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    meta = json.loads((tmp_path / "straight" / "fasterrcnn_final.json").read_text())
    history = json.loads((tmp_path / "straight" / "eval_history.json").read_text())
    assert meta["num_classes"] == 15 and [h["epoch"] for h in history] == [1, 2]
    assert history == json.loads((tmp_path / "resumed" / "eval_history.json").read_text())
    assert 0.0 <= history[-1]["AP50"] <= 1.0 and len(history[-1]["per_class"]) == 14
    model = vinbig_detector("resnet18", 64)
    model.load_state_dict(straight)  # the file is exactly a FasterRCNN state dict
    records = [
        json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    ]
    scheduled = next(r["scheduled_steps"] for r in records if r["event"] == "data")
    assert (
        torch.load(tmp_path / "straight" / "checkpoint.pth", weights_only=True)["step"] == scheduled
    )


@pytest.fixture(scope="module")
def one_epoch_run(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("one-epoch")
    train_det.main(det_args(data_dir, root, "run", "--stop-after", "1", "--eval-every", "0"))
    return root  # a run stopped after one of its two epochs


@pytest.mark.slow
@pytest.mark.parametrize(
    "changed",
    [
        ("--lr-schedule", "cosine"),
        ("--lr-steps", "0.5,0.9"),
        ("--warmup-iters", "3"),
        ("--weight-decay", "0"),
        ("--no-augment",),
        ("--amp", "bf16"),
        ("--clip-grad", "1"),
        ("--warmup-factor", "0.5"),
        ("--norm", "bn"),
    ],
)
def test_resume_refuses_every_setting_that_changes_the_result(data_dir, one_epoch_run, changed):
    root = one_epoch_run
    header = (root / "run" / "args.json").read_text()
    key = changed[0].lstrip("-").replace("-", "_").replace("no_", "")
    with pytest.raises(
        UserError, match=f"--resume with different settings than the checkpoint: {key} "
    ):
        train_det.main(det_args(data_dir, root, "run", "--resume", *changed))
    assert (root / "run" / "args.json").read_text() == header  # refused before writing anything


@pytest.mark.slow
def test_labeled_set_must_not_overlap_the_ssl_pool(data_dir, tmp_path):
    train_names = [
        Path(line).stem for line in json.loads((data_dir / "split.json").read_text())["train"]
    ]
    pretrain = tmp_path / "exp" / "pretrain"
    make_folder(pretrain)  # as train_ssl.py makes it: both folders marked as cxr's
    write_image_list(
        pretrain / layout.SSL_IMAGES,
        partition(train_names, 0.5, seed=0).ssl,
        fingerprint=data_fingerprint(data_dir),
    )
    (pretrain / "pretrained-backbone.json").write_text(
        json.dumps({"ssl_fraction": 0.5, "split_seed": 0, "arch": "resnet18"})
    )
    with pytest.raises(UserError, match="were in the SSL pool .*--allow-overlap"):
        train_det.main(
            det_args(data_dir, tmp_path, "exp", "--labeled-fraction", "0.8", "--epochs", "1")
        )
    nothing_written = [".cxr-output", "pretrain"]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == nothing_written
    train_det.main(det_args(data_dir, tmp_path, "exp", "--epochs", "1", "--eval-every", "0"))
    labeled = read_image_list(tmp_path / "exp" / layout.LABELED_IMAGES).names
    pool = read_image_list(pretrain / layout.SSL_IMAGES).names
    assert labeled and not set(labeled) & set(pool) and len(labeled) + len(pool) == len(train_names)
    assert (pretrain / layout.SSL_IMAGES).exists()  # --replace and runs never touch pretrain/


def test_seed_project_command_line_parses_with_its_meaning(capsys):
    seed = (
        "--experiment-name simclr_60pct --labeled-dataset-percent 0.4 --epochs 100 --batch-size 8 "
        "--lr 0.01"
    )
    args = train_det.get_args_parser().parse_args(shlex.split(seed))
    assert (args.labeled_fraction, args.epochs, args.batch_size, args.lr, args.init) == (
        0.4,
        100,
        8,
        0.01,
        "ssl",
    )
    # The old name means the SSL share in train_ssl.py: typing it says what it is read as.
    assert "--labeled-dataset-percent 0.4 is read as --labeled-fraction 0.4" in (
        capsys.readouterr().err
    )
    train_det.get_args_parser().parse_args(["--labeled-fraction", "0.4"])
    assert capsys.readouterr().err == ""


def torchrun_det(data_dir, tmp_path, name, *extra):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train_det.py",
        *det_args(data_dir, tmp_path, name, "--batch-size", "2", *extra),
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_torchrun_two_processes_train_evaluate_and_resume_exactly(data_dir, tmp_path):
    """Two gloo processes with global BatchNorm; stopped after epoch 1 and resumed,
    the run ends with the uninterrupted run's weights (each rank's randomness
    comes from (seed, epoch, rank) and the sampler's per-item seeds, not from a
    saved generator state)."""
    result = torchrun_det(data_dir, tmp_path, "ddp")
    history = json.loads((tmp_path / "ddp" / "eval_history.json").read_text())
    assert len(history) == 2 and history[-1]["AP"] is not None
    assert json.loads((tmp_path / "ddp" / "args.json").read_text())["world_size"] == 2
    assert "norm syncbn" in result.stdout
    torchrun_det(data_dir, tmp_path, "resumed", "--stop-after", "1")
    torchrun_det(data_dir, tmp_path, "resumed", "--resume")
    straight = torch.load(tmp_path / "ddp" / "fasterrcnn_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "fasterrcnn_final.pth", weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


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
        args = SimpleNamespace(seed=0, repeat_rounding="stochastic", batch_size=2, workers=0)
        sampler, loader = train_det.training_loader(
            dataset, [1.0] * 8, args, DistInfo(rank, world_size, 0, torch.device("cpu"))
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


def test_schedule_spans_every_step_of_the_repeat_factor_epochs():
    """With ceil rounding an epoch holds sum(ceil(r)) items, with stochastic a
    random count: the schedule has one rate per step actually taken, so cosine
    ends at the last step and the step milestones fall at 67% and 89%."""
    factors = [1.0, 1.2, 2.4, 1.7, 3.1] * 10
    for rounding, world in (("ceil", 1), ("stochastic", 2), ("ceil", 3)):
        sampler = RepeatFactorSampler(factors, num_replicas=world, seed=4, rounding=rounding)
        steps = train_det.epoch_steps(sampler, batch_size=4, epochs=5)
        real = []
        for epoch in range(5):
            sampler.set_epoch(epoch)
            real.append(
                len(torch.utils.data.DataLoader(range(10**4), batch_size=4, sampler=sampler))
            )
        assert steps == real, rounding
    assert sum(
        train_det.epoch_steps(RepeatFactorSampler(factors, rounding="ceil"), 4, 5)
    ) > 5 * math.ceil(sum(factors) / 4)
    args = train_det.get_args_parser().parse_args(["--warmup-iters", "10", "--lr", "0.1"])
    rates = train_det.learning_rates(args, 300)
    assert len(rates) == 300 and rates[9] == pytest.approx(0.1)
    assert [10 + int(np.flatnonzero(rates[10:] < r)[0]) for r in (0.05, 0.005)] == [201, 267]
    args.lr_schedule = "cosine"
    cosine = train_det.learning_rates(args, 300)
    assert len(cosine) == 300 and cosine[-1] < 1e-5 and cosine[-1] > 0
    args.warmup_iters = 301
    with pytest.raises(UserError, match="--warmup-iters 301 is longer than the whole run"):
        train_det.learning_rates(args, 300)


def test_anchors_are_torchvisions_and_the_default_protocol_trains_a_random_start():
    model = vinbig_detector("resnet18", 128)
    assert ANCHOR_SIZES == (32, 64, 128, 256, 512)
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    body = model.backbone.body
    assert all(p.requires_grad for p in body.parameters())  # all five stages train
    norms = [m for m in body.modules() if "Norm" in type(m).__name__]
    assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)  # normalization that learns
