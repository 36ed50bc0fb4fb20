"""SimCLR's order of the SSL pool: one permutation per epoch, cut into equal shards,
as torch's DistributedSampler does with shuffle and drop_last."""

import torch

from cxr.nn.seeds import stream_seed


class ShuffleSampler(torch.utils.data.Sampler):
    """This rank's share of one epoch's permutation, for SimCLR.

    As torch's DistributedSampler with shuffle and drop_last: the permutation
    of the epoch's stream ("ssl-order", seed, epoch) is cut to a multiple of
    the world size and rank k takes positions k, k + W, ..., so every rank
    gets the same number of images and no image twice."""

    def __init__(self, num_items, *, num_replicas=1, rank=0, seed=0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_items, self.num_replicas = num_items, num_replicas
        self.rank, self.seed = rank, seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(
            stream_seed("ssl-order", seed=self.seed, epoch=self.epoch)
        )
        order = torch.randperm(self.num_items, generator=generator)
        return iter(order[: len(self) * self.num_replicas][self.rank :: self.num_replicas].tolist())

    def __len__(self):
        return self.num_items // self.num_replicas
