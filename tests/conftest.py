"""Shared test helpers: tiny prepared data, tiny command lines, torchrun."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torchvision

from cxr.data.preparation import prepare
from cxr.data.synthetic_xrays import generate
from cxr.run.cli import flags


def prepared_synthetic(root, num_images, seed, size=64):
    """A synthetic dataset under root/vin, prepared with --keep-normal into root/data."""
    generate(
        root / "vin",
        num_images=num_images,
        size=size,
        seed=seed,
        test_images=0,
        log=lambda *_: None,
    )
    prepare(
        root / "vin" / "train.csv",
        root / "vin" / "train",
        root / "data",
        keep_normal=True,
        log=lambda *_: None,
    )
    return root / "data"


def tiny_detector_args(data_dir, out, name, **changes):
    """train_det.py flags for a random-init detector that trains in seconds on a CPU."""
    settings = dict(
        data_dir=data_dir,
        output_dir=out,
        experiment_name=name,
        init="random",
        arch="resnet18",
        image_size=64,
        batch_size=4,
        epochs=2,
        workers=0,
        warmup_iters=2,
        device="cpu",
        print_freq=100,
        eval_batch_size=8,
        roi_batch_size=32,
    )
    return flags(**{**settings, **changes})


def ssl_args(data_dir, out, name, *extra):
    """train_ssl.py flags for a SimCLR run that trains in seconds on a CPU."""
    return [
        *flags(
            data_dir=data_dir,
            output_dir=out,
            experiment_name=name,
            arch="resnet18",
            image_size=32,
            batch_size=8,
            epochs=2,
            warmup_epochs=1,
            workers=0,
            include_normal=True,
            device="cpu",
            print_freq=100,
        ),
        *extra,
    ]


def free_port():
    """A TCP port free on 127.0.0.1 now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_two(worker, *args, timeout=120):
    """Run worker(rank, *args) in two real processes; fail, not hang, if one waits for
    ever."""
    context = mp.start_processes(worker, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a process waited for a peer that had stopped")


REPO = Path(__file__).resolve().parents[1]


def torchrun(script, *arguments, nproc=2, max_restarts=0, log=None, timeout=300, node=None):
    """`script` (train_ssl.py, ...) under torchrun with `nproc` gloo processes, run from
    the checkout. node: (its rank, number of nodes, rendezvous endpoint) for one agent
    of a multi-node group (README's command: c10d rendezvous), else --standalone.
    With `log`: started in the background, its output going to that file (returns the
    Popen); else run to its end, which must succeed (returns the CompletedProcess)."""
    if node is None:
        launch = ["--standalone"]
    else:
        rank, nodes, endpoint = node
        launch = [f"--nnodes={nodes}", f"--node_rank={rank}", "--rdzv_backend=c10d"]
        launch.append(f"--rdzv_endpoint={endpoint}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        f"--nproc_per_node={nproc}",
        f"--max-restarts={max_restarts}",
        script,
        *map(str, arguments),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if log is not None:
        with open(log, "w") as output:
            return subprocess.Popen(
                command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env=env
            )
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def children(pid):
    """The process ids of `pid`'s children (Linux)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def trunk_file(folder, seed=3):
    """(path, state) of a random torchvision resnet18 trunk saved in `folder`."""
    torch.manual_seed(seed)
    state = {
        k: v
        for k, v in torchvision.models.resnet18().state_dict().items()
        if not k.startswith("fc.")
    }
    path = folder / "trunk.pth"
    torch.save(state, path)
    return path, state
