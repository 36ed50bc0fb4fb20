"""ResNet trunks: every tensor of a transfer checked, and precise BatchNorm statistics."""

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from cxr.nn.resnet import infer_arch, recompute_batchnorm_statistics, trunk_mismatch


def test_a_mismatch_names_every_missing_unexpected_and_misshaped_tensor():
    reference = torchvision.models.resnet18()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert trunk_mismatch(state, "resnet18") == ([], [], [])
    assert (
        infer_arch(state) == "resnet18" and infer_arch({"0.weight": state["conv1.weight"]}) is None
    )
    # The seed project's defect: a trunk saved from nn.Sequential has keys "0.weight",
    # "4.0.conv1.weight", ...: nothing matches.
    sequential = nn.Sequential(*list(reference.children())[:-1]).state_dict()
    missing, unexpected, misshaped = trunk_mismatch(sequential, "resnet18")
    assert missing == sorted(state) and unexpected == sorted(sequential) and misshaped == []
    one_channel = OrderedDict((k, v[:, :1] if k == "conv1.weight" else v) for k, v in state.items())
    assert trunk_mismatch(one_channel, "resnet18") == ([], [], ["conv1.weight"])
    without_bias = {k: v for k, v in state.items() if k != "bn1.bias"}
    assert trunk_mismatch(without_bias, "resnet18") == (["bn1.bias"], [], [])
    missing, _, misshaped = trunk_mismatch(state, "resnet50")  # bottlenecks: conv3, wider
    assert "layer1.0.conv3.weight" in missing and "layer1.0.conv1.weight" in misshaped


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
