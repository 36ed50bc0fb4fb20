"""Benchmark: cxr's pixel keys vs imagehash's perceptual hash (phash), the tool a user would
otherwise reach for to find copies of an image.

Both read the same files from disk. For every 10th image four copies are written (JPEG
quality 30 and 75, half size, a 16-bit PNG of the same picture); we print, for each
method, the largest distance from an image to a copy, the smallest distance between two
different images, how many copies its own threshold misses and how many pairs of
different files it calls copies (cxr: SAME_PICTURE; phash: the largest distance of the
8-bit copies, the smallest threshold that catches them), and the time ratio. NIH's own
release holds one picture under two names (00002658_001 and _002): one such pair is
expected there. Then the time per image with --workers loader processes, and on one
full-size radiograph: a 3000 x 2500 12-bit PNG (the first image enlarged, with noise), as
VinBigData's scanners give them.

    python bench/bench_keys.py [FOLDER ...] [--workers N]
    # default: shared/'s real NIH images, else 960 synthetic images at 128 px
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr.data.images import list_images, open_grayscale  # noqa: E402
from cxr.data.pixel_keys import KEY_SIZE, SAME_PICTURE, pixel_keys  # noqa: E402
from cxr.data.synthetic_xrays import generate  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-cxr"
DEFAULT = [SHARED / "nih-boxes" / "images", SHARED / "nih-unlabeled" / "images"]


def write_copies(paths, folder):
    """{copy path: index of its original} of four copies of every 10th image."""
    copies = {}
    for index in range(0, len(paths), 10):
        image = open_grayscale(paths[index])
        stem = folder / f"{index}"
        image.save(f"{stem}-q30.jpg", quality=30)
        image.save(f"{stem}-q75.jpg", quality=75)
        image.resize((image.width // 2, image.height // 2), Image.BILINEAR).save(f"{stem}-half.png")
        wide = np.asarray(image).astype(np.uint16) * 257
        Image.fromarray(wide).save(f"{stem}-16bit.png")
        for suffix in ("-q30.jpg", "-q75.jpg", "-half.png", "-16bit.png"):
            copies[Path(f"{stem}{suffix}")] = index
    return copies


def phashes(paths):
    import imagehash

    bits = []
    for path in paths:
        with Image.open(path) as image:
            bits.append(imagehash.phash(image).hash.flatten())
    return torch.tensor(np.stack(bits), dtype=torch.float32)


KINDS = ("-q30.jpg", "-q75.jpg", "-half.png", "-16bit.png")


def report(name, keys, copy_keys, copies, *, scale, threshold):
    """Distances in the method's unit (cxr: mean absolute difference; phash: bits) per
    kind of copy; threshold None: the largest distance of the copies but 16-bit ones."""
    copy_of = torch.tensor(list(copies.values()))
    between = torch.cdist(keys, keys, p=1) / scale
    between.fill_diagonal_(float("inf"))
    to_copy = (copy_keys - keys[copy_of]).abs().sum(dim=1) / scale
    kind = [next(k for k in KINDS if p.name.endswith(k)) for p in copies]
    worst = {k: max(d for d, c in zip(to_copy.tolist(), kind) if c == k) for k in KINDS}
    if threshold is None:
        threshold = max(v for k, v in worst.items() if k != "-16bit.png")
    caught = (to_copy <= threshold) if name == "phash" else (to_copy < threshold)
    close = (between <= threshold) if name == "phash" else (between < threshold)
    print(
        f"{name}: largest distance to a copy "
        + ", ".join(f"{k.strip('-')} {v:.4g}" for k, v in worst.items())
        + f"; nearest different images {between.min():.4g}; at {threshold:.4g}: "
        f"{len(to_copy) - int(caught.sum())} of {len(to_copy)} copies missed, "
        f"{int(close.sum()) // 2} pairs of different files called copies"
    )


def full_size(path, out):
    """A 3000 x 2500 12-bit PNG of the picture in `path`, with noise, written to `out`."""
    pixels = np.asarray(open_grayscale(path).resize((2500, 3000), Image.BILINEAR), np.float64)
    noise = np.random.default_rng(0).normal(0, 20, pixels.shape)
    Image.fromarray(np.clip(pixels * 16 + noise, 0, 4095).astype(np.uint16)).save(out)
    return out


def seconds_per_call(call, repeats=5):
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folders = args.folders or [p for p in DEFAULT if p.is_dir()]
        if not folders:
            generate(Path(folder) / "synthetic", num_images=800, size=128, log=lambda *_: None)
            folders = [Path(folder) / "synthetic" / "train", Path(folder) / "synthetic" / "test"]
        paths = list_images(folders, "bench_keys.py")
        copies = write_copies(paths, Path(folder))
        copy_paths = list(copies)
        start = time.perf_counter()
        keys = pixel_keys(paths, what="cxr keys", log=None)
        ours = time.perf_counter() - start
        copy_keys = pixel_keys(copy_paths, what="cxr keys", log=None)
        start = time.perf_counter()
        hashes = phashes(paths)
        theirs = time.perf_counter() - start
        copy_hashes = phashes(copy_paths)
        start = time.perf_counter()
        pixel_keys(paths, what="cxr keys", log=None, workers=args.workers)
        parallel = time.perf_counter() - start
        big = full_size(paths[0], Path(folder) / "full-size.png")
        big_key = seconds_per_call(lambda: pixel_keys([big], what="cxr keys", log=None))
        big_hash = seconds_per_call(lambda: phashes([big]))
        big_decode = seconds_per_call(lambda: Image.open(big).load())
    print(f"{len(paths)} images, {len(copy_paths)} copies")
    report("cxr", keys, copy_keys, copies, scale=KEY_SIZE, threshold=SAME_PICTURE)
    report("phash", hashes, copy_hashes, copies, scale=1, threshold=None)
    print(
        f"time per image: cxr {1000 * ours / len(paths):.2f} ms, phash "
        f"{1000 * theirs / len(paths):.2f} ms; ratio cxr/phash {ours / theirs:.2f}; cxr with "
        f"{args.workers} loader workers {1000 * parallel / len(paths):.2f} ms"
    )
    print(
        f"a 3000 x 2500 12-bit PNG: cxr {1000 * big_key:.0f} ms, phash {1000 * big_hash:.0f} ms "
        f"(ratio {big_key / big_hash:.2f}), of which decoding the PNG {1000 * big_decode:.0f} ms"
    )


if __name__ == "__main__":
    main()
