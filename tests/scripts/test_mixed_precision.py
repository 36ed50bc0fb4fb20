"""fp16 with a GradScaler, run for real on the CPU through both scripts' own loops: an
overflowing step is skipped and the scale halved, the scale grows after its interval,
gradients are unscaled before they are clipped, and channels_last changes no result."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torchvision

import train_det
import train_ssl
from cxr.detection.detector import build_detector
from cxr.nn.optim import build_optimizer
from cxr.ssl.simclr import SimCLR
from cxr.ssl.views import VIEW_PRESETS


def quiet_args(**changes):
    settings = dict(
        epochs=1,
        print_freq=100,
        amp="fp16",
        clip_grad=None,
        image_size=32,
        temperature=0.5,
        channels_last=False,
    )
    return SimpleNamespace(**{**settings, **changes})


def ssl_setup():
    torch.manual_seed(0)
    model = SimCLR(torchvision.models.resnet18(), 512, 16)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (4, 1, 40, 40), dtype=torch.uint8, generator=g)] * 2
    return model, batches


def det_setup():
    torch.manual_seed(0)
    model = build_detector(arch="resnet18", image_size=64, num_classes=3, roi_batch_size=16)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(1, 64, 64, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    return model, [(images, targets)] * 2


def one_epoch(script, model, batches, scaler, args, steps=None):
    """The script's own train_one_epoch over `batches` (the first `steps` of them)."""
    batches = batches[:steps]
    torch.manual_seed(3)  # what the detector samples (anchors, RoIs): alike in every call
    optimizer = build_optimizer("sgd", model, lr=0.01, weight_decay=0.0)
    schedule = [0.01] * len(batches)
    options = dict(epoch=0, step=0, args=args, log=lambda *_, **__: None)
    if script is train_ssl:
        generator = torch.Generator().manual_seed(2)
        views = VIEW_PRESETS["cxr"]
        options.update(views=views, generator=generator, rank=0)
    script.train_one_epoch(model, batches, optimizer, scaler, schedule, **options)
    return model


SETUPS = [(train_ssl, ssl_setup), (train_det, det_setup)]


@pytest.mark.parametrize("script, setup", SETUPS, ids=["train_ssl", "train_det"])
def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halved(script, setup):
    model, batches = setup()
    before = copy.deepcopy(model.state_dict())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # fp16 gradients overflow
    one_epoch(script, model, batches, scaler, quiet_args(), steps=1)
    changed = [
        k
        for k, v in model.state_dict().items()
        if v.is_floating_point() and "running" not in k and not torch.equal(v, before[k])
    ]
    assert changed == [] and scaler.get_scale() == 2.0**99


@pytest.mark.parametrize("script, setup", SETUPS, ids=["train_ssl", "train_det"])
def test_the_scale_grows_after_its_interval_of_finite_steps(script, setup):
    model, batches = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    one_epoch(script, model, batches, scaler, quiet_args(), steps=2)
    assert scaler.get_scale() == 2.0**5


@pytest.mark.parametrize("script, setup", SETUPS, ids=["train_ssl", "train_det"])
def test_gradients_are_unscaled_before_they_are_clipped(script, setup):
    """One float32 step clipped to a small norm, with a scale of 1024 and without: the
    same weights, which a clip of the scaled gradients would not give."""
    args = quiet_args(amp="none", clip_grad=0.01)
    model, batches = setup()
    scaled = one_epoch(
        script,
        copy.deepcopy(model),
        batches,
        torch.amp.GradScaler("cpu", init_scale=1024.0),
        args,
        1,
    )
    plain = one_epoch(
        script, copy.deepcopy(model), batches, torch.amp.GradScaler("cpu", enabled=False), args, 1
    )
    moved = 0
    for (name, a), b, start in zip(
        scaled.state_dict().items(), plain.state_dict().values(), model.state_dict().values()
    ):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
            moved += not torch.equal(b, start)
    assert moved > 0


@pytest.mark.parametrize("script, setup", SETUPS, ids=["train_ssl", "train_det"])
def test_channels_last_gives_the_default_layouts_results(script, setup):
    """Two steps in float32, in the default layout and in channels_last (weights and
    inputs): the same weights up to float32 rounding of the other kernels' sums, a
    thousandth of how far the weights moved."""
    model, batches = setup()
    start = copy.deepcopy(model.state_dict())
    results = []
    for channels_last in (False, True):
        copy_ = copy.deepcopy(model)
        if channels_last:
            copy_.to(memory_format=torch.channels_last)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        args = quiet_args(amp="none", channels_last=channels_last)
        results.append(one_epoch(script, copy_, batches, scaler, args).state_dict())
    moved = max(
        float((v - start[k]).abs().max()) for k, v in results[0].items() if v.is_floating_point()
    )
    for name, value in results[0].items():
        if value.is_floating_point():
            assert float((results[1][name] - value).abs().max()) <= 2e-3 * moved, name
