"""The loss with every option as eager training code composes it from PyTorch's own pieces.

F.cross_entropy has no z-loss and no soft-capping, so a training loop that wants them composes
them around it:

    z' = softcap * tanh(z / softcap)         (Gemma-2; a masked class stays masked: `capped`)
    loss = F.cross_entropy(z', targets, ignore_index, label_smoothing, weight, reduction)
         + z_loss * logsumexp(z')^2          over the rows not ignored (PaLM), divided as
                                             Liger's lse_square_scale: by the kept rows under mean

Each family measures this composition on its own logits (cross_entropy's `torch_composed` on
the given ones, the linear family's `materialized_composed` on the head's, upcast to fp32, the
vocabulary-parallel `all_gather` on the gathered ones): one function, so the recipe cannot
drift between them. The float64 references (each family's reference.py) compute the same loss
by their own route.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.loss.options import LossOptions, capped


def composed_loss(z: Tensor, targets: Tensor, options: LossOptions, masked: bool = True) -> Tensor:
    """The loss of logits z ([B, C] or F.cross_entropy's (N, C, d)) and targets (class indices,
    or probabilities in z's dtype), in z's dtype: 0-dim (mean, sum) or per row (none). `masked`:
    z may hold masked classes (-inf), kept masked under the cap (`capped`, at the cost of a mask
    and one more [B, C] while the cap is made); False where no class can be masked (a family
    with no mask option): the cap as model code writes it."""
    cap = options.softcap
    if cap is not None:
        z = capped(z, cap) if masked else cap * torch.tanh(z / cap)
    loss = F.cross_entropy(z, targets, **options.torch_keywords(z.dtype))
    if options.z_loss == 0:
        return loss
    if targets.dtype == torch.int64:
        kept = targets != options.ignore_index
    else:  # probability targets have no ignored row
        kept = torch.ones_like(z[:, 0], dtype=torch.bool)
    rows = options.z_loss * torch.logsumexp(z, dim=1).square() * kept
    if options.reduction == "none":
        return loss + rows
    if options.reduction == "sum":
        return loss + rows.sum()
    return loss + rows.sum() / kept.sum()
