"""PyTorch's own cross-entropy, the baseline every other variant is judged against.

torch_cross_entropy     F.cross_entropy: class indices or probabilities
torch_log_softmax_nll   F.nll_loss(F.log_softmax(z)): the two-kernel path, class indices only
"""

import torch.nn.functional as F
from torch import Tensor

from harness.cross_entropy.variants import register


@register("torch_cross_entropy", description="F.cross_entropy (fused log_softmax + nll / soft-target sum)")
def torch_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C]; targets: [B] int64 or [B, C] probabilities in the logits' dtype."""
    return F.cross_entropy(logits, targets)


@register(
    "torch_log_softmax_nll", targets={"hard"}, description="F.nll_loss(F.log_softmax(z, -1)), two kernels"
)
def torch_log_softmax_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C]; targets: [B] int64 class indices."""
    return F.nll_loss(F.log_softmax(logits, dim=-1), targets)
