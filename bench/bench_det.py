"""Benchmark: the detector's training step and its data pipeline.

1. Images/s of our training step (train_det.py's train_one_epoch) against the
   bare torchvision step on the same batches (forward, summed losses, backward,
   SGD step): the overhead of the loop's progress record and non-finite check.
2. Images/s of one data-loader worker (PNG decode + box-aware augmentation,
   cxr.data.DetectionDataset with BoxAugment) at --size, with augmentation on
   and off, against the model step: how many workers keep the model fed.
3. With --settings: images/s of the bare training step for each pair of RoIs
   sampled per image for the box head (--roi-batch-size) and RPN proposals
   kept per image (--rpn-proposals), against torchvision's 512 and 2000,
   which are sized for 800 px COCO images.

    python bench/bench_det.py [--arch resnet18 --size 512] [--settings 512:2000 64:500 ...]
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_epoch import det_epoch, sgd  # noqa: E402

from cxr.data.datasets import DetectionDataset  # noqa: E402
from cxr.data.preparation import prepare  # noqa: E402
from cxr.data.prepared import read_classes  # noqa: E402
from cxr.data.synthetic_xrays import generate  # noqa: E402
from cxr.detection.augment import BoxAugment  # noqa: E402
from cxr.detection.detector import build_detector, detection_collate  # noqa: E402


def timed(fn, repeats=2):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def training_batches(data_dir, batch, steps):
    dataset = DetectionDataset.split(data_dir, "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, collate_fn=detection_collate)
    return [b for _, b in zip(range(steps), loader)]


def bare_step(model, optimizer, batches, device):
    """The plain torchvision training loop over `batches`."""
    model.train()
    for images, targets in batches:
        images = [image.to(device).expand(3, -1, -1) for image in images]
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bench_step(data_dir, arch, size, batch, steps, device):
    batches = training_batches(data_dir, batch, steps)
    torch.manual_seed(0)
    classes = read_classes(data_dir)
    model = build_detector(arch=arch, image_size=size, num_classes=len(classes)).to(device)
    optimizer = sgd(model, 0.01)

    def engine():
        det_epoch(model, batches, optimizer=optimizer)

    def bare():
        bare_step(model, optimizer, batches, device)

    bare_s = min(timed(bare), timed(bare))
    engine_s = min(timed(engine), timed(engine))
    images = batch * len(batches)
    print(
        f"| training images/s, {arch}-FPN at {size} px, batch {batch} ({device}) | "
        f"{images / engine_s:.2f} | "
        f"{images / bare_s:.2f} | overhead {100 * (engine_s / bare_s - 1):+.1f}% |"
    )
    return images / bare_s


def read_items(dataset, count):
    return [dataset[i, i] for i in range(count)]


def bench_loader(data_dir, size, model_rate):
    for augment in (BoxAugment(), None):
        dataset = DetectionDataset.split(data_dir, "train", augment=augment)
        count = min(len(dataset), 40)
        seconds = timed(partial(read_items, dataset, count))
        rate = count / seconds
        print(
            f"| loader images/s per worker at {size} px, augmentation {'on' if augment else 'off'} "
            f"| {rate:.1f} | model step {model_rate:.2f} | {rate / model_rate:.1f} workers' worth "
            "per model |"
        )


def bench_settings(data_dir, arch, size, batch, steps, device, settings):
    """Bare-step images/s for each (RoIs per image, RPN proposals), against torchvision's
    512 / 2000."""
    batches = training_batches(data_dir, batch, steps)
    rates = {}
    for rois, proposals in [(512, 2000)] + [s for s in settings if s != (512, 2000)]:
        torch.manual_seed(0)
        model = build_detector(
            arch=arch,
            image_size=size,
            num_classes=len(read_classes(data_dir)),
            roi_batch_size=rois,
            rpn_proposals=proposals,
        ).to(device)
        optimizer = sgd(model, 0.01)
        seconds = timed(partial(bare_step, model, optimizer, batches, device))
        rates[rois, proposals] = batch * len(batches) / seconds
        print(
            f"| training images/s, {arch}-FPN at {size} px, {rois} RoIs, {proposals} RPN proposals "
            f"| {rates[rois, proposals]:.2f} | {rates[512, 2000]:.2f} (512, 2000) | "
            f"{rates[rois, proposals] / rates[512, 2000]:.2f}x |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=512, help="image size of both benchmarks")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--settings",
        nargs="*",
        default=[],
        metavar="ROIS:PROPOSALS",
        help="RoIs per image and RPN proposals to time against torchvision's 512:2000",
    )
    args = parser.parse_args()
    settings = [tuple(int(n) for n in s.split(":")) for s in args.settings]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quiet = {"log": lambda *_: None}
        generate(root / "vin", num_images=150, size=args.size, seed=0, test_images=0, **quiet)
        prepare(root / "vin" / "train.csv", root / "vin" / "train", root / "data", **quiet)
        print("| measure | ours | peer | ratio |\n|---|---|---|---|")
        if settings:
            bench_settings(
                root / "data", args.arch, args.size, args.batch, args.steps, device, settings
            )
            return
        model_rate = bench_step(root / "data", args.arch, args.size, args.batch, args.steps, device)
        bench_loader(root / "data", args.size, model_rate)


if __name__ == "__main__":
    main()
