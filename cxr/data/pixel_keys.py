"""Pixel keys: whether two image files hold the same picture, whatever their names,
formats or encodings.

A key is the picture's grayscale pixels averaged down to KEY_SIDE x KEY_SIDE
(a box filter over the whole image, so any resize of it gives nearly the same
key) and standardized to zero mean and unit variance (so a linear change of
brightness or contrast gives the same key). Two files hold the same picture
when their keys differ by less than SAME_PICTURE: the mean absolute difference
of their values, in standard deviations.

Measured with `python studies/pixel_keys.py [FOLDER ...]`: on 1,319 real NIH
radiographs (512 px) a JPEG re-encoding at quality 30 moves a key by at most
0.008, a resize to half or double size or a linear contrast change by 0.002,
while the nearest keys of two different radiographs are 0.17 apart (the one
closer pair, at 0.000, is one picture under two names in NIH's own release).
The synthetic stand-in is far more uniform: of 960 synthetic images at 128 px
the nearest two are 0.047 apart, and their copies move by at most 0.020 (0.029
for a 64 px image halved), hence the bound between them.
"""

import base64

import numpy as np
import torch
from PIL import Image

from cxr.data.images import open_grayscale
from cxr.run.errors import UserError
from cxr.run.progress import progress

KEY_SIDE = 16
KEY_SIZE = KEY_SIDE * KEY_SIDE
SAME_PICTURE = 0.035


def pixel_key(image):
    """(KEY_SIZE,) float32 key of a grayscale PIL image (module docstring)."""
    small = np.asarray(image.convert("F").resize((KEY_SIDE, KEY_SIDE), Image.BOX), np.float64)
    spread = small.std()
    centred = small - small.mean()
    return (centred / spread if spread > 0 else centred).astype(np.float32).ravel()


class KeysOfFiles(torch.utils.data.Dataset):
    """The pixel key of each of a list of image files, as (key, None), or (None, why) for
    a file that is not a readable image: a loader that raised would hold its workers
    for seconds on the way out, and the files are counted at the end."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return torch.from_numpy(pixel_key(open_grayscale(self.paths[index]))), None
        except UserError as error:
            return None, str(error)


def pixel_keys(paths, *, what, log=print, workers=0):
    """(N, KEY_SIZE) float32 keys of image files, in order, decoded by `workers` loader
    processes (0: this one); `what` names them in progress lines. Files that are not
    readable images raise one UserError: the first one's reason, and how many more."""
    loader = torch.utils.data.DataLoader(KeysOfFiles(paths), batch_size=None, num_workers=workers)
    keys, unreadable = [], []
    for key, why in progress(loader, what, log=log):
        if why is None:
            keys.append(key)
        else:
            unreadable.append(why)
    if unreadable:
        more = len(unreadable) - 1
        raise UserError(unreadable[0] + (f"; and {more} more unreadable images" if more else ""))
    return torch.stack(keys) if keys else torch.zeros(0, KEY_SIZE)


def same_pictures(keys, others, *, chunk=4096):
    """[(i, j)] of every key i of `keys` and j of `others` closer than SAME_PICTURE.

    Shape: keys (N, KEY_SIZE), others (M, KEY_SIZE); N x M distances, `chunk` rows
    at a time."""
    pairs = []
    for start in range(0, len(keys), chunk):
        distance = torch.cdist(keys[start : start + chunk], others, p=1) / KEY_SIZE
        rows, columns = torch.nonzero(distance < SAME_PICTURE, as_tuple=True)
        pairs += [(start + i, j) for i, j in zip(rows.tolist(), columns.tolist())]
    return pairs


def encode_keys(keys):
    """Keys as text for a JSON file: base64 of their float16 bytes, row after row
    (float16 moves a key by about 0.0002, far below SAME_PICTURE)."""
    return base64.b64encode(keys.to(torch.float16).numpy().tobytes()).decode("ascii")


def decode_keys(text, count):
    """The (count, KEY_SIZE) keys `encode_keys` wrote, or None where `text` is not that."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != count * KEY_SIZE * 2:
        return None
    keys = torch.from_numpy(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
    keys = keys.reshape(count, KEY_SIZE)
    return keys if torch.isfinite(keys).all() else None
