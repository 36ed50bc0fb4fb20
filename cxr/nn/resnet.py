"""ResNet trunks and the CHECKED loading of pretrained weights into them.

A load with strict=False can match no tensor at all (a trunk saved from an
nn.Sequential has keys "0.weight", "4.0.conv1..."), say nothing, and leave
the model at other weights. Here every load names the exact tensors it
expected, fails loudly on any missing, unexpected or mis-shaped one, and
reports "loaded K/K tensors from FILE".

`recompute_batchnorm_statistics` replaces the BatchNorm running statistics of
a trained trunk by their average over clean images ("precise BN", Wu &
Johnson, 2021, "Rethinking 'Batch' in BatchNorm"; pycls): the running
averages kept during SimCLR follow augmented views and lag behind weights
that move fast, and a detector with frozen norms inherits them as they are.
"""

import functools
import json
from pathlib import Path

import torch
import torchvision

from cxr.data.datasets import uint8_to_network_input
from cxr.run.checkpoints import atomic_torch_save, check_finite, load_torch_file
from cxr.run.distributed import all_reduce_mean
from cxr.run.errors import UserError
from cxr.run.layout import BACKBONE, BACKBONE_META
from cxr.run.progress import progress

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def build_resnet(arch):
    if arch not in FEATURE_DIMS:
        raise UserError(
            f"unknown --arch {arch!r}; expected one of {', '.join(sorted(FEATURE_DIMS))}"
        )
    return getattr(torchvision.models, arch)()


def load_trunk_weights(path):
    """A ResNet trunk state dict from `path`, stripped of fc: our pretrained
    backbone, a torchvision ResNet checkpoint (e.g. ImageNet weights)."""
    state = load_torch_file(path, "ResNet weights (a state dict)")
    if isinstance(state, dict) and "model" in state and "config" in state:
        raise UserError(
            f"{path} is a training checkpoint, not a backbone; pass the run's "
            f"{BACKBONE} (written beside it when the run finishes)"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    check_finite(state, str(path))
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@functools.lru_cache(maxsize=None)
def trunk_keys(arch):
    """The tensor names of an `arch` trunk (torchvision ResNet without fc)."""
    return frozenset(k for k in build_resnet(arch).state_dict() if not k.startswith("fc."))


def infer_arch(state):
    """The ResNet whose trunk has exactly the tensor names of `state`, or None."""
    return next((arch for arch in FEATURE_DIMS if trunk_keys(arch) == set(state)), None)


def check_trunk_state(state, arch, source):
    """Raise unless `state` holds exactly the tensors of an `arch` trunk with
    matching shapes; return the 'loaded K/K' message."""
    expected = build_resnet(arch).state_dict()
    expected = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or misshaped:

        def sample(keys):
            return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")

        raise UserError(
            f"{source} does not hold a torchvision {arch} trunk: {len(missing)} missing "
            f"({sample(missing)}), {len(unexpected)} unexpected ({sample(unexpected)}), "
            f"{len(misshaped)} of the wrong shape ({sample(misshaped)}). Check --arch, and that "
            "the file has torchvision ResNet keys (conv1.weight, layer1.0.conv1.weight, ...)"
        )
    return f"loaded {len(state)}/{len(expected)} tensors from {source}"


def headless_resnet(arch):
    """A torchvision ResNet whose fc is the identity: it outputs pooled features."""
    model = build_resnet(arch)
    model.fc = torch.nn.Identity()
    return model


def pretrained_trunk(arch, path):
    """A torchvision ResNet (fc replaced by identity) with checked weights from `path`."""
    state = load_trunk_weights(path)
    message = check_trunk_state(state, arch, path)
    model = headless_resnet(arch)
    model.load_state_dict(state, strict=True)
    return model, message


def save_backbone(folder, state, meta):
    """pretrained-backbone.pth (a trunk state dict with torchvision ResNet keys, no fc)
    and beside it pretrained-backbone.json: meta, with at least arch and image_size;
    folder: the run's `cxr.run.outputs.OutputFolder`."""
    assert {"arch", "image_size"} <= set(meta), "backbone metadata needs arch and image_size"
    check_finite(state, "the trained backbone")
    atomic_torch_save(folder.inside(BACKBONE), state)
    folder.write_json(BACKBONE_META, meta, indent=1)


def backbone_meta(path):
    """The metadata save_backbone wrote beside a backbone file ({} if there is none:
    a state dict from elsewhere, e.g. ImageNet weights)."""
    meta_path = Path(path).with_suffix(".json")
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


@torch.no_grad()
def recompute_batchnorm_statistics(trunk, loader, device, log=None):
    """Set every BatchNorm's running mean and variance to their average over the
    batches of `loader` (uint8 images, no augmentation), in train mode without
    gradients; under DDP each rank passes its own equal-size shard and the
    statistics are averaged over ranks. Returns the number of batches used."""
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    was_training = trunk.training
    trunk.train()
    batches = 0
    for batch in progress(loader, "precise BatchNorm", log=log):
        trunk(uint8_to_network_input(batch, device))
        batches += 1
    trunk.train(was_training)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.running_mean.copy_(all_reduce_mean(norm.running_mean))
        norm.running_var.copy_(all_reduce_mean(norm.running_var))
    return batches
