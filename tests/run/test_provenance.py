"""A model's record of what it learnt from: written and read back exactly, malformed
records refused, and a refusal naming how many and which images, renamed ones by both
names."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import free_port, spawn_two
from PIL import Image

from cxr.data.pixel_keys import KEY_SIZE, encode_keys
from cxr.run.distributed import DistInfo
from cxr.run.errors import UserError
from cxr.run.provenance import (
    check_unlearnt,
    describe_record,
    keys_of,
    model_record,
    parse_trained_on,
    refuse_learnt,
    seen_in,
    trained_on_entry,
)


@pytest.fixture
def data_dir(tmp_path):
    """What data_fingerprint reads of a prepared folder."""
    for name in ("split.json", "train_annotations.json", "test_annotations.json"):
        (tmp_path / name).write_text("{}")
    return tmp_path


def keys(count, seed):
    return torch.randn(count, KEY_SIZE, generator=torch.Generator().manual_seed(seed))


def test_an_entry_reads_back_as_written(data_dir):
    pool = keys(3, 0)
    entry = trained_on_entry("SSL pool", ["a", "b", "c"], pool, data_dir=data_dir)
    (parsed,) = parse_trained_on(json.loads(json.dumps([entry])))
    assert (parsed.what, parsed.names) == ("SSL pool", ["a", "b", "c"])
    assert parsed.data_fingerprint == entry["data_fingerprint"] and len(entry["data_fingerprint"])
    assert (parsed.keys - pool).abs().max() < 4e-3
    assert model_record({"arch": "resnet18"}) is None  # no record: from elsewhere
    assert model_record({"trained_on": []}) == []


def test_a_malformed_record_is_not_read(data_dir):
    good = trained_on_entry("SSL pool", ["a", "b"], keys(2, 0), data_dir=data_dir)
    malformed = [
        good,  # not a list
        [{k: v for k, v in good.items() if k != "images"}],
        [{**good, "extra": 1}],
        [{**good, "images": ["a", 2]}],
        [{**good, "images": "ab"}],
        [{**good, "images": ["a"]}],  # two keys for one name
        [{**good, "what": None}],
        [{**good, "pixel_keys": good["pixel_keys"][:-4]}],
        [good, "entry"],
    ]
    for value in malformed:
        assert parse_trained_on(value) is None, value


def test_a_refusal_counts_every_image_learnt_and_names_the_first_by_both_names():
    pool = keys(6, 1)
    record = parse_trained_on(
        [
            {
                "what": "SSL pool",
                "data_fingerprint": "f",
                "images": ["p0", "p1", "p2", "p3", "p4", "p5"],
                "pixel_keys": encode_keys(pool),
            }
        ]
    )
    names = ["t0", "p1", "p3", "t3", "p5", "p0"]  # t0 is p2 renamed, t3 another picture
    queried = torch.cat([pool[[2, 1, 3]], keys(1, 2) + 5, pool[[5, 0]]])
    queried[1] += 0.01  # a copy's small change
    assert set(seen_in(record, names, queried)) == {"t0", "p1", "p3", "p5", "p0"}
    with pytest.raises(UserError) as refused:
        refuse_learnt(
            record, names, queried, model="the backbone B", role="test images", advice="X"
        )
    message = str(refused.value)
    assert message.startswith("the backbone B learnt from 5 of the 6 test images (the same")
    assert "p0 in its SSL pool; p1 in its SSL pool; p3 in its SSL pool; and 2 more. X" in message
    refuse_learnt(record, ["t3"], queried[[3]], model="m", role="r", advice="a")  # none: no error
    with pytest.raises(UserError, match=r"in its SSL pool\. X$"):  # three: all named
        refuse_learnt(record, names[:3], queried[:3], model="m", role="r", advice="X")


def test_a_model_without_a_record_is_accepted_and_said_so(tmp_path):
    line = check_unlearnt({}, {"x": tmp_path / "absent.png"}, model="M", role="r", log=None)
    assert line == describe_record(None, "M") and "keeps no record" in line


def _keys_worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        images = {p.stem: p for p in sorted(Path(folder).glob("*.png"))}
        dist_info = DistInfo(rank, 2, 0, torch.device("cpu"))
        names, keys = keys_of(images, what="x", log=None, dist_info=dist_info, workers=rank)
        torch.save({"names": names, "keys": keys}, Path(folder) / f"keys.{rank}")
    finally:
        dist.destroy_process_group()


def test_keys_shared_by_two_processes_are_the_keys_of_one(tmp_path):
    generator = np.random.default_rng(0)
    for index in range(5):  # parts of 2 and 3 images
        coarse = generator.integers(0, 256, (6, 6)).astype(np.uint8)
        Image.fromarray(coarse).resize((64, 48), Image.BICUBIC).save(tmp_path / f"i{index}.png")
    spawn_two(_keys_worker, free_port(), str(tmp_path))
    images = {p.stem: p for p in sorted(tmp_path.glob("*.png"))}
    names, keys = keys_of(images, what="x", log=None)
    for rank in (0, 1):
        shared = torch.load(tmp_path / f"keys.{rank}")
        assert shared["names"] == names == [f"i{i}" for i in range(5)]
        assert torch.equal(shared["keys"], keys)
