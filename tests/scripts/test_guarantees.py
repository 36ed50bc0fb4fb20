"""The data-safety guarantees over generated cases (docs/reliability.md): nothing outside
the output is written, nothing of the user's is changed, image names are names, a
killed or interrupted writer leaves nothing a rerun trips on, one writer per folder,
and a full disk ends in one line with the previous output intact."""

import csv
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import prepared_synthetic
from PIL import Image

from cxr.data.image_lists import read_image_list, write_image_list
from cxr.data.names import name_problem
from cxr.data.preparation import prepare
from cxr.data.synthetic_xrays import CSV_COLUMNS, generate
from cxr.run.errors import UserError

REPO = Path(__file__).resolve().parents[2]
GOOD = ["a", "Z9", "-", "_", " ", "é", "肺", ",", '"', "."]  # inside a name, not first
BAD = ["/", "\\", "\n", "\t", "\x00", "\u2028", ".", ".."]  # a separator, a control, a dot first


def random_name(rng, good=True):
    """A name from GOOD pieces (never starting with '.'), or with one BAD piece in it."""

    def pick(pieces):  # by index: numpy's string arrays drop a trailing NUL
        return pieces[int(rng.integers(len(pieces)))]

    pieces = [pick(GOOD[:-1])] + [pick(GOOD) for _ in range(rng.integers(4))]
    if not good:
        bad = pick(BAD)
        pieces.insert(0 if bad.startswith(".") else int(rng.integers(len(pieces) + 1)), bad)
    return "".join(pieces)


def snapshot(root, skip):
    """{path: (size, mtime)} of every file under root outside `skip`."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


def write_table(folder, ids):
    """A train.csv of one box per id, and a PNG for every id that can name a file."""
    images = folder / "images"
    images.mkdir()
    with open(folder / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows((i, "Cardiomegaly", 3, "R1", 10, 20, 200, 220, 512, 512) for i in ids)
    for image_id in ids:
        if name_problem(image_id) is None:
            Image.new("L", (64, 64), 60).save(images / f"{image_id}.png", format="PNG")
    return folder / "train.csv", images


@pytest.mark.parametrize("seed", range(10))
def test_generated_names_are_kept_as_names_and_nothing_outside_the_output_changes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    ids = list(dict.fromkeys(random_name(rng) for _ in range(8)))
    table, images = write_table(tmp_path, ids)
    before = snapshot(tmp_path, tmp_path / "out")
    prepare(table, images, tmp_path / "out", test_fraction=0.3, seed=seed, log=lambda *_: None)
    written = {
        p.name[: -len(".png")]
        for split in ("train", "test")
        for p in (tmp_path / "out" / split).iterdir()
    }
    assert written == set(ids)
    assert snapshot(tmp_path, tmp_path / "out") == before  # nothing outside --out changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out", "train.csv"]


@pytest.mark.parametrize("seed", range(10))
def test_a_generated_bad_name_is_refused_naming_its_line(tmp_path, seed):
    rng = np.random.default_rng(seed)
    ids = list(dict.fromkeys(random_name(rng) for _ in range(6)))
    at = int(rng.integers(len(ids) + 1))
    ids.insert(at, random_name(rng, good=False))
    table, images = write_table(tmp_path, ids)
    before = snapshot(tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match=f"line {at + 2}: the image name"):
        prepare(table, images, tmp_path / "out", log=lambda *_: None)
    assert snapshot(tmp_path, tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "train.csv"]


@pytest.mark.parametrize("seed", range(5))
def test_any_name_survives_an_image_list(tmp_path, seed):
    rng = np.random.default_rng(seed)
    names = [random_name(rng, good=bool(rng.integers(2))) for _ in range(20)]
    write_image_list(tmp_path / "list.json", names, fingerprint="f")
    assert read_image_list(tmp_path / "list.json").names == sorted(names)


def run_prepare(source, out, *extra, limit=None):
    """python -m cxr.prepare in a process of its own (with a file-size limit, as a full disk)."""

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "cxr.prepare", "--csv", str(source / "train.csv")]
    command += ["--images", str(source / "train"), "--out", str(out), *extra]
    return subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limited if limit else None,
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    generate(root / "vin", num_images=300, size=64, seed=2, test_images=0, log=lambda *_: None)
    return root / "vin"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_a_prepare_killed_at_a_random_moment_leaves_nothing_a_rerun_trips_on(table, tmp_path, seed):
    delay = np.random.default_rng(seed).uniform(0.05, 0.6)
    out, before = tmp_path / "data", snapshot(table, tmp_path / "none")
    killed = run_prepare(table, out)
    time.sleep(delay)
    killed.send_signal(signal.SIGKILL if seed % 2 else signal.SIGTERM)
    code = killed.wait()
    rerun = run_prepare(table, out, "--replace")
    assert rerun.wait() == 0, rerun.stderr.read()
    assert (out / "prepare_summary.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging left beside it
    assert snapshot(table, tmp_path / "none") == before  # the inputs untouched
    if code == 128 + signal.SIGTERM:  # SIGTERM unwinds: one line, and nothing left at all
        assert "stopped by SIGTERM" in killed.stderr.read()


@pytest.mark.slow
def test_two_prepares_into_one_folder_one_writes_the_other_is_refused(table, tmp_path):
    first, second = run_prepare(table, tmp_path / "data"), run_prepare(table, tmp_path / "data")
    codes = sorted([first.wait(), second.wait()])
    errors = first.stderr.read() + second.stderr.read()
    assert codes == [0, 2], errors
    assert "is being written by process" in errors or "already exists" in errors
    assert (tmp_path / "data" / "prepare_summary.json").is_file()


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_keeps_the_previous_output(table, tmp_path):
    assert run_prepare(table, tmp_path / "data", "--test-fraction", "0.5").wait() == 0
    summary = (tmp_path / "data" / "prepare_summary.json").read_bytes()
    full = run_prepare(table, tmp_path / "data", "--replace", limit=20_000)
    _, err = full.communicate()
    assert full.returncode == 2 and err.count("error:") == 1, err
    assert "disk full while writing" in err and "nothing was replaced" in err
    assert (tmp_path / "data" / "prepare_summary.json").read_bytes() == summary
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def train_ssl(data_dir, out, name, *extra):
    command = [
        sys.executable,
        "train_ssl.py",
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(out),
    ]
    command += ["--experiment-name", name, "--arch", "resnet18", "--image-size", "32"]
    command += ["--batch-size", "8", "--workers", "0", "--include-normal", "--device", "cpu"]
    command += ["--precise-bn-images", "0", *extra]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("ssl-data"), num_images=40, seed=3)


@pytest.mark.slow
def test_two_runs_into_one_folder_the_second_is_refused_naming_the_first(data_dir, tmp_path):
    first = train_ssl(data_dir, tmp_path, "exp", "--epochs", "200")  # outlasts the second's start
    run = tmp_path / "exp" / "pretrain"
    while not (run / "log.jsonl").exists() and first.poll() is None:
        time.sleep(0.05)
    second = train_ssl(data_dir, tmp_path, "exp", "--epochs", "3", "--replace")
    assert second.wait() == 2
    assert f"is being written by process {first.pid}" in second.stderr.read()
    assert first.poll() is None  # the first writer was never disturbed
    first.terminate()
    assert first.wait() == 128 + signal.SIGTERM
    assert "log.jsonl" in os.listdir(run)


def epochs_logged(run):
    path = run / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum('"event": "epoch"' in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_a_run_killed_at_a_random_moment_resumes_and_finishes(data_dir, tmp_path, seed):
    """Killed after a random number of epochs (three or more left) plus a random delay,
    so on any machine the kill lands inside the run: mid-epoch or mid-checkpoint."""
    rng = np.random.default_rng(seed)
    run = tmp_path / "exp" / "pretrain"
    killed = train_ssl(data_dir, tmp_path, "exp", "--epochs", "6")
    after = int(rng.integers(0, 4))
    while epochs_logged(run) < after and killed.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.05))
    assert killed.poll() is None, "the run ended before the kill"
    killed.kill()
    killed.wait()
    again = train_ssl(data_dir, tmp_path, "exp", "--epochs", "6", "--auto-resume")
    code, err = again.wait(), again.stderr.read()
    if code == 2:  # killed before its first checkpoint: the folder holds an unfinished start
        assert "already holds a run" in err and "--replace" in err
        again = train_ssl(data_dir, tmp_path, "exp", "--epochs", "6", "--replace")
        code, err = again.wait(), again.stderr.read()
    assert code == 0, err
    assert (run / "pretrained-backbone.pth").is_file()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".cxr-lock"]
    assert os.listdir(tmp_path) == ["exp"]
