"""Outputs are never half-written: a failed write leaves the previous file or
folder as it was and no temp file behind."""

import datetime
import fcntl
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from cxr.run.checkpoints import torch_bytes
from cxr.run.errors import UserError
from cxr.run.folder import check_run_state
from cxr.run.outputs import (
    LOCK,
    Lock,
    OutputFolder,
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    make_folder,
    mark_as_ours,
    open_output_folder,
    staged_directory,
)


@pytest.fixture
def file_size_limit():
    """Make writes past `limit` bytes fail with EFBIG, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def set_limit(limit):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    yield set_limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous_handler)


def test_checkpoint_write_that_runs_out_of_space_keeps_the_previous_one(tmp_path, file_size_limit):
    path, folder = tmp_path / "checkpoint.pth", OutputFolder(tmp_path)
    folder.write_bytes(path.name, torch_bytes({"epoch": 1, "weights": torch.ones(10)}))
    file_size_limit(100_000)
    with pytest.raises(UserError, match="disk full while writing .*checkpoint.pth"):
        folder.write_bytes(path.name, torch_bytes({"epoch": 2, "weights": torch.zeros(10**6)}))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["weights"], torch.ones(10))


def test_text_write_that_runs_out_of_space_keeps_the_previous_file(tmp_path, file_size_limit):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"map": 0.5})
    file_size_limit(100_000)
    with pytest.raises(UserError, match="disk full while writing .*metrics.json.*nothing was"):
        atomic_write_text(path, "x" * 1_000_000)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert path.read_text() == '{"map": 0.5}\n'


def test_staged_directory_refuses_replaces_and_rolls_back(tmp_path):
    final = tmp_path / "run"
    with staged_directory(final) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(UserError, match="--replace"):
        with staged_directory(final):
            pass
    with pytest.raises(ValueError):
        with staged_directory(final, replace=True) as staging:
            (staging / "a.txt").write_text("broken")
            raise ValueError
    assert (final / "a.txt").read_text() == "first"
    with staged_directory(final, replace=True) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == [".cxr-output", "b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_output_that_is_a_link_is_written_in_its_target_and_stays_a_link(tmp_path):
    target, link = tmp_path / "disk" / "data", tmp_path / "data"
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    link.symlink_to(target)
    with staged_directory(link, replace=True) as staging:
        (staging / "b.txt").write_text("second")
    assert link.is_symlink()
    assert sorted(p.name for p in target.iterdir()) == [".cxr-output", "b.txt"]
    with open_output_folder(link, command="test") as folder:
        folder.write_json("c.json", {})
    assert link.is_symlink() and (target / "c.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "disk"]  # no staging left


def test_folders_get_the_users_umask_and_impossible_places_one_message(tmp_path):
    previous = os.umask(0o022)
    try:
        with staged_directory(tmp_path / "shared") as staging:
            (staging / "a.txt").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755  # not mkdtemp's 0700
    (tmp_path / "a-file").write_text("x")
    for impossible in (tmp_path / "a-file" / "out", Path("/proc/cxr-test/out")):
        with pytest.raises(UserError, match="cannot create the folder"):
            with staged_directory(impossible):
                pass
        with pytest.raises(UserError, match="cannot create the folder"):
            make_folder(impossible)


def test_replace_needs_the_marker_and_an_output_may_not_hold_an_input(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        check_output_folder(mine, replace=False)
    with pytest.raises(UserError, match="not made by cxr"):
        check_output_folder(mine, replace=True)
    mark_as_ours(mine, "test")
    check_output_folder(mine, replace=True)
    with pytest.raises(UserError, match="contains the input"):
        check_output_folder(tmp_path, replace=True, inputs=[mine / "notes.txt"])
    check_output_folder(tmp_path / "new", replace=False, inputs=[mine / "notes.txt"])


def test_saved_checkpoints_depend_on_their_contents_only(tmp_path):
    """The same state saved under two names (temp files of other names) gives the
    same bytes: torch.save would otherwise name the archive after the temp file."""
    state = {"weight": torch.arange(6.0).view(2, 3), "epoch": 3}
    OutputFolder(tmp_path).write_bytes("first.pth", torch_bytes(state))
    OutputFolder(tmp_path).write_bytes("second.pth", torch_bytes(state))
    assert (tmp_path / "first.pth").read_bytes() == (tmp_path / "second.pth").read_bytes()


def test_a_writer_refused_while_the_holder_writes_its_record_still_names_it(tmp_path):
    fd = os.open(tmp_path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, the record not yet written
    late = threading.Timer(0.2, os.pwrite, (fd, b"process 12345 on host (since now)\n", 0))
    late.start()
    try:
        with pytest.raises(UserError, match="being written by process 12345 on host"):
            Lock(tmp_path)
    finally:
        late.join()
        os.close(fd)


def test_the_lock_names_its_holder_with_an_iso_time_and_zone(tmp_path):
    holder = Lock(tmp_path)
    try:
        with pytest.raises(UserError) as refused:
            Lock(tmp_path)
        since = re.search(r"\(since (.*)\)", str(refused.value)).group(1)
        assert datetime.datetime.fromisoformat(since).utcoffset() is not None
    finally:
        holder.release()


def _lock_in_a_child(folder, shared):
    code = (
        "import sys; from cxr.run.outputs import Lock; from cxr.run.errors import UserError\n"
        f"try:\n    Lock({str(folder)!r}, shared_with_parent={shared}).release()\n"
        "except UserError as error:\n    sys.exit(str(error))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_command_its_lock_holder_started_may_write_and_no_other(tmp_path):
    holder = Lock(tmp_path)  # this process: the experiment
    try:
        assert _lock_in_a_child(tmp_path, shared=True).returncode == 0  # its report stage
        refused = _lock_in_a_child(tmp_path, shared=False)  # a command of its own
        assert f"being written by process {os.getpid()}" in refused.stderr
        assert (tmp_path / LOCK).is_file()  # the child left the holder's lock alone
    finally:
        holder.release()
    other = subprocess.Popen(
        [sys.executable, "-c", f"from cxr.run.outputs import Lock; Lock({str(tmp_path)!r}); "
         "print('held', flush=True); import time; time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"being written by process {other.pid}"):
            Lock(tmp_path, shared_with_parent=True)  # held, but not by this one's parent
    finally:
        other.kill()
        other.wait()


def test_replace_deletes_nothing_when_one_of_the_runs_files_leads_outside(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere.jsonl"
    make_folder(run)
    mark_as_ours(run, "test")
    for name in ("args.json", "checkpoint.pth"):
        (run / name).write_text("mine")
    elsewhere.write_text("the user's")
    (run / "log.jsonl").symlink_to(elsewhere)
    folder = OutputFolder(run)
    outputs = ("args.json", "log.jsonl", "checkpoint.pth", "final.pth")
    with pytest.raises(UserError, match="log.jsonl' would be written outside"):
        check_run_state(folder, outputs=outputs, final="final.pth", resume=False, replace=True)
    assert (run / "args.json").read_text() == (run / "checkpoint.pth").read_text() == "mine"
    assert elsewhere.read_text() == "the user's"
