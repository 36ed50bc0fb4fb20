"""ResNet trunks (He et al., 2016; torchvision's), their input, and precise BatchNorm.

A trunk is a torchvision ResNet whose fc is the identity: it outputs pooled
features, and its state dict has torchvision's keys without fc. Weights move
between trunks key by key: a load with strict=False can match no tensor at
all (a trunk saved from an nn.Sequential has keys "0.weight",
"4.0.conv1..."), say nothing and leave other weights, so `trunk_mismatch`
names every missing, unexpected and mis-shaped tensor before a load.

Images reach every network as `to_network_input` makes them: grayscale in
[0, 1], repeated to three channels, normalized with the ImageNet statistics
(as torchvision's detection transform does), so SimCLR, the probe and the
detector see the same input distribution.

`recompute_batchnorm_statistics` replaces the BatchNorm running statistics
of a trained trunk by their average over clean images ("precise BN", Wu &
Johnson, 2021, "Rethinking 'Batch' in BatchNorm"): the running averages kept
during SimCLR follow augmented views and lag behind fast-moving weights.
"""

import functools

import torch
import torchvision

from cxr.nn.collectives import all_reduce_mean

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def build_resnet(arch):
    """A randomly initialized torchvision ResNet (with its fc)."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(FEATURE_DIMS)}")
    return getattr(torchvision.models, arch)()


def headless_resnet(arch):
    """A torchvision ResNet whose fc is the identity: it outputs (n, FEATURE_DIMS[arch])."""
    model = build_resnet(arch)
    model.fc = torch.nn.Identity()
    return model


@functools.lru_cache(maxsize=None)
def trunk_shapes(arch):
    """{tensor name: shape} of an `arch` trunk (torchvision ResNet without fc)."""
    return {k: tuple(v.shape) for k, v in build_resnet(arch).state_dict().items() if k[:3] != "fc."}


def infer_arch(state):
    """The ResNet whose trunk has exactly the tensor names of `state`, or None."""
    return next((arch for arch in FEATURE_DIMS if set(trunk_shapes(arch)) == set(state)), None)


def trunk_mismatch(state, arch):
    """(missing, unexpected, mis-shaped) tensor names of `state` against an `arch`
    trunk, each sorted; three empty lists when it holds exactly that trunk."""
    expected = trunk_shapes(arch)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k]
    )
    return missing, unexpected, misshaped


def to_network_input(images):
    """(B, 1, H, W) floats in [0, 1] -> (B, 3, H, W) normalized network input."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images.expand(-1, 3, -1, -1) - mean) / std


def uint8_to_network_input(images, device):
    """(B, 1, H, W) uint8 images -> normalized network input on the device."""
    return to_network_input(images.to(device).float() / 255)


@torch.no_grad()
def recompute_batchnorm_statistics(trunk, batches, device):
    """Set every BatchNorm's running mean and variance to their average over
    `batches` ((B, 1, H, W) uint8 images, no augmentation), in train mode without
    gradients; under DDP each rank passes its own equal-size shard and the
    statistics are averaged over ranks. Returns the number of batches used."""
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    was_training = trunk.training
    trunk.train()
    count = 0
    for batch in batches:
        trunk(uint8_to_network_input(batch, device))
        count += 1
    trunk.train(was_training)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.running_mean.copy_(all_reduce_mean(norm.running_mean))
        norm.running_var.copy_(all_reduce_mean(norm.running_var))
    return count
