"""ResNet trunks: checked weight transfer and precise BatchNorm statistics."""

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from cxr.nn.resnet import check_trunk_state, pretrained_trunk, recompute_batchnorm_statistics
from cxr.run.errors import UserError


def test_trunk_transfer_is_checked_key_by_key(tmp_path):
    reference = torchvision.models.resnet18()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "good.pth")
    trunk, message = pretrained_trunk("resnet18", tmp_path / "good.pth")
    assert message == f"loaded {len(state)}/{len(state)} tensors from {tmp_path / 'good.pth'}"
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key

    # The seed project's defect: a trunk saved from nn.Sequential has keys "0.weight",
    # "4.0.conv1.weight", ...
    sequential = nn.Sequential(*list(reference.children())[:-1])
    torch.save(sequential.state_dict(), tmp_path / "sequential.pth")
    with pytest.raises(UserError, match="missing .* unexpected .*0.weight"):
        pretrained_trunk("resnet18", tmp_path / "sequential.pth")
    one_channel = OrderedDict((k, v[:, :1] if k == "conv1.weight" else v) for k, v in state.items())
    with pytest.raises(UserError, match="1 of the wrong shape \\(conv1.weight\\)"):
        check_trunk_state(one_channel, "resnet18", "x")
    with pytest.raises(UserError, match="missing"):
        pretrained_trunk("resnet50", tmp_path / "good.pth")


def test_precise_batchnorm_statistics_are_the_average_over_the_images():
    """One batch, cumulative average: running mean = the batch mean of the first
    BatchNorm's input, running var = its unbiased variance (by hand, with a hook)."""
    torch.manual_seed(0)
    trunk = torchvision.models.resnet18()
    trunk.fc = torch.nn.Identity()
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    seen = []
    handle = trunk.bn1.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].detach().clone())
    )
    trunk.eval()
    batches = recompute_batchnorm_statistics(trunk, [images], torch.device("cpu"))
    handle.remove()
    x = seen[0].transpose(0, 1).reshape(64, -1)
    torch.testing.assert_close(trunk.bn1.running_mean, x.mean(1))
    torch.testing.assert_close(trunk.bn1.running_var, x.var(1, unbiased=True))
    assert (
        batches == 1 and not trunk.training and trunk.bn1.momentum == 0.1
    )  # mode and momentum restored
