"""Every loss option as eager training code writes it, from PyTorch's own pieces.

  torch_composed   softcap * tanh(z / softcap) (Gemma-2; a masked -inf logit stays -inf), then
                   F.cross_entropy with ignore_index,
                   label_smoothing, weight and reduction, plus z_loss * logsumexp(z)^2 over the
                   rows that are not ignored (PaLM), divided like Liger's lse_square_scale

F.cross_entropy has no z-loss and no soft-capping, so a training loop that wants them composes
them around it; this variant is that composition (harness/loss/composed.py, which the other
families' composed variants share) on the given logits, in their dtype, measured like any
other. At a point with no option on it is F.cross_entropy itself, so the default set of such
points leaves it out (`plain_equivalent`); the loss-options report reads torch_cross_entropy's
rows as its "off".
"""

from dataclasses import replace

from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.composed import composed_loss
from harness.loss.options import Keywords, LossOptions, Unpack


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
def torch_composed(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    """logits: [B, C] or (N, C, d); targets: [B] (or (N, d)) int64 or [B, C] probabilities in the
    logits' dtype. Given num_items_in_batch (gradient accumulation, as transformers passes it):
    the summed loss over it."""
    opts = LossOptions.of_keywords(options)
    items = options.get("num_items_in_batch")
    if items is not None:
        return composed_loss(logits, targets, replace(opts, reduction="sum")) / items
    return composed_loss(logits, targets, opts)
