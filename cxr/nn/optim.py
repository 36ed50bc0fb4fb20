"""Parameter groups, SGD/LARS, and the learning-rate schedule as data.

- Weight decay, and LARS adaptation, apply to weight matrices and kernels
  only; biases and normalization parameters (every parameter with ndim <= 1)
  get neither, as in SimCLR (Chen et al., 2020) and You et al. (2017).
- LARS follows SimCLR's implementation: g <- g + wd * w; for adapted
  parameters the step is scaled by trust = eta * ||w|| / ||g|| (1 when either
  norm is 0), eta = 0.001; then heavy-ball momentum on the scaled step.
- The schedule is computed once as an array indexed by global step: linear
  warmup to the base rate (from 0, or from a start factor as torchvision's
  detection recipe does), then half-cosine decay to `final_lr`, or
  steps down by gamma at milestones. Resuming at step k continues at index k.
"""

import math

import numpy as np
import torch


def parameter_groups(model, weight_decay):
    """Two groups: decayed and LARS-adapted weights, and exempt biases/norms."""
    decay, exempt = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else exempt).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": exempt, "weight_decay": 0.0, "lars": False},
    ]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum (SimCLR's variant)."""

    def __init__(self, params, *, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                trust_coefficient=trust_coefficient,
                lars=True,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    weight_norm, update_norm = torch.norm(p), torch.norm(update)
                    trust = torch.where(
                        (weight_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * weight_norm / update_norm,
                        torch.ones_like(weight_norm),
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buffer)
        return loss


def build_optimizer(name, model, *, lr, weight_decay, momentum=0.9):
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd or lars")


def warmup_factors(warmup_steps, start_factor=0.0):
    """(warmup_steps,) multipliers of the base rate: start_factor + (1 - start_factor)
    * (s + 1) / warmup_steps at step s, a line that reaches 1 at the last warmup step."""
    return start_factor + (1 - start_factor) * np.arange(1, warmup_steps + 1) / max(warmup_steps, 1)


def warmup_cosine_schedule(base_lr, total_steps, *, warmup_steps=0, final_lr=0.0, start_factor=0.0):
    """Learning rate of every global step: (total_steps,) float64 array.

    Step s < warmup_steps: base_lr * warmup_factors(...)[s]. After that,
    final_lr + (base_lr - final_lr) * (1 + cos(pi * t)) / 2 with t going
    from 0 at the first post-warmup step towards 1 at the end."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = base_lr * warmup_factors(warmup_steps, start_factor)
    decay_steps = total_steps - warmup_steps
    t = np.arange(decay_steps) / max(decay_steps, 1)
    cosine = final_lr + (base_lr - final_lr) * (1 + np.cos(math.pi * t)) / 2
    return np.concatenate([warmup, cosine])


def step_schedule(base_lr, total_steps, *, warmup_steps, milestones, gamma=0.1, start_factor=0.0):
    """Linear warmup over warmup_steps (`warmup_factors`), then base_lr * gamma **
    (milestones passed); milestones are global steps."""
    steps = np.arange(total_steps)
    rates = base_lr * gamma ** np.searchsorted(np.asarray(milestones), steps, side="right")
    warmup_steps = min(warmup_steps, total_steps)
    rates[:warmup_steps] *= warmup_factors(warmup_steps, start_factor)
    return rates
