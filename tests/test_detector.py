"""Faster R-CNN: checked backbone transfer, frozen layers stay frozen, train_det.py end to end."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import train_det
from conftest import prepared_synthetic
from cxr.detector import build_detector, changed_backbone_tensors, initialize_backbone, transfer_trunk
from cxr.errors import UserError
from cxr.splits import partition

REPO = Path(__file__).resolve().parents[1]


def trunk_file(tmp_path, seed=3):
    torch.manual_seed(seed)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "trunk.pth"
    torch.save(state, path)
    return path, state


def test_transfer_loads_every_backbone_tensor_and_says_so(tmp_path):
    path, state = trunk_file(tmp_path)
    detector = build_detector("resnet18", 64)
    body_keys = detector.backbone.body.state_dict().keys()
    message = initialize_backbone(detector, str(path), "resnet18", None)
    assert message == f"loaded {len(body_keys)}/{len(body_keys)} tensors from {path} into backbone.body"
    assert changed_backbone_tensors(detector, state) == []
    assert all(key in state for key in body_keys)


def test_transfer_refuses_sequential_keys_and_wrong_arch(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(nn.Sequential(*list(reference.children())[:-1]).state_dict(), tmp_path / "sequential.pth")
    with pytest.raises(UserError, match="does not hold a torchvision resnet18 trunk"):
        initialize_backbone(build_detector("resnet18", 64), str(tmp_path / "sequential.pth"), "resnet18", None)
    path, state = trunk_file(tmp_path)
    with pytest.raises(UserError, match="resnet50"):
        transfer_trunk(build_detector("resnet50", 64), state, "resnet50", path)
    with pytest.raises(UserError, match="--init ssl: .* not found"):
        initialize_backbone(build_detector("resnet18", 64), "ssl", "resnet18", tmp_path / "none.pth")


@pytest.mark.parametrize("norm", ["frozen", "bn"])
def test_frozen_layers_are_unchanged_by_training(tmp_path, norm):
    path, state = trunk_file(tmp_path)
    detector = build_detector("resnet18", 64, norm=norm, trainable_layers=2)
    initialize_backbone(detector, str(path), "resnet18", None)
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    detector.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
        targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([3])} for _ in range(2)]
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
    return ["--data-dir", str(data_dir), "--output-dir", str(out), "--experiment-name", name, "--init", "random",
            "--arch", "resnet18", "--image-size", "64", "--batch-size", "4", "--epochs", "2", "--workers", "0",
            "--warmup-iters", "2", "--device", "cpu", "--print-freq", "100", "--eval-batch-size", "8",
            "--roi-batch-size", "32", *extra]


@pytest.mark.slow
def test_resumed_detector_run_equals_uninterrupted(data_dir, tmp_path):
    train_det.main(det_args(data_dir, tmp_path, "straight"))
    train_det.main(det_args(data_dir, tmp_path, "resumed", "--stop-after", "1"))
    assert not (tmp_path / "resumed" / "fasterrcnn_final.pth").exists()
    train_det.main(det_args(data_dir, tmp_path, "resumed", "--resume"))
    straight = torch.load(tmp_path / "straight" / "fasterrcnn_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "fasterrcnn_final.pth", weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    meta = json.loads((tmp_path / "straight" / "fasterrcnn_final.json").read_text())
    history = json.loads((tmp_path / "straight" / "eval_history.json").read_text())
    assert meta["num_classes"] == 15 and [h["epoch"] for h in history] == [1, 2]
    assert history == json.loads((tmp_path / "resumed" / "eval_history.json").read_text())
    assert 0.0 <= history[-1]["AP50"] <= 1.0 and len(history[-1]["per_class"]) == 14
    detector = build_detector("resnet18", 64)
    detector.load_state_dict(straight)                 # the file is exactly a FasterRCNN state dict


@pytest.mark.slow
def test_labeled_set_must_not_overlap_the_ssl_pool(data_dir, tmp_path):
    train_names = [Path(line).stem for line in json.loads((data_dir / "split.json").read_text())["train"]]
    pretrain = tmp_path / "exp" / "pretrain"
    pretrain.mkdir(parents=True)
    (pretrain / "ssl_images.txt").write_text("\n".join(partition(train_names, 0.5, seed=0).ssl) + "\n")
    (pretrain / "pretrained-backbone.json").write_text(json.dumps({"ssl_fraction": 0.5, "split_seed": 0,
                                                                   "arch": "resnet18"}))
    with pytest.raises(UserError, match="were in the SSL pool .*--allow-overlap"):
        train_det.main(det_args(data_dir, tmp_path, "exp", "--labeled-fraction", "0.8", "--epochs", "1"))
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["pretrain"]   # nothing written
    train_det.main(det_args(data_dir, tmp_path, "exp", "--epochs", "1", "--eval-every", "0"))
    labeled = (tmp_path / "exp" / "labeled_images.txt").read_text().split()
    pool = (pretrain / "ssl_images.txt").read_text().split()
    assert labeled and not set(labeled) & set(pool) and len(labeled) + len(pool) == len(train_names)
    assert (pretrain / "ssl_images.txt").exists()       # --replace and runs never touch pretrain/


def test_seed_project_command_line_parses_with_its_meaning():
    seed = "--experiment-name simclr_60pct --labeled-dataset-percent 0.4 --epochs 100 --batch-size 8 --lr 0.01"
    args = train_det.get_args_parser().parse_args(shlex.split(seed))
    assert (args.labeled_fraction, args.epochs, args.batch_size, args.lr, args.init) == (0.4, 100, 8, 0.01, "ssl")


@pytest.mark.slow
def test_torchrun_two_processes_train_and_evaluate(data_dir, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_det.py",
               *det_args(data_dir, tmp_path, "ddp", "--epochs", "1", "--batch-size", "2")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "ddp" / "eval_history.json").read_text())
    assert len(history) == 1 and history[0]["AP"] is not None
    assert json.loads((tmp_path / "ddp" / "args.json").read_text())["world_size"] == 2
