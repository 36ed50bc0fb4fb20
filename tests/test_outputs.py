"""Outputs are never half-written: a failed write leaves the previous file or
folder as it was and no temp file behind."""

import resource
import signal

import pytest
import torch

from cxr.engine import atomic_torch_save
from cxr.errors import UserError
from cxr.outputs import atomic_write_json, atomic_write_text, staged_directory


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
    path = tmp_path / "checkpoint.pth"
    atomic_torch_save(path, {"epoch": 1, "weights": torch.ones(10)})
    file_size_limit(100_000)
    with pytest.raises(RuntimeError):
        atomic_torch_save(path, {"epoch": 2, "weights": torch.zeros(1_000_000)})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["weights"], torch.ones(10))


def test_text_write_that_runs_out_of_space_keeps_the_previous_file(tmp_path, file_size_limit):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"map": 0.5})
    file_size_limit(100_000)
    with pytest.raises(OSError):
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
    assert [p.name for p in final.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
