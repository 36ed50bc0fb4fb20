"""Image files corrupted at random: prepare's check says why it cannot use one, and decoding
one is a UserError naming it, or a picture: never another exception."""

import io
import random

import numpy as np
import pytest
from PIL import Image

from cxr.data.image_files import check_image
from cxr.data.images import open_grayscale
from cxr.run.errors import UserError


def encoded(form):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40)).astype(np.uint8)
    buffer = io.BytesIO()
    if form == "16-bit PNG":
        Image.fromarray(pixels.astype(np.uint16) * 257).save(buffer, "PNG")
    elif form == "JPEG":
        Image.fromarray(pixels).save(buffer, "JPEG")
    else:
        Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def corrupted(data, rng):
    data = bytearray(data)
    how = rng.choice(["cut", "flip", "flip", "zero", "garbage", "empty"])
    if how == "cut":
        return bytes(data[: rng.randrange(len(data))])
    if how == "flip":
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if how == "zero":
        start = rng.randrange(len(data))
        return bytes(data[:start] + bytes(min(64, len(data) - start)) + data[start + 64 :])
    if how == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    return b""


@pytest.mark.parametrize("form", ["8-bit PNG", "16-bit PNG", "JPEG"])
def test_a_corrupted_image_is_a_reason_or_a_user_error_or_a_picture(tmp_path, form):
    path = tmp_path / ("image.jpg" if form == "JPEG" else "image.png")
    rng, outcomes = random.Random(form), {"refused": 0, "read": 0}
    for _ in range(120):
        path.write_bytes(corrupted(encoded(form), rng))
        size, why = check_image(path)
        assert (size is None) != (why is None)
        try:
            image = open_grayscale(path)
            assert image.mode == "L" and min(image.size) > 0
            outcomes["read"] += 1
        except UserError as error:
            assert "\n" not in str(error) and str(path) in str(error), str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 30, outcomes
