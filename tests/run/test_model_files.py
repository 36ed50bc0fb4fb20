"""Model files: a trunk file is checked key by key and shape by shape before any tensor
is used, and a bad one is one error naming the file."""

import pytest
import torch
import torchvision
from torch import nn

from cxr.run.errors import UserError
from cxr.run.model_files import load_trunk_weights, pretrained_trunk, read_trunk


def test_a_trunk_file_is_loaded_only_when_it_holds_exactly_the_trunk(tmp_path):
    reference = torchvision.models.resnet18()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "good.pth")
    trunk, message = pretrained_trunk("resnet18", tmp_path / "good.pth")
    assert message == f"loaded {len(state)}/{len(state)} tensors from {tmp_path / 'good.pth'}"
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key
    sequential = nn.Sequential(*list(reference.children())[:-1])
    torch.save(sequential.state_dict(), tmp_path / "sequential.pth")
    with pytest.raises(UserError, match="sequential.pth does not hold .* unexpected .*0.weight"):
        pretrained_trunk("resnet18", tmp_path / "sequential.pth")
    state["conv1.weight"] = state["conv1.weight"][:, :1]
    torch.save(state, tmp_path / "one_channel.pth")
    with pytest.raises(UserError, match="1 of the wrong shape \\(conv1.weight\\)"):
        read_trunk(tmp_path / "one_channel.pth", "resnet18")
    with pytest.raises(UserError, match="good.pth does not hold a torchvision resnet50 trunk"):
        read_trunk(tmp_path / "good.pth", "resnet50")


def test_other_tools_checkpoints_are_read_and_what_was_taken_is_said(tmp_path):
    """A Lightning checkpoint (weights under 'state_dict', the trunk under 'backbone.',
    a projection head beside it) and a DDP one ('module.'): the trunk is found, every
    tensor still checked, and the message says where it was."""
    reference = torchvision.models.resnet18()
    trunk = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    head = {"projection_head.0.weight": torch.zeros(8, 512)}
    lightning = {
        "epoch": 3,
        "state_dict": {**{f"backbone.{k}": v for k, v in trunk.items()}, **head},
    }
    torch.save(lightning, tmp_path / "lightning.ckpt")
    state, message = read_trunk(tmp_path / "lightning.ckpt", "resnet18")
    assert state.keys() == trunk.keys() and all(torch.equal(state[k], trunk[k]) for k in trunk)
    assert "its 'state_dict', the keys under 'backbone.', 1 other tensors left out" in message
    torch.save({f"module.{k}": v for k, v in trunk.items()}, tmp_path / "ddp.pth")
    assert "under 'module.'" in read_trunk(tmp_path / "ddp.pth", "resnet18")[1]
    assert load_trunk_weights(tmp_path / "lightning.ckpt").keys() == trunk.keys()
    broken = {f"backbone.{k}": v for k, v in trunk.items() if k != "conv1.weight"}
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(UserError, match="broken.ckpt does not hold .* also under the prefixes"):
        read_trunk(tmp_path / "broken.ckpt", "resnet18")
