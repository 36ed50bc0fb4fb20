"""Repeat-factor sampling (LVIS, Gupta et al. 2019) over distributed shards.

With f(c) the share of training images holding class c, r(c) = max(1,
sqrt(t / f(c))) and an image repeats r = the max over its classes (1 without
boxes), as in detectron2's RepeatFactorTrainingSampler. Each epoch every rank
builds the same list from the epoch's own stream (`cxr.nn.seeds`): image i
floor(r_i) times plus once with probability frac(r_i) ('stochastic',
detectron2) or ceil(r_i) times ('ceil', mmdetection), shuffled, padded to
whole batches on every rank; rank k takes positions k, k + W, ... as torch's
DistributedSampler does. Each position also carries its item's augmentation
seed, so ranks never share draws and an item is augmented alike on 1 or 8
processes.
"""

import math

import torch

from cxr.nn.seeds import stream_seed


def repeat_factors(image_labels, threshold):
    """Per image, max(1, sqrt(threshold / f(c))) over its classes (1 if none).

    image_labels: one iterable of class ids per training image."""
    image_labels = [set(labels) for labels in image_labels]
    if not image_labels:
        return []
    counts = {}
    for labels in image_labels:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    class_factor = {
        c: max(1.0, math.sqrt(threshold / (n / len(image_labels)))) for c, n in counts.items()
    }
    return [max((class_factor[c] for c in labels), default=1.0) for labels in image_labels]


class RepeatFactorSampler(torch.utils.data.Sampler):
    """Indices of one epoch's oversampled list, this rank's shard of it.

    Args:
        factors: (N,) repeat factor of each training image (`repeat_factors`).
        num_replicas, rank: the processes and this one's place among them.
        seed: the training seed; each epoch draws from its own stream.
        rounding: 'stochastic' (detectron2) or 'ceil' (mmdetection).
        batch_size: the list is padded (by repeating its head) to whole batches
            on every rank: a training batch of one image breaks BatchNorm.
    Yields:
        (index, augmentation seed) of each item of this rank's shard.
    """

    def __init__(
        self,
        factors,
        *,
        num_replicas=1,
        rank=0,
        seed=0,
        shuffle=True,
        rounding="stochastic",
        batch_size=1,
    ):
        if rounding not in ("stochastic", "ceil"):
            raise ValueError(f"rounding must be 'stochastic' or 'ceil', got {rounding!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.factors = torch.as_tensor(factors, dtype=torch.float64)
        if (self.factors < 1).any():
            raise ValueError("repeat factors must be >= 1")
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.shuffle, self.rounding, self.batch_size = shuffle, rounding, batch_size
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self._epoch_list = self.epoch_indices(epoch)

    def epoch_indices(self, epoch):
        """The whole epoch's list (every rank computes the same), padded."""
        generator = torch.Generator().manual_seed(
            stream_seed("repeat-order", seed=self.seed, epoch=epoch)
        )
        whole = torch.floor(self.factors)
        if self.rounding == "ceil":
            repeats = torch.ceil(self.factors)
        else:
            repeats = whole + (
                torch.rand(len(self.factors), generator=generator, dtype=torch.float64)
                < self.factors - whole
            )
        indices = torch.repeat_interleave(torch.arange(len(self.factors)), repeats.long())
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator)]
        padding = -len(indices) % (self.num_replicas * self.batch_size)
        if padding:
            indices = torch.cat(
                [indices, indices.repeat(math.ceil(padding / max(len(indices), 1)))[:padding]]
            )
        return indices

    def __iter__(self):
        """(index, augmentation seed) of each item of this rank's shard."""
        positions = range(self.rank, len(self._epoch_list), self.num_replicas)
        return iter(
            [
                (
                    int(self._epoch_list[p]),
                    stream_seed("augment", seed=self.seed, epoch=self.epoch, item=p),
                )
                for p in positions
            ]
        )

    def shard_length(self, epoch):
        """Items this rank gets in `epoch` (the length varies with stochastic rounding)."""
        return len(self.epoch_indices(epoch)) // self.num_replicas

    def __len__(self):
        return len(self._epoch_list) // self.num_replicas
