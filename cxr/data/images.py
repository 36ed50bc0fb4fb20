"""Images read as data: grayscale pixels whatever the file's format, and image files
listed from folders.

Radiographs are grayscale PNGs (8-bit, or 16-bit scaled to 8 bits) or
JPEGs; colour images are read as their luminance. Every reader raises one
UserError naming the file it cannot read.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr.run.errors import UserError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def stored_bits(pixels):
    """The bits a 16-bit file's pixels use: those that hold its largest value, at least 8.

    Scanners store 10 to 16 bits (DICOM's BitsStored) and converters often keep the
    raw values in a 16-bit PNG, which says nothing of the depth; a radiograph's
    brightest pixels (direct exposure, markers) reach near the top of its range."""
    return max(8, int(pixels.max(initial=0)).bit_length())


def sixteen_bits(pixels):
    """A 16-bit image's pixels as uint32 (room for `to_eight_bits`'s products); Pillow's
    'I' mode (int32) kept to 0..65535."""
    if pixels.dtype != np.uint16:
        pixels = np.clip(pixels, 0, 65535)
    return pixels.astype(np.uint32)


def to_eight_bits(wide, top):
    """Integers in 0..top (at most 65535) as uint8 0..255: round(wide * 255 / top), in
    integers (exact: with top odd, as 2**bits - 1 is, no value falls half-way; 4 times
    as fast as float64)."""
    return ((wide * 255 + top // 2) // top).astype(np.uint8)


def open_grayscale(path):
    """An image file as an 8-bit grayscale ('L') PIL image.

    16-bit grayscale PNGs (which Pillow opens as I;16 or I) are scaled to 0..255
    from the range of the bits they use (`stored_bits`): 0..65535 for 16-bit data,
    0..4095 for 12-bit data in a 16-bit file, which would otherwise read as near
    black (Pillow's own conversion would clip them to white). No pixel is clipped,
    and above 8 bits the brightest lands in 128..255. Colour images are converted
    to their luminance."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # named, not printed
            image = Image.open(path)
        with image:
            if image.mode in SIXTEEN_BIT_MODES:
                wide = sixteen_bits(np.asarray(image))
                return Image.fromarray(to_eight_bits(wide, 2 ** stored_bits(wide) - 1))
            return image.convert("L")
    except (OSError, ValueError, SyntaxError, Warning, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def read_grayscale(path, size=None):
    """An image as a uint8 tensor (1, H, W), resized (bilinear) to size x size if given."""
    image = open_grayscale(path)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).unsqueeze(0)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(entries, flag):
    """The image files of folders and files, each file once (a file reached
    twice, by two names or through two folders, is listed once), in order."""
    files, seen = [], set()
    for entry in map(Path, entries):
        if entry.is_dir():
            found = sorted(
                p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif entry.is_file():
            found = [entry]
        else:
            raise UserError(f"{flag} {entry}: no such file or folder")
        for path in found:
            identity = (path.stat().st_dev, path.stat().st_ino)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    if not files:
        raise UserError(f"{flag} {' '.join(map(str, entries))}: no .png/.jpg images found")
    return files
