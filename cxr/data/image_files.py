"""The input images of a dataset: checked before anything is written, linked into --out.

`check_image` reads a PNG's header and its last 12 bytes, which must be the
IEND chunk, so a file cut short is found without decoding it (other formats
are opened by Pillow); with decode (--verify-pixels) every image is decoded.
An image smaller than MIN_SIDE pixels a side cannot hold a lesion the
detector can find: its backbone's last stage samples every 32 pixels.
`link_images` hard-links each file (the file a symbolic link points to, not
the link) and copies it where linking is impossible, saying so.
"""

import os
import shutil
import struct
import warnings

from PIL import Image

from cxr.run.errors import UserError
from cxr.run.progress import progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every PNG ends with
MIN_SIDE = 32


def _png_size(path, decode):
    """((width, height), None) of a complete PNG, or (None, why)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, 24)
        tail = os.pread(fd, 12, max(os.fstat(fd).st_size - 12, 0))
    finally:
        os.close(fd)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None, "not a PNG"
    if decode or tail != PNG_END:  # bytes after IEND, or none: decode to be sure
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return None, f"truncated or corrupt PNG: {error}"
    return struct.unpack(">II", head[16:24]), None


def _other_size(path, decode):
    """((width, height), None) of an image Pillow can open, or (None, why)."""
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
            return image.size, None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return None, f"not a readable image: {error}"


def check_image(path, decode=False):
    """((width, height), None) of a usable image file, or (None, why not)."""
    if os.path.exists(path) and not os.path.isfile(path):  # reading a FIFO would wait forever
        return None, "not a regular file"
    check = _png_size if str(path).lower().endswith(".png") else _other_size
    size, why = check(path, decode)
    if size is not None and min(size) < MIN_SIDE:
        return None, f"{size[0]} x {size[1]} px, smaller than {MIN_SIDE} px a side"
    return size, why


def image_size(path):
    """(width, height) of a usable image file (`check_image`), or one UserError naming it."""
    size, why = check_image(path)
    if size is None:
        raise UserError(f"cannot use image {path}: {why}")
    return size


def check_readable(paths, *, flag, log):
    """Refuse an image of `flag` that Pillow cannot open, or one over its
    decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS or float("inf")
    for path in progress(paths, f"checking {flag}", log=log):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
        except Image.DecompressionBombError:
            width = height = None
        except (OSError, ValueError, SyntaxError) as error:
            raise UserError(f"{flag}: cannot read {path}: {error}") from None
        if width is None or width * height > limit:
            size = "larger than" if width is None else f"{width} x {height} pixels, more than"
            raise UserError(
                f"{flag}: {path} is {size} Pillow's limit of {limit} pixels (a "
                "decompression bomb, or a scan to shrink first); leave it out"
            )


def locate_images(files, images_dir, *, skip_missing, source, log, decode=False):
    """{file name: (width, height)} of the images; missing, incomplete, unreadable or
    too small files are an error naming the first few, or are left out with
    --skip-missing. source names the table that lists them."""
    sizes, problems = {}, []
    checking = "decoding every image" if decode else "checking the images"
    for name in progress(files, checking, log=log):
        path = os.path.join(images_dir, name)
        try:
            size, why = check_image(path, decode)
        except OSError as error:
            size, why = None, error.strerror
        if size is None:
            problems.append(f"{path} ({why})")
        else:
            sizes[name] = size
    if problems:
        message = (
            f"{len(problems)} of {len(files)} images listed in {source} are missing or "
            f"unusable in {images_dir}, e.g. " + "; ".join(problems[:5])
        )
        if not skip_missing:
            raise UserError(message + ". Fix --images, or pass --skip-missing to leave them out.")
        log(f"warning: {message}; left out (--skip-missing)")
    return sizes, len(problems)


def link_images(files, source_dir, target_dir):
    """Hard-link each file into target_dir, copying where linking is impossible (another
    file system); returns (files copied, bytes copied)."""
    os.mkdir(target_dir)
    copies = copied_bytes = 0
    for name in files:
        source = os.path.join(source_dir, name)
        if os.path.islink(source):  # link to the file, not to a (relative) link
            source = os.path.realpath(source)
        target = os.path.join(target_dir, name)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            copies += 1
            copied_bytes += os.path.getsize(target)
    return copies, copied_bytes
