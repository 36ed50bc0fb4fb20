"""Several nodes, on one machine: two torchrun agents (one process each) meeting by c10d
rendezvous on 127.0.0.1, as README's multi-node command runs them, train SimCLR and the
detector to the weights of one node with two processes; a worker killed on one node is
restarted with the whole group and the run ends as if uninterrupted."""

import json
import os
import signal
import time

import pytest
import torch
from conftest import children, free_port, prepared_synthetic, ssl_args, tiny_detector_args, torchrun


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("nodes"), num_images=60, seed=23)


def two_nodes(script, arguments, tmp_path, name, max_restarts=0):
    """Both agents started; returns them (Popen) with their logs."""
    endpoint = f"127.0.0.1:{free_port()}"
    return [
        (
            torchrun(
                script,
                *arguments,
                nproc=1,
                max_restarts=max_restarts,
                node=(rank, 2, endpoint),
                log=tmp_path / f"{name}-node{rank}.log",
            ),
            tmp_path / f"{name}-node{rank}.log",
        )
        for rank in (0, 1)
    ]


def finish(agents):
    for agent, log in agents:
        assert agent.wait(timeout=600) == 0, log.read_text()[-3000:]


def same_weights(first, second):
    a, b = (torch.load(path, weights_only=True) for path in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_nodes_train_simclr_like_one_node_and_survive_a_killed_worker(data_dir, tmp_path):
    settings = ["--epochs", "3", "--batch-size", "4", "--auto-resume"]
    torchrun("train_ssl.py", *ssl_args(data_dir, tmp_path, "one-node", *settings))
    finish(
        two_nodes(
            "train_ssl.py", ssl_args(data_dir, tmp_path, "two-nodes", *settings), tmp_path, "ssl"
        )
    )
    backbone = "pretrain/pretrained-backbone.pth"
    same_weights(tmp_path / "one-node" / backbone, tmp_path / "two-nodes" / backbone)
    assert (
        json.loads((tmp_path / "two-nodes" / "pretrain" / "args.json").read_text())["world_size"]
        == 2
    )

    run = tmp_path / "restarted" / "pretrain"
    arguments = ssl_args(data_dir, tmp_path, "restarted", *settings)
    agents = two_nodes("train_ssl.py", arguments, tmp_path, "restarted", max_restarts=1)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pth").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(children(agents[1][0].pid)[0], signal.SIGKILL)  # the second node's worker
    finish(agents)
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").open()]
    assert events.count("resume") == 1 and events[-1] == "done"
    same_weights(tmp_path / "one-node" / backbone, run / "pretrained-backbone.pth")


@pytest.mark.slow
def test_two_nodes_fine_tune_the_detector_like_one_node(data_dir, tmp_path):
    arguments = [*tiny_detector_args(data_dir, tmp_path, "one-node"), "--batch-size", "2"]
    torchrun("train_det.py", *arguments)
    arguments = [*tiny_detector_args(data_dir, tmp_path, "two-nodes"), "--batch-size", "2"]
    finish(two_nodes("train_det.py", arguments, tmp_path, "det"))
    model = "fasterrcnn_final.pth"
    same_weights(tmp_path / "one-node" / model, tmp_path / "two-nodes" / model)
