"""Every loss option as eager training code writes it around the materialised head.

  materialized_composed   F.linear (+ bias), logits upcast to fp32, softcap * tanh(z / softcap)
                          (Gemma-2), F.cross_entropy with ignore_index, label_smoothing, the class
                          weights and reduction, plus z_loss * logsumexp(z)^2 over the rows that
                          are not ignored (PaLM), divided like Liger's lse_square_scale

F.cross_entropy has no z-loss and no soft-capping, so a training loop that wants them composes
them around it, as the first family's torch_composed does on given logits; this is that
composition on the logits of the head, measured like any other variant. With no option on it
is materialized_fp32 call for call, so the default set of such points leaves it out
(`plain_equivalent`). The cap and the z-loss are in fp32, after the upcast: capping bf16 logits
in bf16 (as some model code does before its loss upcasts) would be another variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register


@register(
    "materialized_composed",
    targets={"hard"},
    options={"ignore_index", "label_smoothing", "z_loss", "softcap", "class_weight", "reduction", "bias"},
    plain_equivalent="materialized_fp32",
    description="F.linear, .float(), tanh softcap, F.cross_entropy(options), + z_loss * lse^2, eager",
)
def materialized_composed(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_weight: Tensor | None = None,
    reduction: str = "mean",
    bias: Tensor | None = None,
) -> Tensor:
    logits = F.linear(hidden, weight, bias)
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp64 stays fp64
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(
        z,
        targets,
        weight=None if class_weight is None else class_weight.to(z.dtype),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    if z_loss == 0:
        return loss
    kept = targets != ignore_index
    rows = z_loss * torch.logsumexp(z, dim=1).square() * kept
    if reduction == "none":
        return loss + rows
    if reduction == "sum":
        return loss + rows.sum()
    return loss + rows.sum() / kept.sum()
