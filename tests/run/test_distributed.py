"""The collectives' single-process behaviour, the exact inference shards, and work shared
by two real processes (gloo)."""

import functools
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import free_port, spawn_two

from cxr.nn.collectives import all_reduce_mean
from cxr.run.cli import default_workers
from cxr.run.distributed import (
    DistInfo,
    agree,
    computed_together,
    fresh_prefix,
    gather_to_main,
    inference_shard,
    loader_options,
    resolve_launch,
)
from cxr.run.errors import UserError


@pytest.mark.parametrize("items, world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_inference_shards_are_exact(items, world):
    shards = [
        list(inference_shard(items, DistInfo(rank, world, 0, torch.device("cpu"))))
        for rank in range(world)
    ]
    assert [i for shard in shards for i in shard] == list(range(items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_one_process_collectives_are_the_identity():
    alone = DistInfo(0, 1, 0, torch.device("cpu"))
    assert gather_to_main([3, 1], alone) == [3, 1]
    values = torch.tensor([1.5, -2.0])
    assert torch.equal(all_reduce_mean(values), values)


def torchrun_environment(rank=1, world=4, local_rank=1, local_world=2, **changes):
    environ = {
        "WORLD_SIZE": str(world),
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    environ.update(changes)
    return {k: v for k, v in environ.items() if v is not None}


def test_one_process_without_torchrun_on_the_cpu_or_the_first_gpu():
    alone = resolve_launch({}, None, cuda_devices=0)
    assert (alone.rank, alone.world_size, alone.device, alone.backend) == (
        0,
        1,
        torch.device("cpu"),
        None,
    )
    assert resolve_launch({}, None, cuda_devices=2).device == torch.device("cuda", 0)
    assert resolve_launch({}, "cuda:1", cuda_devices=2).device == torch.device("cuda", 1)
    assert resolve_launch({}, "cpu", cuda_devices=2).device == torch.device("cpu")


def test_under_torchrun_each_process_takes_gpu_local_rank_with_nccl_else_gloo():
    on_gpus = resolve_launch(torchrun_environment(), None, cuda_devices=2)
    assert on_gpus.device == torch.device("cuda", 1) and on_gpus.backend == "nccl"
    assert (on_gpus.rank, on_gpus.world_size, on_gpus.local_rank) == (1, 4, 1)
    assert resolve_launch(torchrun_environment(), "cuda:0", cuda_devices=2).device.index == 1
    on_cpus = resolve_launch(torchrun_environment(), "cpu", cuda_devices=2)
    assert on_cpus.device == torch.device("cpu") and on_cpus.backend == "gloo"
    assert resolve_launch(torchrun_environment(), None, cuda_devices=0).backend == "gloo"


@pytest.mark.parametrize(
    "environ, device, cuda_devices, message",
    [
        (torchrun_environment(local_rank=2, local_world=4), None, 2, "LOCAL_RANK=2, but 2 CUDA"),
        ({}, "cuda:3", 2, "--device cuda:3, but 2 CUDA"),
        ({}, "cuda", 0, "--device cuda: no CUDA device is visible"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, None, 0, "WORLD_SIZE, RANK set but not LOCAL_RANK"),
        (torchrun_environment(MASTER_ADDR=None), None, 0, "but not MASTER_ADDR"),
        (torchrun_environment(local_world=0, local_rank=0), None, 0, "LOCAL_WORLD_SIZE=0"),
        (torchrun_environment(rank=4), None, 0, "RANK=4, WORLD_SIZE=4"),
        (torchrun_environment(RANK="one"), None, 0, "RANK='one' is not a whole number"),
        (torchrun_environment(local_rank=2), None, 0, "LOCAL_RANK=2 is not in"),
    ],
)
def test_an_environment_torchrun_would_not_make_is_one_error(
    environ, device, cuda_devices, message
):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_launch(environ, device, cuda_devices)


def test_pinned_memory_and_persistent_workers_on_cuda_only():
    assert loader_options(torch.device("cpu"), 4) == {
        "num_workers": 4,
        "pin_memory": False,
        "persistent_workers": False,
    }
    assert loader_options(torch.device("cuda", 1), 4)["pin_memory"] is True
    assert loader_options("cuda", 4)["persistent_workers"] is True
    assert loader_options("cuda", 0)["persistent_workers"] is False


def test_restarted_ranks_agree_on_a_prefix_no_earlier_group_used():
    """A store holding an earlier group's leader, acknowledgements and start key (as
    torchrun's agents keep it across restarts): the new ranks, the others started
    before rank 0, all end with one prefix, and not the earlier group's."""
    store = dist.HashStore()
    store.set("cxr/leader", "old")
    store.set("cxr/old/ack/1", "someone")
    store.set("cxr/old/start", "someone,else")
    prefixes = {}

    def join(rank):
        prefixes[rank] = fresh_prefix(store, rank, 3, poll=0.01)

    threads = {r: threading.Thread(target=join, args=(r,), daemon=True) for r in (0, 1, 2)}
    for rank in (1, 2, 0):
        threads[rank].start()
        time.sleep(0.2 if rank == 2 else 0)  # the others read the old leader first
    for thread in threads.values():
        thread.join(timeout=10)
    assert len(prefixes) == 3, "a rank never agreed"
    assert len(set(prefixes.values())) == 1 and prefixes[0] != "cxr/old"


@pytest.mark.parametrize("local_world_size", ["0", "abc", "-2", ""])
def test_a_parser_builds_whatever_local_world_size_says_and_the_launch_check_names_it(
    monkeypatch, local_world_size
):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert 0 <= default_workers() <= 4  # the flags' default: built before any check runs
    environ = {**torchrun_environment(), "LOCAL_WORLD_SIZE": local_world_size}
    with pytest.raises(UserError, match="LOCAL_WORLD_SIZE"):
        resolve_launch(environ)


def _squares(part, *, out, rank, bad):
    """Squares of `part`, recorded in `out`; the part holding `bad` fails."""
    (out / f"part.{rank}").write_text(json.dumps(part))
    if bad in part:
        raise UserError(f"cannot read item {bad}")
    return torch.tensor(part, dtype=torch.float64).reshape(-1, 1) ** 2


def _together_worker(rank, port, folder, cases):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dist_info = DistInfo(rank, 2, 0, torch.device("cpu"))
    try:
        for case, (items, bad) in enumerate(cases):
            out = Path(folder) / f"{case}"
            out.mkdir(exist_ok=True)
            compute = functools.partial(_squares, out=out, rank=rank, bad=bad)
            try:
                result = computed_together(items, compute, dist_info).tolist()
            except UserError as error:
                result = str(error)
            (out / f"result.{rank}").write_text(json.dumps(result))
        decided = [agree(dist_info, lambda: 7)]  # the main process decides, alone
        try:
            agree(dist_info, functools.partial(_refuse, "no"))
        except UserError as error:
            decided.append(str(error))
        (Path(folder) / f"agreed.{rank}").write_text(json.dumps(decided))
    finally:
        dist.destroy_process_group()


def _refuse(message):
    raise UserError(message)


def test_work_computed_together_is_each_item_once_all_of_it_everywhere_or_one_error(tmp_path):
    """Two real processes; also `agree`: the main process decides, its error reaches both."""
    cases = [
        (list(range(10, 17)), None),  # parts of 3 and 4
        ([10], None),  # rank 0's part is empty
        (list(range(7)), 5),  # 5 is in rank 1's part; rank 0's succeeds
    ]
    spawn_two(_together_worker, free_port(), str(tmp_path), cases)
    for case, (items, bad) in enumerate(cases):
        out = tmp_path / f"{case}"
        parts = [json.loads((out / f"part.{rank}").read_text()) for rank in (0, 1)]
        assert sorted(parts[0] + parts[1]) == items and not set(parts[0]) & set(parts[1])
        expected = [[float(i * i)] for i in items] if bad is None else f"cannot read item {bad}"
        for rank in (0, 1):
            assert json.loads((out / f"result.{rank}").read_text()) == expected, (case, rank)
    assert 5 in parts[1]
    agreed = [json.loads((tmp_path / f"agreed.{rank}").read_text()) for rank in (0, 1)]
    assert agreed == [[7, "no"], [None, "no"]]
    alone = DistInfo(0, 1, 0, torch.device("cpu"))
    computed = computed_together([3, 1], lambda part: torch.tensor(part).reshape(-1, 1), alone)
    assert computed.flatten().tolist() == [3, 1]
