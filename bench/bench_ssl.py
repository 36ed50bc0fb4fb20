"""Benchmark: SimCLR views and the training step.

1. Views per second per CPU core at 512 px: our batched view pipeline
   (cxr.ssl.views, torch, one thread) against the seed project's pipeline
   rebuilt with torchvision transforms on PIL images (random resized crop
   0.08-1, flips, colour jitter 0.4 p=0.8, grayscale p=0.2, PIL Gaussian blur
   p=0.5, histogram equalization, to tensor).
2. The same view pipeline on a batch on the GPU, when there is one.
3. Our training step (train_ssl.py's train_one_epoch) against the bare model
   step on the same batches (forward, NT-Xent, backward, SGD step): the
   overhead of the loop's progress record and non-finite check, in percent.

    python bench/bench_ssl.py [--size 512] [--arch resnet18 --step-size 128]
"""

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_epoch import ssl_epoch  # noqa: E402

from cxr.nn.optim import build_optimizer  # noqa: E402
from cxr.nn.resnet import (  # noqa: E402
    FEATURE_DIMS,
    build_resnet,
    to_network_input,  # noqa: E402
)
from cxr.ssl.simclr import SimCLR, nt_xent  # noqa: E402
from cxr.ssl.views import ViewConfig, simclr_views  # noqa: E402


def radiographs(n, size, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.cos(6 * x) * np.sin(4 * y)
    return [np.clip(base + rng.normal(0, 0.05, (size, size)), 0, 1) * 255 for _ in range(n)]


def best_rate(fn, items, repeats=3):
    """Best items/s over `repeats` timed calls of fn (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return items / min(times)


def seed_pipeline(size):
    from torchvision import transforms as T

    class PILEqualize:
        def __call__(self, image):
            return ImageOps.equalize(image)

    class PILGaussianBlur:
        def __call__(self, image):
            return image.filter(ImageFilter.GaussianBlur(radius=np.random.uniform(0.1, 2.0)))

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PILGaussianBlur()], p=0.5),
            PILEqualize(),
            T.ToTensor(),
        ]
    )


def bench_views(size, batch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pixels = radiographs(batch, size)
    pil_images = [Image.fromarray(p.astype(np.uint8)).convert("RGB") for p in pixels]
    peer = seed_pipeline(size)

    def peer_views():
        torch.manual_seed(0)  # the same random draws in every timed call
        np.random.seed(0)
        random.seed(0)
        return [peer(image) for image in pil_images for _ in range(2)]

    uint8 = torch.from_numpy(np.stack(pixels).astype(np.uint8)).unsqueeze(1)

    def our_views():
        return simclr_views(uint8, size, ViewConfig(), torch.Generator().manual_seed(0))

    peer_rate = best_rate(peer_views, 2 * batch, repeats=5)
    ours_rate = best_rate(our_views, 2 * batch, repeats=5)
    print(
        f"| views/s per CPU core at {size} px | {ours_rate:.1f} | {peer_rate:.1f} | "
        f"{ours_rate / peer_rate:.2f}x |"
    )
    if torch.cuda.is_available():
        on_gpu = uint8.cuda()
        cuda_generator = torch.Generator(device="cuda").manual_seed(0)

        def gpu_views():
            simclr_views(on_gpu.repeat(8, 1, 1, 1), size, ViewConfig(), cuda_generator)
            torch.cuda.synchronize()

        rate = best_rate(gpu_views, 16 * batch)
        print(f"| views/s on {torch.cuda.get_device_name()} at {size} px | {rate:.0f} | | |")
    torch.set_num_threads(threads)


def bench_step(arch, size, batch, steps, rounds):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = [
        torch.from_numpy(np.stack(radiographs(batch, size, seed=i)).astype(np.uint8)).unsqueeze(1)
        for i in range(steps)
    ]

    def fresh():
        torch.manual_seed(0)
        model = SimCLR(build_resnet(arch), FEATURE_DIMS[arch]).to(device)
        return model, build_optimizer("sgd", model, lr=0.05, weight_decay=5e-4)

    model, optimizer = fresh()
    generator = torch.Generator(device=device).manual_seed(0)

    def engine():
        ssl_epoch(
            model,
            batches,
            optimizer=optimizer,
            image_size=size,
            views=ViewConfig(),
            generator=generator,
        )

    def bare():
        model.train()
        for images in batches:
            first, second = simclr_views(images.to(device), size, ViewConfig(), generator)
            z = model(to_network_input(torch.cat([first, second]))).float()
            loss = nt_xent(z[:batch], z[batch:], 0.5)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    bare()
    engine()
    overheads, ours, peer = [], 0.0, 0.0
    for _ in range(rounds):
        bare_rate = best_rate(bare, batch * steps, repeats=1)
        engine_rate = best_rate(engine, batch * steps, repeats=1)
        overheads.append(bare_rate / engine_rate - 1)
        ours, peer = max(ours, engine_rate), max(peer, bare_rate)
    overheads.sort()
    print(
        f"| training images/s, {arch} at {size} px, batch {batch}, {steps} steps ({device}) | "
        f"{ours:.1f} | {peer:.1f} | overhead: median {100 * overheads[len(overheads) // 2]:+.1f}% "
        f"of {rounds} alternating rounds (range {100 * overheads[0]:+.1f}% to "
        f"{100 * overheads[-1]:+.1f}%), best vs best {100 * (peer / ours - 1):+.1f}% |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="view benchmark image size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument(
        "--step-size", type=int, default=128, help="training step benchmark image size"
    )
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare / engine timings")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for the step benchmark"
    )
    args = parser.parse_args()
    print("| measure | ours | peer | ratio |\n|---|---|---|---|")
    bench_views(args.size, args.batch)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_step(args.arch, args.step_size, args.step_batch, args.steps, args.rounds)


if __name__ == "__main__":
    main()
