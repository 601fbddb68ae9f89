"""Every loss option as eager training code writes it around the materialised head.

  materialized_composed   F.linear (+ bias), logits upcast to fp32, softcap * tanh(z / softcap)
                          (Gemma-2), F.cross_entropy with ignore_index, label_smoothing, the class
                          weights and reduction, plus z_loss * logsumexp(z)^2 over the rows that
                          are not ignored (PaLM), divided like Liger's lse_square_scale

F.cross_entropy has no z-loss and no soft-capping, so a training loop that wants them composes
them around it, as the first family's torch_composed does on given logits; this is that
composition (harness/loss/composed.py) on the logits of the head, measured like any other
variant. With no option on it
is materialized_fp32 call for call, so the default set of such points leaves it out
(`plain_equivalent`). The cap and the z-loss are in fp32, after the upcast: capping bf16 logits
in bf16 (as some model code does before its loss upcasts) would be another variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register
from harness.loss.composed import composed_loss
from harness.loss.options import Keywords, LossOptions, Unpack


@register(
    "materialized_composed",
    targets={"hard"},
    options={"ignore_index", "label_smoothing", "z_loss", "softcap", "class_weight", "reduction", "bias"},
    plain_equivalent="materialized_fp32",
    description="F.linear, .float(), tanh softcap, F.cross_entropy(options), + z_loss * lse^2, eager",
)
def materialized_composed(
    hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]
) -> Tensor:
    logits = F.linear(hidden, weight, options.get("bias"))
    # .float() (fp64 stays fp64), passed unnamed so that the cap frees it, as a model's
    # `z = softcap * tanh(z / softcap)` does; a head's logits have no masked class
    upcast = torch.promote_types(logits.dtype, torch.float32)
    return composed_loss(logits.to(upcast), targets, LossOptions.of_keywords(options), masked=False)
