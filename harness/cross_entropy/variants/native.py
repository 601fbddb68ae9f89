"""PyTorch's own cross-entropy, the baseline every other variant is judged against.

torch_cross_entropy     F.cross_entropy: class indices or probabilities; ignore_index,
                        label_smoothing, weight and reduction as F.cross_entropy takes them
torch_log_softmax_nll   F.nll_loss(F.log_softmax(z)): the two-kernel path, class indices only
"""

import torch.nn.functional as F
from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.options import Keywords, Unpack

# The options F.cross_entropy itself takes (z-loss and softcap are not among them).
TORCH_OPTIONS = {"ignore_index", "label_smoothing", "weight", "reduction"}


@register(
    "torch_cross_entropy",
    spatial=True,
    options=TORCH_OPTIONS,
    description="F.cross_entropy (fused log_softmax + nll / soft-target sum)",
)
def torch_cross_entropy(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    """logits: [B, C] or (N, C, d); targets: [B] int64 or [B, C] probabilities in the logits' dtype
    (class indices (N, d) with (N, C, d) logits); options: TORCH_OPTIONS, F.cross_entropy's own."""
    return F.cross_entropy(logits, targets, **options)


@register(
    "torch_log_softmax_nll", targets={"hard"}, description="F.nll_loss(F.log_softmax(z, -1)), two kernels"
)
def torch_log_softmax_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C]; targets: [B] int64 class indices."""
    return F.nll_loss(F.log_softmax(logits, dim=-1), targets)
