"""BatchNorm over the union of every process's batch (global BN), on any backend.

SimCLR normalizes with statistics of the whole global batch (Chen et al.,
2020, sec. 3: "we aggregate BN mean and variance over all devices"): with
per-device BN a rank's positives share its batch statistics, a cue that lets
the contrastive task leak information instead of learning features, and two
processes with N images each do not train like one process with 2N.
torch's SyncBatchNorm runs only on CUDA; this module is the same
normalization written with two differentiable all-reduces, so it also runs
under gloo on CPUs.

In training mode, for input x of shape (N, C, ...) on every rank:
    mean_c = sum over all ranks of sum(x[:, c]) / n
    var_c  = sum over all ranks of sum((x[:, c] - mean_c)^2) / n
    y      = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c
n being the number of values per channel on all ranks together. The sums
are all-reduced with gradient (`cxr.distributed.all_reduce_sum_with_grad`),
so backward is exactly that of one BatchNorm over the concatenated batch. The
running averages follow nn.BatchNorm (momentum, or a cumulative average
when momentum is None; the unbiased variance n / (n - 1)). Statistics are
computed in float32 whatever the AMP setting. In eval mode it is
nn.BatchNorm. On one process the sums are the local ones, so it computes
what nn.BatchNorm computes.
"""

import torch
from torch import nn

from .distributed import all_reduce_sum_with_grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d/3d whose training statistics come from all processes."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(
                f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}"
            )

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        reduced = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.float()
        local_count = torch.tensor(
            [values.numel() // values.shape[1]], dtype=torch.float32, device=x.device
        )
        count = all_reduce_sum_with_grad(local_count)
        mean = all_reduce_sum_with_grad(values.sum(reduced)) / count
        centered = values - mean.view(shape)
        var = all_reduce_sum_with_grad(centered.pow(2).sum(reduced)) / count
        self._update_running_statistics(mean.detach(), var.detach(), count)
        y = centered * torch.rsqrt(var + self.eps).view(shape)
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
