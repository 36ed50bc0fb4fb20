"""Which SimCLR views can be learned within a CPU budget?

Trains a fresh resnet18 SimCLR model for --steps SGD steps (lr 0.05,
momentum 0.9, wd 5e-4, temperature 0.5) on one fixed batch of 64 images
read at 64 px, with each view configuration, printing the NT-Xent loss every
5 steps. The images are the first 64 (sorted) of --images, real radiographs
such as NIH ChestX-ray14's, or by default 64 normal images of a synthetic set
(1,500 images at 128 px, seed 0). Chance level is ln(2 * 64 - 1) = 4.844: a
loss that stays there has learned nothing.

    python studies/ablate_ssl_views.py [--steps 25] [--configs simclr no_jitter ...] \
        [--images DIR]
"""

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.datasets import ImageList  # noqa: E402
from cxr.data.images import list_images  # noqa: E402
from cxr.data.preparation import prepare  # noqa: E402
from cxr.data.prepared import split_images  # noqa: E402
from cxr.data.synthetic_xrays import generate  # noqa: E402
from cxr.nn.resnet import (
    build_resnet,  # noqa: E402
    to_network_input,  # noqa: E402
)
from cxr.ssl.simclr import SimCLR, nt_xent  # noqa: E402
from cxr.ssl.views import VIEW_PRESETS, ViewConfig, simclr_views  # noqa: E402

CONFIGS = {
    "simclr": VIEW_PRESETS["simclr"],
    "weak": ViewConfig(
        crop_scale=(0.8, 1.0),
        rotation_degrees=0,
        vflip_p=0,
        jitter_p=0,
        equalize_p=0,
        blur_p=0,
        noise_p=0,
    ),
    "crop_0.5": ViewConfig(crop_scale=(0.5, 1.0)),
    "no_vflip_no_rotation": ViewConfig(vflip_p=0, rotation_degrees=0),
    "no_equalize_noise_blur": ViewConfig(equalize_p=0, noise_p=0, blur_p=0),
    "no_jitter": ViewConfig(jitter_p=0),
    "weak_with_jitter": ViewConfig(
        crop_scale=(0.8, 1.0), rotation_degrees=0, vflip_p=0, equalize_p=0, blur_p=0, noise_p=0
    ),
    "mild_jitter": ViewConfig(crop_scale=(0.4, 1.0), brightness=0.2, contrast=0.2, noise_std=0.02),
    "cxr": VIEW_PRESETS["cxr"],
}


def losses(images, config, steps):
    torch.manual_seed(0)
    model = SimCLR(build_resnet("resnet18"), 512)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    out = []
    for step in range(steps):
        first, second = simclr_views(images, 64, config, generator)
        z = model(to_network_input(torch.cat([first, second])))
        loss = nt_xent(z[: len(images)], z[len(images) :], 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0:
            out.append(round(loss.item(), 3))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--images", default=None, help="a folder of real images (default: synthetic ones)"
    )
    args = parser.parse_args()
    if args.images:
        images = torch.stack(
            [image for image in ImageList(list_images([args.images], "--images")[:64], 64)]
        )
    else:
        images = synthetic_batch()
    print(f"chance: {math.log(2 * 64 - 1):.3f}; loss at steps 0, 5, 10, ...")
    for name in args.configs:
        print(
            f"| {name} | {' '.join(f'{x:.3f}' for x in losses(images, CONFIGS[name], args.steps))} "
            "|",
            flush=True,
        )


def synthetic_batch():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(
            root / "vin", num_images=1500, size=128, seed=0, test_images=0, log=lambda *_: None
        )
        prepare(
            root / "vin" / "train.csv",
            root / "vin" / "train",
            root / "data",
            keep_normal=True,
            log=lambda *_: None,
        )
        paths = list(split_images(root / "data", "normal").values())[:64]
        return torch.stack([image for image in ImageList(paths, 64)])


if __name__ == "__main__":
    main()
