"""The float64 reference: loss and gradient of cross-entropy, by the stable formula.

Semantics follow F.cross_entropy exactly, including probability rows that do not sum to 1
(T_b = sum_c t_bc after rounding to fp16 is 1 +- a few u):

    loss = (1/B) sum_b (T_b * lse_b - sum_c t_bc z_bc)       lse_b = log sum_c exp(z_bc)
    dloss/dz_bc = (T_b * softmax(z)_bc - t_bc) / B

Computed once per point, in closed form (no autograd graph), shared by all variants and modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass
class Reference:
    loss: float    # float64 mean loss
    grad: Tensor   # [B, C] float64 gradient of the mean loss
    spread: float  # largest row spread max_c z - min_c z: the conditioning term of the tolerance

    @cached_property
    def grad_norm(self) -> float:
        """||grad||_2, computed once per point and shared by every row's gradient error."""
        return torch.linalg.vector_norm(self.grad).item()


def reference(logits: Tensor, targets: Tensor, kind: str) -> Reference:
    """logits: [B, C] any float dtype (used as float64); targets: [B] int64 or [B, C] probs."""
    z = logits.to(torch.float64)
    b = z.shape[0]
    lse = torch.logsumexp(z, dim=1)                 # max-shifted inside: exact to ~u64
    grad = torch.exp(z - lse[:, None])              # softmax, [B, C]
    if kind == "hard":
        rows = torch.arange(b, device=z.device)
        loss = (lse - z[rows, targets]).mean()
        grad[rows, targets] -= 1.0
    else:
        t = targets.to(torch.float64)
        total = t.sum(dim=1)                        # T_b
        loss = (total * lse - (t * z).sum(dim=1)).mean()
        grad.mul_(total[:, None]).sub_(t)
    grad.div_(b)
    spread = (z.amax(dim=1) - z.amin(dim=1)).max().item()
    return Reference(loss=loss.item(), grad=grad, spread=spread)
