"""Benchmark: how many data-loader workers does one GPU need at 512 px?

Times one loader worker (one process, one torch thread) producing the items of
each stage from 512 px PNGs: SimCLR's (decode and resize; the views are made
on the GPU) and Faster R-CNN's (decode and box-aware augmentation, drawn per
item). Then divides published model rates by it: Faster R-CNN ResNet-50-FPN
trains at 8.7 images/s per V100 (torchvision's release notes) and about 18.6
per A100; MoCo v2's ResNet-50 step, about SimCLR's, at about 168 images/s per
V100 (He et al.'s repository), about twice that on an A100.

With --size below 512, the question is a CPU run's: is a small-image run bound
by decoding the 512 px files? It also times this CPU's SimCLR step (resnet18
at --size, batch 16, the views and NT-Xent, forward and backward, all threads)
and prints the share of a step's time per image that one worker's decoding is.

    python bench/bench_loaders.py [--images DIR] [--size 64]   # default: synthetic, 512 px
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.datasets import DetectionDataset, ImageList  # noqa: E402
from cxr.data.images import list_images  # noqa: E402
from cxr.data.preparation import prepare  # noqa: E402
from cxr.data.synthetic_xrays import generate  # noqa: E402
from cxr.detection.augment import BoxAugment  # noqa: E402
from cxr.nn.resnet import build_resnet, to_network_input  # noqa: E402
from cxr.ssl.simclr import SimCLR, nt_xent  # noqa: E402
from cxr.ssl.views import VIEW_PRESETS, simclr_views  # noqa: E402

MODEL_RATES = {  # images/s of one GPU's training step
    "SimCLR / MoCo v2 ResNet-50, V100": 168.0,
    "SimCLR / MoCo v2 ResNet-50, A100": 336.0,
    "Faster R-CNN R50-FPN, V100": 8.7,
    "Faster R-CNN R50-FPN, A100": 18.6,
}


def items_per_second(read, count, repeats=3):
    """The best of `repeats` rates of read(i) over i < count, after one warm-up pass."""
    best = 0.0
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for i in range(count):
            read(i)
        best = max(best, count / (time.perf_counter() - start))
    return best


def cpu_simclr_step_rate(size, *, batch=16, steps=3):
    """Images/s of a resnet18 SimCLR training step at `size` on this CPU (best of steps)."""
    torch.manual_seed(0)
    model = SimCLR(build_resnet("resnet18"), 512)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(steps + 1):
        start = time.perf_counter()
        first, second = simclr_views(images, size, VIEW_PRESETS["cxr"], generator)
        z = model(to_network_input(torch.cat([first, second])))
        loss = nt_xent(z[:batch], z[batch:], 0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        best = max(best, batch / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", default=None, help="a folder of 512 px PNGs (default: synthetic)"
    )
    parser.add_argument("--count", type=int, default=60, help="images per timing pass")
    parser.add_argument("--size", type=int, default=512, help="SimCLR item size in px")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker's share of a machine
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quiet = {"log": lambda *_: None}
        generate(
            root / "vin", num_images=max(args.count, 80), size=512, seed=0, test_images=0, **quiet
        )
        prepare(root / "vin" / "train.csv", root / "vin" / "train", root / "data", **quiet)
        paths = (
            list_images([args.images], "--images")
            if args.images
            else sorted((root / "data" / "train").glob("*.png"))
        )
        paths = paths[: args.count]
        ssl = ImageList(paths, args.size)
        detection = DetectionDataset.split(root / "data", "train", augment=BoxAugment())
        count = min(args.count, len(detection), len(paths))
        rates = {
            f"SimCLR item (decode, resize to {args.size})": items_per_second(
                lambda i: ssl[i], count
            ),
            "Faster R-CNN item (decode, augment)": items_per_second(
                lambda i: detection[i, i], count
            ),
        }
    source = args.images or "synthetic 512 px PNGs"
    print(f"| per loader worker ({source}) | items/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    print("\n| GPU step | images/s | workers it needs (one per worker's rate) |\n|---|---|---|")
    for name, model_rate in MODEL_RATES.items():
        ssl_item, detection_item = rates
        stage = ssl_item if "SimCLR" in name else detection_item
        print(f"| {name} | {model_rate:g} | {math.ceil(model_rate / rates[stage])} |")
    if args.size < 512:
        torch.set_num_threads(threads)
        step = cpu_simclr_step_rate(args.size)
        share = step / rates[ssl_item]
        print(
            f"\nCPU SimCLR step, resnet18 at {args.size} px, {threads} threads: {step:.1f} "
            f"images/s; one worker's decoding takes {share:.1%} of a step's time per image"
        )


if __name__ == "__main__":
    main()
