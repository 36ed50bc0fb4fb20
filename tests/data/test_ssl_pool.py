"""The SSL pool: prepared images never enter it from --extra-images, by name, file,
pixels, or as another film of a test patient."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_nih import ROWS, write_nih

from cxr.data.preparation import prepare
from cxr.data.ssl_pool import extra_images, ssl_pool
from cxr.run.errors import UserError


@pytest.fixture
def nih_data(tmp_path):
    csv_path, images = write_nih(tmp_path / "nih", ROWS, png=64)
    prepare(csv_path, images, tmp_path / "data", data_format="nih", test_fraction=0.5, seed=3,
            log=lambda *_: None)  # fmt: skip
    return tmp_path / "data"


def film(folder, name, seed):
    """A 64 px picture of its own (seeded, smooth as a radiograph is at 8 x 8)."""
    folder.mkdir(exist_ok=True)
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6)).astype(np.uint8)
    Image.fromarray(coarse).resize((64, 64), Image.BICUBIC).save(folder / name)
    return folder / name


def test_another_film_of_a_test_patient_is_refused_and_of_a_train_patient_accepted(
    nih_data, tmp_path
):
    split = json.loads((nih_data / "split.json").read_text())
    test_patient = split["test"][0].split("_")[0]
    train_patient = split["train"][0].split("_")[0]
    archive = tmp_path / "archive"
    film(archive, f"{train_patient}_099.png", 7)
    accepted, dropped = extra_images([archive], nih_data, log=None)
    assert [p.name for p in accepted] == [f"{train_patient}_099.png"] and dropped == {}
    film(archive, f"{test_patient}_099.png", 9)
    with pytest.raises(UserError, match=f"film of patient {test_patient}, who has test images"):
        extra_images([archive], nih_data, log=None)


COPIES = {
    "renamed": lambda image, path: image.save(path.with_suffix(".png")),
    "JPEG quality 30": lambda image, path: image.save(path.with_suffix(".jpg"), quality=30),
    "half size, RGB": lambda image, path: (
        image.resize((32, 32), Image.BOX).convert("RGB").save(path.with_suffix(".png"))
    ),
    "16-bit": lambda image, path: Image.fromarray(np.asarray(image).astype(np.uint16) * 257).save(
        path.with_suffix(".png")
    ),
}


@pytest.mark.parametrize("copy", COPIES)
def test_a_copy_of_any_prepared_image_is_refused_by_its_pixels(nih_data, tmp_path, copy):
    for split in ("train", "test"):
        archive = tmp_path / split
        archive.mkdir()
        source = next((nih_data / split).glob("*.png"))
        with Image.open(source) as image:
            COPIES[copy](image, archive / "unrelated")
        film(archive, "other.png", 1)
        with pytest.raises(UserError, match=f"1 of 2 images .* same picture as {source}"):
            extra_images([archive], nih_data, log=None)


def test_an_image_over_pillows_limit_is_refused_by_name(nih_data, tmp_path, monkeypatch):
    big = film(tmp_path / "archive", "big.png", 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 1000: a "bomb" here
    with pytest.raises(UserError, match="big.png is larger than Pillow's limit of 1000 pixels"):
        extra_images([big], nih_data, log=None)  # 4096 > 2 x 1000: Pillow refuses to open it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with pytest.raises(UserError, match="big.png is 64 x 64 pixels, more than Pillow's limit"):
        extra_images([big], nih_data, log=None)


def test_every_clash_is_named_at_once_and_drop_prepared_leaves_exactly_them_out(nih_data, tmp_path):
    split = json.loads((nih_data / "split.json").read_text())
    archive = tmp_path / "archive"
    clashing = {
        film(archive, f"{split['test'][0].split('_')[0]}_099.png", 9),  # a test patient's film
        film(archive, f"{split['train'][0]}.png", 1),  # a prepared image's name
        archive / "copy.png",
        archive / "link.png",
    }
    shutil.copy(next((nih_data / "test").glob("*.png")), archive / "copy.png")
    (archive / "link.png").hardlink_to(next((nih_data / "train").glob("*.png")))
    kept = {film(archive, f"new_{i}.png", 20 + i) for i in range(3)}
    with pytest.raises(UserError, match=r"--extra-images: 4 of 7 images .* and 1 more\. Pass "):
        extra_images([archive], nih_data, log=None)
    accepted, dropped = extra_images([archive], nih_data, drop_prepared=True, log=None)
    assert set(accepted) == kept and set(dropped) == clashing
    assert "same picture" in dropped[archive / "copy.png"]
    assert "same file" in dropped[archive / "link.png"]


def test_the_pool_is_the_ssl_share_plus_the_extra_images_by_path(nih_data, tmp_path):
    extra = film(tmp_path / "archive", "other.png", 5)
    pool = ssl_pool(nih_data, ssl_fraction=0.5, split_seed=0, include_normal=False, extra=[extra])
    train = json.loads((nih_data / "split.json").read_text())["train"]
    assert str(extra) in pool and len(pool) == round(len(train) * 0.5) + 1


def test_include_normal_on_data_prepared_without_them_says_how_to_get_them(nih_data):
    with pytest.raises(UserError, match="--include-normal needs the normal images.*--keep-normal"):
        ssl_pool(nih_data, ssl_fraction=0.5, split_seed=0, include_normal=True)
