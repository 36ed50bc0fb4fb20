"""SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of
Visual Representations"): a ResNet trunk, a projection head, and NT-Xent.

The model returns projections z; the trunk (torchvision ResNet without fc)
is what is kept and transferred to the detector. NT-Xent follows the paper's
eq. (1): for each of the 2N views, -log softmax of its positive's cosine
similarity / temperature against the other 2N - 1 views (itself excluded),
averaged over all 2N anchors. Under DDP the candidates are the views of ALL
ranks (`gather_with_grad`), while each rank scores its own anchors, so the
mean over ranks equals the single-process loss on the union of the batches.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cxr.nn.collectives import gather_with_grad


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature=0.5, *, rank=0) -> torch.Tensor:
    """NT-Xent of two views' projections (Chen et al., 2020, eq. 1), averaged over
    the 2N anchors of all processes.

    Args:
        z1, z2: (n, d) projections of this process's images, row i of each being
            the two views of image i.
        temperature: divides the cosine similarities.
        rank: this process's position in the process group: under DDP the
            candidates are the views of every process, gathered in rank order.
    Returns:
        A float32 scalar, whatever the AMP setting: under bf16 autocast the
        similarity matmul would round the logits to 1/16 at temperature 0.1.
    """
    with torch.autocast(z1.device.type, enabled=False):
        return _nt_xent_float32(z1.float(), z2.float(), temperature, rank)


def _nt_xent_float32(z1, z2, temperature, rank):
    n = z1.shape[0]
    local1, local2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)  # (n, d)
    all1, all2 = gather_with_grad(local1), gather_with_grad(local2)  # (N, d), ranks in order
    total = all1.shape[0]
    anchors = torch.cat([local1, local2])  # (2n, d)
    logits = anchors @ torch.cat([all1, all2]).T / temperature  # (2n, 2N)
    mine = torch.arange(n, device=z1.device) + rank * n  # this process's rows of all1
    self_column = torch.cat([mine, mine + total])
    positive_column = torch.cat([mine + total, mine])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=z1.device), self_column] = True
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), positive_column)


class ProjectionHead(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Linear (2048 -> 2048 -> 128 for ResNet-50)."""

    def __init__(self, in_dim, hidden_dim=None, out_dim=128):
        hidden_dim = hidden_dim or in_dim
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SimCLR(nn.Module):
    """A torchvision ResNet trunk (fc replaced by identity) and a projection head."""

    def __init__(self, trunk, feature_dim, projection_dim=128):
        super().__init__()
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.head = ProjectionHead(feature_dim, feature_dim, projection_dim)

    def forward(self, images):
        return self.head(self.trunk(images))

    def trunk_state_dict(self):
        """The trunk's weights under torchvision ResNet keys (its fc is the identity,
        which has none)."""
        return {k: v.detach().clone() for k, v in self.trunk.state_dict().items()}
