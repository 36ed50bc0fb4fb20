"""train_ssl.py end to end on tiny synthetic data, and the engine's safety nets."""

import json
import os
import shlex
import shutil
import signal
import time

import numpy as np
import pytest
import torch
import torchvision
from conftest import children, prepared_synthetic, ssl_args, torchrun
from PIL import Image

import train_ssl
from cxr.data.image_lists import read_image_list
from cxr.run import layout
from cxr.run.cli import parse_views
from cxr.run.distributed import DistInfo
from cxr.run.errors import UserError
from cxr.run.outputs import MARKER, mark_as_ours
from cxr.ssl.views import VIEW_PRESETS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("ssl"), num_images=40, seed=11)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(data_dir, tmp_path, capsys):
    train_ssl.main(ssl_args(data_dir, tmp_path, "straight"))
    train_ssl.main(ssl_args(data_dir, tmp_path, "resumed", "--stop-after", "1"))
    run = tmp_path / "resumed" / "pretrain"
    assert not (run / "pretrained-backbone.pth").exists()
    assert torch.load(run / "checkpoint.pth", weights_only=True)["epoch"] == 1
    train_ssl.main(ssl_args(data_dir, tmp_path, "resumed", "--resume"))
    assert "resumed from" in capsys.readouterr().out

    straight = torch.load(
        tmp_path / "straight" / "pretrain" / "pretrained-backbone.pth", weights_only=True
    )
    resumed = torch.load(run / "pretrained-backbone.pth", weights_only=True)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # torchvision's habit: --resume CHECKPOINT continues that checkpoint's run in this folder
    first_epoch = tmp_path / "first-epoch.pth"
    train_ssl.main(ssl_args(data_dir, tmp_path, "stopped", "--stop-after", "1"))
    (tmp_path / "stopped" / "pretrain" / "checkpoint.pth").rename(first_epoch)
    train_ssl.main(ssl_args(data_dir, tmp_path, "elsewhere", "--resume", str(first_epoch)))
    elsewhere = torch.load(
        tmp_path / "elsewhere" / "pretrain" / "pretrained-backbone.pth", weights_only=True
    )
    assert all(torch.equal(straight[key], elsewhere[key]) for key in straight)

    missing, unexpected = torchvision.models.resnet18().load_state_dict(straight, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    meta = json.loads((run / "pretrained-backbone.json").read_text())
    assert meta["arch"] == "resnet18" and meta["image_size"] == 32
    pool = read_image_list(run / layout.SSL_IMAGES).names
    assert len(pool) == meta["ssl_images"] and pool == sorted(pool)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"start", "train", "epoch", "resume", "done"} <= {r["event"] for r in records}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["event"] == "train")


@pytest.mark.slow
def test_run_folder_protection_and_resume_checks(data_dir, tmp_path):
    with pytest.raises(UserError, match="fewer than --batch-size 1000"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--batch-size", "1000"))
    assert not (tmp_path / "exp").exists()  # a refused run leaves nothing behind
    train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "2", "--stop-after", "1"))
    with pytest.raises(UserError, match="already holds a run .*; pass --resume .* --replace"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "2"))
    with pytest.raises(UserError, match="--resume with different settings .*batch_size 8 -> 4"):
        train_ssl.main(
            ssl_args(data_dir, tmp_path, "exp", "--epochs", "2", "--resume", "--batch-size", "4")
        )
    with pytest.raises(UserError, match="no checkpoint"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "other", "--resume"))
    header = (tmp_path / "exp" / "pretrain" / "args.json").read_text()
    for changed in (
        ("--temperature", "0.2"),
        ("--views", "cxr"),
        ("--weight-decay", "0"),
        ("--no-sync-bn",),
        ("--amp", "bf16"),
        ("--clip-grad", "1"),
        ("--projection-dim", "64"),
        ("--precise-bn-images", "8"),
    ):
        key = changed[0].lstrip("-").replace("-", "_").replace("no_", "")
        with pytest.raises(UserError, match=f"different settings than the checkpoint: {key} "):
            train_ssl.main(
                ssl_args(data_dir, tmp_path, "exp", "--epochs", "2", "--resume", *changed)
            )
    assert (
        tmp_path / "exp" / "pretrain" / "args.json"
    ).read_text() == header  # refused before writing
    with pytest.raises(UserError, match="--warmup-epochs 3 is longer than the whole run"):
        train_ssl.main(
            ssl_args(data_dir, tmp_path, "long-warmup", "--epochs", "2", "--warmup-epochs", "3")
        )
    assert not (tmp_path / "long-warmup").exists()
    train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", "--replace"))


@pytest.mark.slow
def test_replace_deletes_only_the_runs_own_files_in_a_folder_cxr_made(data_dir, tmp_path):
    run = tmp_path / "exp" / "pretrain"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")  # a folder of the user's: never written into
    with pytest.raises(UserError, match="was not made by cxr"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", "--replace"))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    mark_as_ours(run, "test")  # as cxr marks the folders it makes
    (run / "args.json").write_text("{}")  # what a start that failed early leaves
    (run / ".checkpoint.pth.4242.tmp").write_text("half")  # a write killed midway
    with pytest.raises(UserError, match="already holds a run .*args.json.*--replace"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1"))
    assert (run / "args.json").read_text() == "{}"
    train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--epochs", "1", "--replace"))
    assert (run / "notes.txt").read_text() == "mine"
    expected = [*layout.PRETRAIN_OUTPUTS, "notes.txt", MARKER]
    assert sorted(p.name for p in run.iterdir()) == sorted(expected)  # no temp file, no lock
    with pytest.raises(UserError, match="--replace starts over, --resume / --auto-resume continue"):
        train_ssl.main(ssl_args(data_dir, tmp_path, "exp", "--auto-resume", "--replace"))


@pytest.mark.slow
def test_auto_resume_starts_a_new_run_and_continues_a_stopped_one(data_dir, tmp_path):
    train_ssl.main(ssl_args(data_dir, tmp_path, "straight"))
    train_ssl.main(ssl_args(data_dir, tmp_path, "auto", "--auto-resume", "--stop-after", "1"))
    train_ssl.main(ssl_args(data_dir, tmp_path, "auto", "--auto-resume"))
    straight = torch.load(
        tmp_path / "straight" / "pretrain" / "pretrained-backbone.pth", weights_only=True
    )
    resumed = torch.load(
        tmp_path / "auto" / "pretrain" / "pretrained-backbone.pth", weights_only=True
    )
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    events = [
        json.loads(line)["event"] for line in (tmp_path / "auto" / "pretrain" / "log.jsonl").open()
    ]
    assert events.count("resume") == 1 and events.count("start") == 2


@pytest.mark.slow
def test_extra_images_join_the_pool_once_each_and_never_overlap_the_prepared_data(
    data_dir, tmp_path
):
    extra = tmp_path / "archive"
    extra.mkdir()
    for i, size in enumerate([(70, 50), (40, 40), (33, 90)]):
        Image.new("L", size, 30 * i).save(extra / f"unlabeled{i}.png")
    Image.fromarray(np.full((40, 40), 4000, dtype=np.uint16)).save(extra / "sixteen.png")
    train_ssl.main(
        ssl_args(
            data_dir,
            tmp_path,
            "extra",
            "--epochs",
            "1",
            "--extra-images",
            str(extra),
            str(extra),
            str(extra / "unlabeled0.png"),
        )
    )
    run = tmp_path / "extra" / "pretrain"
    listed = read_image_list(run / layout.SSL_IMAGES).names
    assert sorted(n for n in listed if "/" in n) == sorted(
        str(p) for p in extra.iterdir()
    )  # once each
    assert json.loads((run / "pretrained-backbone.json").read_text())["extra_images"] == 4
    test_image = next((data_dir / "test").glob("*.png"))
    for leak, why in (
        (lambda: os.link(test_image, extra / "renamed.png"), "the same file"),
        (lambda: shutil.copy(test_image, extra / "renamed.png"), "the same picture"),
        (lambda: shutil.copy(next((data_dir / "train").glob("*.png")), extra), "its name"),
    ):
        leak()
        with pytest.raises(UserError, match=f"are prepared images of .*{why}"):
            train_ssl.main(
                ssl_args(data_dir, tmp_path, "leak", "--epochs", "1", "--extra-images", str(extra))
            )
        for path in extra.iterdir():
            if not path.name.startswith(("unlabeled", "sixteen")):
                path.unlink()
    assert not (tmp_path / "leak").exists()

    shutil.copy(test_image, extra / "renamed.png")
    argv = ["--epochs", "1", "--extra-images", str(extra), "--drop-prepared"]
    train_ssl.main(ssl_args(data_dir, tmp_path, "dropped", *argv))
    run = tmp_path / "dropped" / "pretrain"
    assert str(extra / "renamed.png") not in read_image_list(run / layout.SSL_IMAGES).names
    records = [json.loads(line) for line in (run / layout.LOG).read_text().splitlines()]
    (dropped,) = [r["dropped"] for r in records if r.get("event") == "extra_images_dropped"]
    assert (
        list(dropped) == [str(extra / "renamed.png")]
        and "same picture" in dropped[str(extra / "renamed.png")]
    )


def test_a_dry_run_with_drop_prepared_lists_every_image_it_leaves_out(data_dir, tmp_path, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    tests = sorted((data_dir / "test").glob("*.png"))
    for number, image in enumerate(tests):  # each test image as a renamed JPEG
        with Image.open(image) as picture:
            picture.save(extra / f"scan{number}.jpg", quality=75)
    argv = ["--epochs", "1", "--extra-images", str(extra), "--drop-prepared", "--dry-run", "1"]
    train_ssl.main(ssl_args(data_dir, tmp_path, "listed", *argv))
    printed = [line for line in capsys.readouterr().out.splitlines() if "left out: " in line]
    assert len(tests) > 1 and sorted(printed) == sorted(
        f"left out: {extra / f'scan{n}.jpg'} (the same picture as {image})"
        for n, image in enumerate(tests)
    )
    assert not (tmp_path / "listed").exists()


def test_out_of_range_fractions_are_refused_by_the_parser(capsys):
    for flag in ("--ssl-fraction", "--labeled-dataset-percent"):
        with pytest.raises(SystemExit) as exit_code:
            train_ssl.get_args_parser().parse_args([flag, "1.5"])
        assert exit_code.value.code == 2
        assert "1.5 is not a share in [0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_bf16_and_fp16_run_on_the_cpu_and_fp16_resumes_exactly_with_its_scaler(data_dir, tmp_path):
    """The GradScaler's state (its scale after the first steps' overflows) is saved in
    the checkpoint and restored: a resumed fp16 run ends with the uninterrupted one's
    weights."""
    train_ssl.main(ssl_args(data_dir, tmp_path, "bf16", "--epochs", "1", "--amp", "bf16"))
    assert (tmp_path / "bf16" / "pretrain" / "pretrained-backbone.pth").exists()
    fp16 = ["--amp", "fp16", "--precise-bn-images", "0"]
    train_ssl.main(ssl_args(data_dir, tmp_path, "straight", *fp16))
    train_ssl.main(ssl_args(data_dir, tmp_path, "resumed", *fp16, "--stop-after", "1"))
    state = torch.load(tmp_path / "resumed" / "pretrain" / "checkpoint.pth", weights_only=True)
    assert state["scaler"]["scale"] < 2.0**16  # steps overflowed and the scale backed off
    train_ssl.main(ssl_args(data_dir, tmp_path, "resumed", *fp16, "--resume"))
    straight, resumed = (
        torch.load(tmp_path / name / "pretrain" / "pretrained-backbone.pth", weights_only=True)
        for name in ("straight", "resumed")
    )
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_seed_project_command_line_parses_with_its_meaning():
    seed_command = (
        "--experiment-name simclr_60pct --batch-size 8 --epochs 100 --lr 0.05 --workers 8 "
        "--labeled-dataset-percent 0.6 --warmup-epochs 10 --devices auto --replace"
    )
    args = train_ssl.get_args_parser().parse_args(shlex.split(seed_command))
    assert (args.ssl_fraction, args.devices, args.epochs, args.lr, args.replace) == (
        0.6,
        "auto",
        100,
        0.05,
        True,
    )
    single = DistInfo(0, 1, 0, torch.device("cpu"))
    train_ssl.check_devices_flag("auto", single)
    with pytest.raises(UserError, match="torchrun --nproc_per_node=4"):
        train_ssl.check_devices_flag("4", single)


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(data_dir, tmp_path):
    args = ssl_args(data_dir, tmp_path, "ddp", "--epochs", "1", "--batch-size", "4")
    result = torchrun("train_ssl.py", *args, timeout=120)
    run = tmp_path / "ddp" / "pretrain"
    assert (run / "pretrained-backbone.pth").exists()
    header = json.loads((run / "args.json").read_text())
    assert header["world_size"] == 2
    assert result.stdout.count("epoch 1/1 done") == 1  # only rank 0 logs
    assert "BatchNorm statistics global over 2 processes" in result.stdout


@pytest.mark.slow
def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_ends_as_if_uninterrupted(
    data_dir, tmp_path
):
    """torchrun --max-restarts=1 restarts the whole group with the same arguments;
    with --auto-resume it continues from the last checkpoint."""
    settings = ["--epochs", "6", "--batch-size", "4", "--auto-resume"]
    straight = torchrun(
        "train_ssl.py",
        *ssl_args(data_dir, tmp_path, "straight", *settings),
        log=tmp_path / "straight.log",
    )
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    run = tmp_path / "restarted" / "pretrain"
    agent = torchrun(
        "train_ssl.py",
        *ssl_args(data_dir, tmp_path, "restarted", *settings),
        max_restarts=1,
        log=tmp_path / "restarted.log",
    )
    deadline = time.monotonic() + 240
    while not (run / "checkpoint.pth").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(children(agent.pid)[0], signal.SIGKILL)
    assert agent.wait(timeout=300) == 0, (tmp_path / "restarted.log").read_text()[-3000:]
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").open()]
    assert events.count("resume") == 1 and events[-1] == "done"
    expected = torch.load(
        tmp_path / "straight" / "pretrain" / "pretrained-backbone.pth", weights_only=True
    )
    restarted = torch.load(run / "pretrained-backbone.pth", weights_only=True)
    assert all(torch.equal(expected[k], restarted[k]) for k in expected)


def test_view_presets_and_overrides():
    assert parse_views("simclr") == VIEW_PRESETS["simclr"]
    cxr = parse_views('{"preset": "cxr", "blur_p": 0.3, "crop_scale": [0.5, 1.0]}')
    assert (cxr.vflip_p, cxr.jitter_p, cxr.blur_p, cxr.crop_scale) == (0.0, 0.0, 0.3, (0.5, 1.0))
    assert parse_views('{"blur_p": 0.1}').jitter_p == 0.8  # overrides the seed's defaults
    for bad in ("cxr2", '{"blurr": 1}', '{"preset": "nope"}', "[1]", '{"noise_std": -1}'):
        with pytest.raises(ValueError):
            parse_views(bad)


@pytest.mark.slow
def test_a_pool_decoded_once_trains_exactly_as_one_decoded_every_epoch(
    data_dir, tmp_path, monkeypatch
):
    weights = {}
    for name, budget in (("once", train_ssl.DECODE_ONCE_BYTES), ("every", 0)):
        monkeypatch.setattr(train_ssl, "DECODE_ONCE_BYTES", budget)
        train_ssl.main(ssl_args(data_dir, tmp_path, name, "--workers", "1"))
        run = tmp_path / name / "pretrain"
        weights[name] = torch.load(run / layout.BACKBONE)
        events = [json.loads(line).get("event") for line in (run / layout.LOG).open()]
        assert ("decode_once" in events) == (name == "once")
    assert weights["once"].keys() == weights["every"].keys()
    assert all(torch.equal(weights["once"][k], weights["every"][k]) for k in weights["once"])
