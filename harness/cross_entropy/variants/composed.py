"""Every loss option as eager training code writes it, from PyTorch's own pieces.

  torch_composed   softcap * tanh(z / softcap) (Gemma-2; a masked -inf logit stays -inf), then
                   F.cross_entropy with ignore_index,
                   label_smoothing, weight and reduction, plus z_loss * logsumexp(z)^2 over the
                   rows that are not ignored (PaLM), divided like Liger's lse_square_scale

F.cross_entropy has no z-loss and no soft-capping, so a training loop that wants them composes
them around it; this variant is that composition, measured like any other. At a point with no
option on it is F.cross_entropy itself, so the default set of such points leaves it out
(`plain_equivalent`); the loss-options report reads torch_cross_entropy's rows as its "off".
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.options import capped


@register(
    "torch_composed",
    spatial=True,
    options={
        "ignore_index",
        "label_smoothing",
        "z_loss",
        "softcap",
        "weight",
        "reduction",
        "num_items_in_batch",
    },
    plain_equivalent="torch_cross_entropy",
    description="eager PyTorch composition: tanh softcap, F.cross_entropy(options), + z_loss * lse^2",
)
def torch_composed(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | None = None,
) -> Tensor:
    """logits: [B, C] or (N, C, d); targets: [B] (or (N, d)) int64 or [B, C] probabilities in the
    logits' dtype. Given num_items_in_batch (gradient accumulation, as transformers passes it):
    the summed loss over it."""
    if num_items_in_batch is not None:
        kw = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
        return torch_composed(logits, targets, **kw, weight=weight, reduction="sum") / num_items_in_batch
    z = capped(logits, softcap)  # a masked class stays masked under the cap
    loss = F.cross_entropy(
        z,
        targets,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    if z_loss == 0:
        return loss
    kept = (
        (targets != ignore_index)
        if targets.dtype == torch.int64
        else torch.ones_like(z[:, 0], dtype=torch.bool)
    )
    rows = z_loss * torch.logsumexp(z, dim=1).square() * kept
    if reduction == "none":
        return loss + rows
    if reduction == "sum":
        return loss + rows.sum()
    return loss + rows.sum() / kept.sum()
