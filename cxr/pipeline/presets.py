"""The experiment's settings and its two presets: what each stage is given.

`cpu` is sized for a 2-core CPU (resnet18, 128 px, synthetic data by
default); `paper` holds the seed project's published settings (ResNet-50,
512 px, 100 epochs) for GPUs. `python -m cxr.experiment --help` lists every
setting with both presets' values; any of them can be overridden.
"""

import argparse
from dataclasses import dataclass, field

from cxr.nn.resnet import FEATURE_DIMS
from cxr.run import cli


def _setting(text, kind):
    return field(metadata={"help": text, "type": kind})


def _arch(text):
    if text not in FEATURE_DIMS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(FEATURE_DIMS)}")
    return text


@dataclass(frozen=True)
class Settings:
    """What each stage is given; the presets below fill it in."""

    synthetic_images: int = _setting(
        "synthetic training images (python -m cxr.synthetic --images)", cli.positive_int
    )
    synthetic_size: int = _setting("synthetic PNG side in pixels", cli.image_size)
    arch: str = _setting("ResNet of SimCLR and the detector backbone", _arch)
    ssl_image_size: int = _setting("SimCLR view size in pixels (and the probe's)", cli.image_size)
    ssl_epochs: int = _setting("SimCLR epochs", cli.positive_int)
    ssl_batch_size: int = _setting("SimCLR images per process", cli.int_range(2))
    ssl_lr: float = _setting("SimCLR peak learning rate", cli.positive_float)
    ssl_warmup_epochs: float = _setting("SimCLR warmup epochs", cli.non_negative_float)
    ssl_views: str = _setting("SimCLR view preset or JSON (train_ssl.py --views)", cli.views_flag)
    ssl_temperature: float = _setting("NT-Xent temperature", cli.positive_float)
    det_image_size: int = _setting("detector image size in pixels", cli.image_size)
    det_epochs: int = _setting("detector epochs", cli.positive_int)
    det_batch_size: int = _setting("detector images per process", cli.positive_int)
    det_lr: float = _setting("detector peak learning rate", cli.positive_float)
    det_warmup_iters: int = _setting("detector warmup iterations", cli.non_negative_int)
    det_warmup_factor: float = _setting(
        "detector learning rate's share at the start of warmup", cli.fraction
    )
    det_clip_grad: float = _setting("detector gradient-norm clip (none: off)", cli.positive_float)
    det_roi_batch_size: int = _setting("RoIs sampled per image for the box head", cli.positive_int)
    workers: int = _setting("data loader processes per training process", cli.int_range(0, 256))
    pictures: int = _setting("test images drawn per arm", cli.positive_int)


# Each setting's value in the two presets.
# cpu: sized for a 2-core CPU, 8 minutes for one SSL fraction (docs/benchmarks.md). SimCLR runs
# 210 steps of 32 images: more steps of smaller batches lifted the linear probe
# (docs/experiments.md).
# paper: the seed project's published commands (ResNet-50, 512 px), for GPUs.
PRESET_VALUES = {
    # setting: (cpu, paper)
    "synthetic_images": (800, 15000),
    "synthetic_size": (128, 512),
    "arch": ("resnet18", "resnet50"),
    "ssl_image_size": (128, 512),
    "ssl_epochs": (10, 100),
    "ssl_batch_size": (32, 8),
    "ssl_lr": (0.05, 0.05),
    "ssl_warmup_epochs": (1, 10),
    "ssl_views": ("cxr", "simclr"),
    "ssl_temperature": (0.2, 0.5),
    "det_image_size": (128, 512),
    "det_epochs": (4, 100),
    "det_batch_size": (4, 8),
    "det_lr": (0.01, 0.01),
    "det_warmup_iters": (20, 500),
    "det_warmup_factor": (0.0, 0.0),
    "det_clip_grad": (None, None),
    "det_roi_batch_size": (64, 512),
    "workers": (1, 2),  # one feeds a GPU at the published rates (docs/benchmarks.md)
    "pictures": (4, 8),
}
PRESETS = {
    name: Settings(**{key: values[column] for key, values in PRESET_VALUES.items()})
    for column, name in enumerate(("cpu", "paper"))
}

# The flags of train_ssl.py and train_det.py that --preset sets: the settings above under the
# scripts' names. Warmup and --workers keep the scripts' defaults (a tenth of the run; the cores
# per process), which fit any run length and machine.
SCRIPT_FLAGS = {
    "train_ssl.py": {
        "arch": "arch",
        "ssl_image_size": "image_size",
        "ssl_epochs": "epochs",
        "ssl_batch_size": "batch_size",
        "ssl_lr": "lr",
        "ssl_views": "views",
        "ssl_temperature": "temperature",
    },
    "train_det.py": {  # --arch: the backbone's, or the preset's for --init random (settle_defaults)
        "det_image_size": "image_size",
        "det_epochs": "epochs",
        "det_batch_size": "batch_size",
        "det_lr": "lr",
        "det_warmup_factor": "warmup_factor",
        "det_roi_batch_size": "roi_batch_size",
    },
}


def script_presets(script):
    """{preset: {flag dest: value}} of one script's --preset."""
    return {
        name: {dest: getattr(settings, key) for key, dest in SCRIPT_FLAGS[script].items()}
        for name, settings in PRESETS.items()
    }
