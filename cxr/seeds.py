"""Seeds derived from several numbers, for randomness that must differ per
rank, epoch or item and still be reproducible.

`derive_seed(seed, epoch, rank)` hashes its parts with numpy's SeedSequence
(the hashing numpy recommends for spawning independent streams), so distinct
tuples give unrelated 63-bit seeds: no arithmetic like seed * K + rank, whose
streams collide once a part outgrows K.
"""

import numpy as np


def derive_seed(*parts):
    """A seed in [0, 2**63) that depends on every non-negative integer in parts."""
    state = np.random.SeedSequence([int(part) for part in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
