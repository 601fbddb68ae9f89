"""A fused Triton cross-entropy at the 2L-byte floor (README, Numerics §7).

  triton_fused   one launch per forward (two for the CPU form of the split path): each row's
                 loss, and the gradient of the reduced loss written into a buffer by the path
                 the launch table picks (stream, onepass or split: harness/kernel/); backward scales
                 that buffer by grad_output in place.

With hard targets the variant always receives ignore_index (-100 by default, as F.cross_entropy
does), so its kernel counts the kept rows (one atomic per row, a few small launches for the
mean's divisor) even where no row is ignored; that cost was not part of the H200 launch scan.

Loss options (harness/loss/options.py): ignore_index, label_smoothing, z_loss, softcap
and reduction, fused in the kernel's arithmetic on every path (constexpr flags: with each at its
default the plain kernel runs). Class weights are not declared (points with weights are
`unsupported` rows).

The kernel lives in harness/kernel/ (shared with the linear family's fused_linear) and is
imported on the first call, so `import harness` never imports triton. In `fwd` mode (no_grad)
only the first pass runs: the forward reads the logits once and writes no gradient, so its time
is a true forward's.
Registered for CUDA only; the tests run the same kernel on CPU tensors under TRITON_INTERPRET=1.
"""

from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.options import Keywords, Unpack

OPTIONS = {"ignore_index", "label_smoothing", "z_loss", "softcap", "reduction"}


@register(
    "triton_fused",
    targets={"soft", "hard"},
    devices={"cuda"},
    options=OPTIONS,
    description="Triton, one launch: per-row loss + gradient buffer, backward scales it",
)
def triton_fused(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    """logits: [B, C] fp16/bf16/fp32/fp64; targets: [B] int64 or [B, C] probabilities in the
    logits' dtype. Returns the loss in the logits' dtype: 0-dim (mean, sum) or [B] (none);
    options as F.cross_entropy's, plus z_loss and softcap (harness/loss/options.py)."""
    from harness.kernel import cross_entropy

    options.setdefault("ignore_index", -100)  # F.cross_entropy's default (the kernel's: no row ignored)
    return cross_entropy(logits, targets, **options)
