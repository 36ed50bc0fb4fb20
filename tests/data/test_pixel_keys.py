"""Pixel keys: the key is the standardized block average the docstring states, copies of a
picture keep it, other pictures do not, and the matching and the text form are exact."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.data.pixel_keys import (
    KEY_SIDE,
    KEY_SIZE,
    SAME_PICTURE,
    decode_keys,
    encode_keys,
    pixel_key,
    pixel_keys,
    same_pictures,
)
from cxr.run.errors import UserError, user_message


def picture(seed, side=64):
    """A smooth random picture of its own (a radiograph is smooth at 16 x 16)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6)).astype(np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.BICUBIC)


def test_the_key_is_the_standardized_average_of_each_block():
    pixels = np.random.default_rng(0).integers(0, 256, (KEY_SIDE * 3, KEY_SIDE * 3))
    blocks = pixels.reshape(KEY_SIDE, 3, KEY_SIDE, 3).mean(axis=(1, 3))  # 3 x 3 blocks
    expected = (blocks - blocks.mean()) / blocks.std()  # population standard deviation
    key = pixel_key(Image.fromarray(pixels.astype(np.uint8)))
    assert key.shape == (KEY_SIZE,) and key.dtype == np.float32
    np.testing.assert_allclose(key, expected.ravel(), atol=1e-5)


def test_no_files_have_no_keys():
    assert pixel_keys([], what="none", log=None).shape == (0, KEY_SIZE)


def test_a_blank_picture_has_a_zero_key_not_nan():
    key = pixel_key(Image.new("L", (40, 40), 200))
    assert np.array_equal(key, np.zeros(KEY_SIZE, np.float32))


def test_brightness_contrast_and_size_do_not_change_the_key():
    image = picture(1, side=KEY_SIDE * 8)
    pixels = np.asarray(image, dtype=np.float64)
    darker = Image.fromarray((pixels * 0.5 + 10).astype(np.float32), mode="F")
    faint = Image.fromarray((pixels * 1e-3).astype(np.float32), mode="F")  # spread under 1
    smaller = Image.fromarray(
        pixels.reshape(KEY_SIDE * 4, 2, KEY_SIDE * 4, 2).mean(axis=(1, 3)).astype(np.float32),
        mode="F",
    )
    for other in (darker, faint, smaller):
        np.testing.assert_allclose(pixel_key(other), pixel_key(image), atol=1e-4)


def encoded(image, **save):
    buffer = io.BytesIO()
    image.save(buffer, **save)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_copies_of_a_picture_are_the_same_picture_and_other_pictures_are_not(tmp_path):
    image = picture(2, side=256)
    copies = {
        "jpeg.jpg": encoded(image, format="JPEG", quality=75),
        "half.png": image.resize((128, 128), Image.BILINEAR),
        "rgb.png": image.convert("RGB"),
        "wide.png": Image.fromarray(np.asarray(image).astype(np.uint16) * 257),
    }
    paths = []
    for name, copy in {"original.png": image, **copies}.items():
        copy.save(tmp_path / name)
        paths.append(tmp_path / name)
    for seed in range(3, 8):
        picture(seed, side=256).save(tmp_path / f"other{seed}.png")
        paths.append(tmp_path / f"other{seed}.png")
    keys = pixel_keys(paths, what="test", log=None)
    pairs = {(i, j) for i, j in same_pictures(keys, keys) if i < j}
    assert pairs == {(i, j) for i in range(5) for j in range(i + 1, 5)}


def test_the_matching_in_chunks_is_every_pair_closer_than_the_bound():
    generator = torch.Generator().manual_seed(0)
    others = torch.randn(7, KEY_SIZE, generator=generator)
    keys = torch.cat([torch.randn(5, KEY_SIZE, generator=generator), others[[1, 4, 4]]])
    keys[5] += SAME_PICTURE * 0.9  # a copy moved by just under the bound
    keys[6] += SAME_PICTURE * 1.1  # and one just over it
    expected = [
        (i, j)
        for i in range(len(keys))
        for j in range(len(others))
        if (keys[i] - others[j]).abs().mean() < SAME_PICTURE
    ]
    assert expected == [(5, 1), (7, 4)]
    assert sorted(same_pictures(keys, others, chunk=3)) == expected


def test_keys_survive_their_text_form_and_anything_else_is_refused():
    keys = torch.randn(4, KEY_SIZE, generator=torch.Generator().manual_seed(1))
    text = encode_keys(keys)
    back = decode_keys(text, 4)
    assert back.shape == (4, KEY_SIZE) and (back - keys).abs().max() < 4e-3
    assert decode_keys(encode_keys(torch.zeros(0, KEY_SIZE)), 0).shape == (0, KEY_SIZE)
    not_finite = encode_keys(torch.full((1, KEY_SIZE), float("nan")))
    for bad, count in ((text, 3), ("not base64!", 4), ("ü", 1), (not_finite, 1)):
        assert decode_keys(bad, count) is None


@pytest.mark.parametrize("side", [KEY_SIDE - 3, KEY_SIDE * 2 + 1])
def test_a_picture_of_any_size_has_a_key(side):
    key = pixel_key(picture(9, side=side))
    assert key.shape == (KEY_SIZE,) and np.isfinite(key).all()
    assert abs(key.mean()) < 1e-5 and key.std() == pytest.approx(1, abs=1e-4)


def test_keys_decoded_by_loader_workers_are_the_same_and_broken_files_are_named(tmp_path):
    paths = []
    for seed in range(5):
        picture(seed, side=96).save(tmp_path / f"p{seed}.png")
        paths.append(tmp_path / f"p{seed}.png")
    alone = pixel_keys(paths, what="keys", log=None)
    assert torch.equal(pixel_keys(paths, what="keys", log=None, workers=2), alone)
    for name in ("broken.png", "worse.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for workers in (0, 2):
        with pytest.raises(UserError) as refused:
            pixel_keys([tmp_path / "broken.png", *paths], what="keys", log=None, workers=workers)
        assert user_message(refused.value).startswith(
            f"cannot read image {tmp_path / 'broken.png'}"
        )
        assert "Traceback" not in user_message(refused.value)
        with pytest.raises(UserError) as refused:
            files = [*paths, tmp_path / "broken.png", tmp_path / "worse.png"]
            pixel_keys(files, what="keys", log=None, workers=workers)
        message = user_message(refused.value)
        assert message.startswith(f"cannot read image {tmp_path / 'broken.png'}")
        assert message.endswith("; and 1 more unreadable images")
