"""torchrun set-up and teardown, and every collective cxr uses.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) a
process joins the group: nccl on CUDA, gloo on CPU; launched plainly it runs
alone and every collective here is the identity. The process's rank and
world size are in its `DistInfo`.

`agree` makes every process reach the main process's decision;
`gather_to_main` and `inference_shard` make evaluation count every image
exactly once. The method's own collectives (gathered negatives, global
BatchNorm) are in `cxr.nn.collectives`.
"""

import contextlib
import os
import time
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cxr.run.errors import UserError, user_message


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def backend(self):
        """The process group's backend: nccl on CUDA, gloo on the CPU (None: one process)."""
        if self.world_size == 1:
            return None
        return "nccl" if self.device.type == "cuda" else "gloo"


# What torchrun sets in each process's environment, and what cxr needs of it.
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def resolve_launch(environ, device=None, cuda_devices=0):
    """This process's DistInfo from its environment (torchrun's variables, or none for
    one process), the --device flag ('cpu', 'cuda', 'cuda:N', None: CUDA if any) and
    the number of visible CUDA devices; one UserError for an environment torchrun
    would not make or a device that is not there. Under torchrun with CUDA each
    process takes GPU LOCAL_RANK; one process honours cuda:N."""
    present = [name for name in TORCHRUN_VARIABLES if name in environ]
    if present and len(present) < len(TORCHRUN_VARIABLES):
        missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
        raise UserError(
            f"{', '.join(present)} set but not {', '.join(missing)}: launch with torchrun, "
            "or unset them to run one process"
        )
    numbers = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        text = environ.get(name, "1" if name.endswith("WORLD_SIZE") else "0")
        try:
            numbers[name] = int(text)
        except ValueError:
            raise UserError(f"{name}={text!r} is not a whole number") from None
    world, rank = numbers["WORLD_SIZE"], numbers["RANK"]
    local_rank, local_world = numbers["LOCAL_RANK"], numbers["LOCAL_WORLD_SIZE"]
    if not (world >= 1 and 0 <= rank < world and 1 <= local_world <= world):
        raise UserError(
            f"RANK={rank}, WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local_world}: torchrun never "
            "sets these (0 <= RANK < WORLD_SIZE, 1 <= LOCAL_WORLD_SIZE <= WORLD_SIZE)"
        )
    if not 0 <= local_rank < local_world:
        raise UserError(f"LOCAL_RANK={local_rank} is not in [0, LOCAL_WORLD_SIZE={local_world})")
    use_cuda = cuda_devices > 0 if device is None else str(device).startswith("cuda")
    if not use_cuda:
        return DistInfo(rank, world, local_rank, torch.device("cpu"))
    if cuda_devices == 0:
        raise UserError(f"--device {device}: no CUDA device is visible; use --device cpu")
    chosen = torch.device(device) if world == 1 and ":" in str(device) else None
    index = local_rank if chosen is None else chosen.index
    if index >= cuda_devices:
        what = f"--device {device}" if chosen is not None else f"LOCAL_RANK={index}"
        advice = "" if chosen is not None else "; start at most that many processes per node"
        raise UserError(f"{what}, but {cuda_devices} CUDA device(s) are visible{advice}")
    return DistInfo(rank, world, local_rank, torch.device("cuda", index))


def loader_options(device, workers):
    """DataLoader options for batches bound for `device`: pinned memory and workers kept
    across epochs on CUDA only (on a CPU they would hold memory for no copy to overlap)."""
    cuda = torch.device(device).type == "cuda"
    return {"num_workers": workers, "pin_memory": cuda, "persistent_workers": cuda and workers > 0}


def init_distributed(device=None):
    """This process's DistInfo (`resolve_launch`); joins torchrun's process group when
    there are several processes."""
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dist_info = resolve_launch(os.environ, device, cuda_devices)
    if dist_info.device.type == "cuda":
        torch.cuda.set_device(dist_info.device)
    if dist_info.world_size > 1 and not dist.is_initialized():
        _join_process_group(dist_info.backend, dist_info.rank, dist_info.world_size)
    return dist_info


def _join_process_group(backend, rank, world_size):
    """init_process_group under a store prefix that this group of processes, and no
    earlier one, holds (`fresh_prefix`).

    torchrun's agents keep one store for the workers across restarts, where the
    keys an earlier attempt's ranks wrote (their addresses) are still present: a
    restarted rank can read a dead peer's address and fail to connect (seen with
    gloo here; pytorch/pytorch#167288 with nccl). The agents' restart counts
    cannot name the attempt: on several nodes an agent whose workers are
    restarted because another node's failed does not count it."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend=backend)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=dist.default_pg_timeout,
    )
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(fresh_prefix(store, rank, world_size), store),
        rank=rank,
        world_size=world_size,
    )


def fresh_prefix(store, rank, world_size, poll=0.05):
    """A key prefix every process of this group agrees on and no earlier group used,
    agreed through a store that may hold an earlier group's keys.

    Rank 0 names the group with a new random id (cxr/leader); every other rank
    acknowledges the id it reads, with a random id of its own, and waits until rank 0
    lists its own id under that group's start key: an earlier group's leader or start
    key, still in the store, never lists it, so a rank that read one reads again."""
    if rank == 0:
        group = uuid.uuid4().hex
        store.set("cxr/leader", group)
        members = [store.get(f"cxr/{group}/ack/{r}").decode() for r in range(1, world_size)]
        store.set(f"cxr/{group}/start", ",".join(members))
        return f"cxr/{group}"
    me = uuid.uuid4().hex
    acknowledged = None
    while True:
        group = store.get("cxr/leader").decode()
        if group != acknowledged:
            store.set(f"cxr/{group}/ack/{rank}", me)
            acknowledged = group
        start = f"cxr/{group}/start"
        if store.check([start]) and me in store.get(start).decode().split(","):
            return f"cxr/{group}"
        time.sleep(poll)


def teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device=None):
    """`with process_group(args.device) as dist_info:` what every script's main
    runs in: init_distributed on entry, teardown on exit, errors included."""
    try:
        yield init_distributed(device)
    finally:
        teardown()


def agree(dist_info, decide):
    """decide() on the main process, its result returned there (None elsewhere); a
    UserError it raises is raised on every process, so no rank waits for a peer
    that stopped (the other ranks wait here until the main process has decided)."""
    result, message = None, None
    if dist_info.is_main:
        try:
            result = decide()
        except UserError as error:
            message = str(error)
    if dist_info.world_size > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise UserError(message)
    return result


def computed_together(items, compute, dist_info):
    """compute(part) of this process's `inference_shard` of `items` (a tensor, a row per
    item), and every process's rows in the order of `items`, on every process: each item
    is computed once. A UserError raised on any process is raised on every process, so
    none waits for a peer that stopped."""
    part = [items[i] for i in inference_shard(len(items), dist_info)]
    rows, message = None, None
    try:
        rows = compute(part)
    except UserError as error:
        message = user_message(error)
    if dist_info.world_size > 1:
        gathered = [None] * dist_info.world_size
        dist.all_gather_object(gathered, (rows, message))
        message = next((m for _, m in gathered if m is not None), None)
        rows = None if message is not None else torch.cat([r for r, _ in gathered])
    if message is not None:
        raise UserError(message)
    return rows


def gather_to_main(items, dist_info):
    """Every rank's list, concatenated in rank order, on rank 0 (None elsewhere)."""
    if dist_info.world_size == 1:
        return items
    gathered = [None] * dist_info.world_size if dist_info.is_main else None
    dist.gather_object(items, gathered, dst=0)
    return [item for part in gathered for item in part] if dist_info.is_main else None


def inference_shard(num_items, dist_info):
    """Contiguous, exact shard of range(num_items) for this rank: no padding and no
    duplicates, shards differ in size by at most one (evaluation must count
    every image exactly once)."""
    rank, world = dist_info.rank, dist_info.world_size
    return range(num_items * rank // world, num_items * (rank + 1) // world)
