"""The experiment's settings and its two presets: what each stage is given.

`cpu` is sized for a 2-core CPU (resnet18, 128 px, synthetic data by
default); `paper` holds the seed project's published settings (ResNet-50,
512 px, 100 epochs) for GPUs. `python -m cxr.experiment --help` lists every
setting with both presets' values; any of them can be overridden.
"""

from dataclasses import dataclass, field


def _setting(text):
    return field(metadata={"help": text})


@dataclass(frozen=True)
class Settings:
    """What each stage is given; the presets below fill it in."""

    synthetic_images: int = _setting("synthetic training images (python -m cxr.synthetic --images)")
    synthetic_size: int = _setting("synthetic PNG side in pixels")
    arch: str = _setting("ResNet of SimCLR and the detector backbone")
    ssl_image_size: int = _setting("SimCLR view size in pixels (and the probe's)")
    ssl_epochs: int = _setting("SimCLR epochs")
    ssl_batch_size: int = _setting("SimCLR images per process")
    ssl_lr: float = _setting("SimCLR peak learning rate")
    ssl_warmup_epochs: float = _setting("SimCLR warmup epochs")
    ssl_views: str = _setting("SimCLR view preset or JSON (train_ssl.py --views)")
    ssl_temperature: float = _setting("NT-Xent temperature")
    det_image_size: int = _setting("detector image size in pixels")
    det_epochs: int = _setting("detector epochs")
    det_batch_size: int = _setting("detector images per process")
    det_lr: float = _setting("detector peak learning rate")
    det_warmup_iters: int = _setting("detector warmup iterations")
    det_warmup_factor: float = _setting("detector learning rate's share at the start of warmup")
    det_clip_grad: float = _setting("detector gradient-norm clip (none: off)")
    det_roi_batch_size: int = _setting("RoIs sampled per image for the box head")
    workers: int = _setting("data loader processes per training process")
    pictures: int = _setting("test images drawn per arm")


PRESETS = {
    # Sized for a 2-core CPU: about 20 minutes for one SSL fraction. SimCLR
    # runs 210 steps of 32 images (it ran 50 of 64): more steps lifted the
    # linear probe (docs/experiments.md).
    "cpu": Settings(
        synthetic_images=800,
        synthetic_size=128,
        arch="resnet18",
        ssl_image_size=128,
        ssl_epochs=10,
        ssl_batch_size=32,
        ssl_lr=0.05,
        ssl_warmup_epochs=1,
        ssl_views="cxr",
        ssl_temperature=0.2,
        det_image_size=128,
        det_epochs=4,
        det_batch_size=4,
        det_lr=0.01,
        det_warmup_iters=20,
        det_warmup_factor=0.0,
        det_clip_grad=None,
        det_roi_batch_size=64,
        workers=1,
        pictures=4,
    ),
    # The seed project's published commands (ResNet-50, 512 px), for GPUs.
    "paper": Settings(
        synthetic_images=15000,
        synthetic_size=512,
        arch="resnet50",
        ssl_image_size=512,
        ssl_epochs=100,
        ssl_batch_size=8,
        ssl_lr=0.05,
        ssl_warmup_epochs=10,
        ssl_views="simclr",
        ssl_temperature=0.5,
        det_image_size=512,
        det_epochs=100,
        det_batch_size=8,
        det_lr=0.01,
        det_warmup_iters=500,
        det_warmup_factor=0.0,
        det_clip_grad=None,
        det_roi_batch_size=512,
        workers=8,
        pictures=8,
    ),
}
