"""A fused Triton cross-entropy at the 2L-byte floor (README, Numerics §7).

  triton_fused   one launch per forward: each row's loss, and the gradient of the mean loss
                 written into a buffer (online max/sum, then a second pass over the row while
                 it is still in L2); backward scales that buffer by grad_output in place.

The kernel lives in harness/cross_entropy/kernel.py and is imported on the first call, so
`import harness` never imports triton. In `fwd` mode (no_grad) only the first pass runs: the
forward reads the logits once and writes no gradient, so its time is a true forward's.
Registered for CUDA only; the tests run the same kernel on CPU tensors under TRITON_INTERPRET=1.
"""

from torch import Tensor

from harness.cross_entropy.variants import register


@register(
    "triton_fused",
    targets={"soft", "hard"},
    devices={"cuda"},
    description="Triton, one launch: per-row loss + gradient buffer, backward scales it",
)
def triton_fused(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C] fp16/bf16/fp32/fp64; targets: [B] int64 or [B, C] probabilities in the
    logits' dtype. Returns the mean loss, 0-dim, in the logits' dtype."""
    from harness.cross_entropy.kernel import cross_entropy

    return cross_entropy(logits, targets)
