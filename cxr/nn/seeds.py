"""Seeds of the random streams: one hash of a tuple that names the stream.

Every stream of a run (model weights, sampler order and rounding, per-item
augmentation, torch's global generators, SimCLR's views, the SSL order, the
held-out split) is seeded by `stream_seed(purpose, seed=..., epoch=...,
rank=..., item=...)`: a BLAKE2b hash of the fixed-length tuple (purpose,
seed, epoch, rank, item). Two streams share a seed only if all five agree,
so a training seed never replays another seed's next epoch (as `seed +
epoch` does), and no tuple is a prefix or a zero-padded copy of another (as
with numpy's SeedSequence, which pads and splits its integers).
"""

import hashlib

PURPOSES = (
    "weights",  # model initialization
    "global",  # torch's global generators for one epoch of one rank
    "views",  # SimCLR's views of one epoch of one rank
    "ssl-order",  # the SSL sampler's permutation of one epoch
    "repeat-order",  # the repeat-factor sampler's rounding and permutation of one epoch
    "augment",  # the detection augmentation of one item (epoch, position)
    "held-out",  # the held-out share of the labeled images (train_det --val-fraction)
    "negatives",  # the normal images added as negatives (train_det --negatives)
    "test-split",  # the test split of a prepared folder (prepare --seed)
    "ssl-split",  # the permutation the SSL pool and the labeled set are cut from (--split-seed)
    "bootstrap",  # the test-image resamples of an interval
    "chance",  # the chance baseline's random boxes
    "pictures",  # the test images evaluate.py --mode visualize draws
    "tie-orders",  # the orders of tied detections whose AP is averaged
    "synthetic-plan",  # the synthetic generator's images, lesions and readers of a split
    "synthetic-pixels",  # the pixels of one synthetic image
    "synthetic-rows",  # the order of the synthetic train.csv's rows
)


def stream_seed(purpose: str, *, seed: int, epoch: int = 0, rank: int = 0, item: int = 0) -> int:
    """A seed in [0, 2**63) for the stream (purpose, seed, epoch, rank, item).

    purpose: one of PURPOSES; the integers may be any size and sign."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown stream {purpose!r}; expected one of {', '.join(PURPOSES)}")
    key = repr((purpose, int(seed), int(epoch), int(rank), int(item))).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
