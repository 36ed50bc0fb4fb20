"""BatchNorm over the union of every process's batch (global BN), on any backend.

SimCLR normalizes with the statistics of the whole global batch (Chen et al.,
2020, sec. 3: "we aggregate BN mean and variance over all devices"): with
per-device BN a rank's positives share its batch statistics, a cue the
contrastive task can use instead of learning features, and N processes do
not train like one process with all their images. torch's SyncBatchNorm runs
only on CUDA; this is the same normalization written with one differentiable
all-gather per layer (`cxr.nn.collectives.gather_with_grad`), so it runs on
gloo too. Each process contributes its count, mean and sum of squared
deviations per channel; they combine exactly into the global mean and
(biased) variance (Chan, Golub & LeVeque, 1979; `combine_statistics`), whose
backward is that of one BatchNorm over the concatenated batch. Each mean is
kept as two float32 parts and combined in float64, so inputs far from zero
(mean 1e4, std 1e-2) lose no precision to the offset. Running averages follow
nn.BatchNorm (momentum or cumulative; unbiased variance). In eval mode this
is nn.BatchNorm.
"""

import torch
from torch import nn

from cxr.nn.collectives import gather_with_grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d/3d whose training statistics come from all processes."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(
                f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}"
            )

    def forward(self, x):
        """x: (N, C, ...) on every process; returns the normalized x, same shape."""
        if not self.training:
            return super().forward(x)
        reduced = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.float()
        count = torch.full((1,), values.numel() / values.shape[1], device=x.device)
        # This process's mean in two float32 parts, mean_hi + mean_lo: x - mean_hi is exact
        # near the mean (Sterbenz), so a large offset costs no precision.
        mean_hi = values.detach().mean(reduced)  # (C,)
        mean_lo = (values - mean_hi.view(shape)).mean(reduced)  # (C,)
        centered = values - mean_hi.view(shape) - mean_lo.view(shape)
        squares = centered.pow(2).sum(reduced)  # (C,) sum of squared deviations
        local = torch.cat([count, mean_hi, mean_lo, squares]).double().unsqueeze(0)
        stats = gather_with_grad(local)  # (W, 1 + 3C), float64
        global_mean, var, total = combine_statistics(
            counts=stats[:, 0],
            means=stats[:, 1 : 1 + self.num_features]
            + stats[:, 1 + self.num_features : 1 + 2 * self.num_features],
            sums=stats[:, 1 + 2 * self.num_features :],
        )
        self._update_running_statistics(global_mean.detach(), var.detach(), total.detach())
        # The global mean in two float32 parts again, for an exact subtraction.
        global_hi = global_mean.detach().float()
        global_lo = (global_mean - global_hi.double()).float()
        inverse_std = torch.rsqrt(var + self.eps).float()
        y = (values - global_hi.view(shape) - global_lo.view(shape)) * inverse_std.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_statistics(self, mean, var, count):
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def combine_statistics(*, counts, means, sums):
    """(mean, biased variance, count) of the union of W batches from each one's count
    (W,), per-channel mean (W, C) and sum of squared deviations from it (W, C): the
    batches' own spread plus that of their means about the whole's, each weighted by
    its count (Chan, Golub & LeVeque, 1979)."""
    counts = counts.view(-1, 1)
    total = counts.sum()
    mean = (counts * means).sum(0) / total
    var = (sums + counts * (means - mean).pow(2)).sum(0) / total
    return mean, var, total


def convert_to_global_batchnorm(module):
    """`module` with every BatchNorm1d/2d/3d replaced by a GlobalBatchNorm holding
    the same parameters, buffers and mode (FrozenBatchNorm2d is left alone)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        converted = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        converted.load_state_dict(module.state_dict())
        if module.affine:
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
        converted.train(module.training)
        return converted.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, convert_to_global_batchnorm(child))
    return module
