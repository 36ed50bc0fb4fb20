"""How far a copy of a radiograph moves its pixel key, and how close two different
radiographs' keys come (`cxr.data.pixel_keys`, SAME_PICTURE).

    python studies/pixel_keys.py [FOLDER ...]   # default: the real NIH images in shared/

For every image: its key, the nearest key of any other image, and (for every
13th image) the distance to the key of each copy below. Prints the largest copy
distance per kind, the smallest distances between different images, and the
pairs closer than SAME_PICTURE.
"""

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.data.images import list_images, open_grayscale
from cxr.data.pixel_keys import KEY_SIZE, SAME_PICTURE, pixel_key, pixel_keys

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-cxr"
DEFAULT = [SHARED / "nih-boxes" / "images", SHARED / "nih-unlabeled" / "images"]


def reencoded(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def sixteen_bit(image):
    wide = np.asarray(image, dtype=np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, "PNG")
    return open_grayscale(io.BytesIO(buffer.getvalue()))


COPIES = {
    "JPEG quality 95": lambda im: reencoded(im, 95),
    "JPEG quality 75": lambda im: reencoded(im, 75),
    "JPEG quality 30": lambda im: reencoded(im, 30),
    "resized to half": lambda im: im.resize((im.width // 2, im.height // 2), Image.BILINEAR),
    "resized to double": lambda im: im.resize((im.width * 2, im.height * 2), Image.BICUBIC),
    "16-bit PNG": sixteen_bit,
    "RGB": lambda im: im.convert("RGB"),
    "contrast x0.8 + 20": lambda im: im.point(lambda v: min(255, int(v * 0.8 + 20))),
    # not copies in cxr's sense, for scale: a gamma change and a 1% crop on each side
    "(gamma 0.8)": lambda im: im.point(lambda v: int(255 * (v / 255) ** 0.8)),
    "(crop 1% each side)": lambda im: im.crop(
        (im.width // 100, im.height // 100, im.width * 99 // 100, im.height * 99 // 100)
    ),
}


def main(folders):
    paths = list_images(folders, "studies/pixel_keys.py")
    keys = pixel_keys(paths, what="keys")
    distance = torch.cdist(keys, keys, p=1) / KEY_SIZE
    distance.fill_diagonal_(float("inf"))
    print(f"{len(paths)} images; SAME_PICTURE = {SAME_PICTURE}")
    worst = {}
    for i in range(0, len(paths), 13):
        image = open_grayscale(paths[i])
        for kind, copy in COPIES.items():
            moved = float(np.abs(pixel_key(copy(image)) - keys[i].numpy()).mean())
            worst[kind] = max(worst.get(kind, 0.0), moved)
    print("largest distance from an image to its copy:")
    for kind, value in worst.items():
        print(f"  {kind:22s} {value:.4f}")
    nearest = distance.min(dim=1).values
    print(
        "nearest other image: min {:.4f}, 1% {:.4f}, median {:.4f}".format(
            nearest.min(), nearest.quantile(0.01), nearest.median()
        )
    )
    order = torch.argsort(distance.flatten())[:12:2]  # each pair appears twice
    for flat in order.tolist():
        i, j = divmod(flat, len(paths))
        print(f"  {distance[i, j]:.4f}  {paths[i].name}  {paths[j].name}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
