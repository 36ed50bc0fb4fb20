"""Image reading: 8- and 16-bit grayscale, colour, and one clear message for a
broken file, also when a DataLoader worker finds it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.data.datasets import ImageList
from cxr.data.images import read_grayscale, sixteen_bits, to_eight_bits
from cxr.run.errors import UserError, user_message

REPO = Path(__file__).resolve().parents[2]


def test_sixteen_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    wide = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    pixels = read_grayscale(tmp_path / "wide.png")[0].numpy()
    np.testing.assert_array_equal(pixels, np.rint(wide / 257.0).astype(np.uint8))
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) == 256


@pytest.mark.parametrize("bits", [10, 12, 14, 15])
def test_data_of_fewer_bits_in_a_sixteen_bit_png_fills_the_eight_bit_range(tmp_path, bits):
    top = 2**bits - 1
    data = np.linspace(0, top, 64 * 64).round().reshape(64, 64).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "data.png")
    pixels = read_grayscale(tmp_path / "data.png")[0].numpy()
    np.testing.assert_array_equal(pixels, np.rint(data / top * 255).astype(np.uint8))
    Image.fromarray(np.minimum(data, top - 15)).save(tmp_path / "scanner.png")  # e.g. 4080
    assert read_grayscale(tmp_path / "scanner.png").max() == np.rint((top - 15) / top * 255)


def test_the_integer_scaling_rounds_every_value_as_floats_would():
    for bits in range(8, 17):
        top = 2**bits - 1
        every = np.arange(top + 1, dtype=np.uint32)
        expected = np.floor(every * 255 / top + 0.5).astype(np.uint8)  # no value is half-way
        np.testing.assert_array_equal(to_eight_bits(every, top), expected)


def test_sixteen_bit_pixels_of_any_mode_are_their_values_in_0_to_65535():
    as_int32 = sixteen_bits(np.array([-5, 0, 4095, 65535, 70000], dtype=np.int32))  # mode I
    assert as_int32.dtype == np.uint32 and as_int32.tolist() == [0, 0, 4095, 65535, 65535]
    big_endian = sixteen_bits(np.array([1, 300, 65535], dtype=">u2"))  # I;16B
    assert big_endian.dtype == np.uint32 and big_endian.tolist() == [1, 300, 65535]


def test_a_sixteen_bit_png_is_never_clipped_and_its_brightest_pixel_is_bright(tmp_path):
    generator = np.random.default_rng(0)
    for case in range(40):
        brightest = int(generator.integers(256, 65536))
        data = generator.integers(0, brightest + 1, (16, 16)).astype(np.uint16)
        data[0, 0] = brightest
        Image.fromarray(data).save(tmp_path / "data.png")
        pixels = read_grayscale(tmp_path / "data.png")[0].numpy().astype(int)
        top = 2 ** brightest.bit_length() - 1  # the range of the bits the data uses
        np.testing.assert_array_equal(pixels, np.rint(data / top * 255), err_msg=f"{case}")
        assert 128 <= pixels.max() <= 255, (case, brightest)


def test_eight_bit_and_colour_images(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_grayscale(tmp_path / "gray.png")[0].numpy(), gray)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_grayscale(tmp_path / "rgb.png")[0].numpy(), gray)
    assert read_grayscale(tmp_path / "gray.png", size=8).shape == (1, 8, 8)


def test_a_broken_image_in_a_worker_gives_the_one_message(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    loader = torch.utils.data.DataLoader(
        ImageList([tmp_path / "good.png", tmp_path / "bad.png"], 8), batch_size=1, num_workers=1
    )
    with pytest.raises(UserError) as raised:
        list(loader)
    assert "Traceback" in str(raised.value)  # as torch re-raises it
    message = user_message(raised.value)
    assert message.startswith(f"cannot read image {tmp_path / 'bad.png'}") and "\n" not in message


def test_scripts_print_the_unwrapped_message_and_exit_2(tmp_path):
    script = (
        "import torch, sys; from cxr.data.datasets import ImageList; from cxr.run.errors import "
        "exit_on_user_error\nexit_on_user_error(lambda _: "
        f"list(torch.utils.data.DataLoader(ImageList([{str(tmp_path / 'x.png')!r}], 8), "
        "num_workers=1)))"
    )
    (tmp_path / "x.png").write_bytes(b"not an image")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read image") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_once_gives_the_same_tensors_as_decoding_each_time(tmp_path, workers):
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(70, 50), (64, 64), (33, 90)] * 30):  # 90: two batches of 64
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    each_time = ImageList(paths, 32)
    expected = [each_time[i] for i in range(len(paths))]
    once = ImageList(paths, 32)
    once.decode_once(workers=workers)
    for path in paths:
        path.unlink()  # from here on, memory only
    assert once.decoded_bytes() == 90 * 32 * 32
    assert all(torch.equal(once[i], expected[i]) for i in range(len(paths)))
