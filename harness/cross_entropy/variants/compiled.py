"""torch.compile of PyTorch's cross-entropy: the compiler's fusion against the eager kernels.

  torch_compile   torch.compile(F.cross_entropy, dynamic=False), compiled once per point, with
                  the options F.cross_entropy takes

Compilation happens in the variant's `setup` (the runner times that first call into
`compile_time_s` and keeps it out of the timings). Inductor keeps fused intermediates in fp32,
so compiled fp16/bf16 is usually closer to fp64 than eager (README, Numerics §4): treat the two as
different variants, not as the same numbers at different speeds.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.cross_entropy.variants import LossFn, register
from harness.cross_entropy.variants.native import TORCH_OPTIONS


def _compile(fn: LossFn) -> LossFn:
    # Dynamo caches compiled graphs on the function's code object and stops recompiling after
    # `recompile_limit` shapes/dtypes, silently running eager from then on. A sweep visits many
    # shapes, so each point starts from an empty cache: every point is really compiled and its
    # compile time is its own.
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


@register(
    "torch_compile",
    setup=_compile,
    options=TORCH_OPTIONS,
    description="torch.compile(F.cross_entropy), dynamic=False; Inductor keeps fp32 intermediates, "
    "so fp16/bf16 results are usually closer to fp64 than eager (README, Numerics §4)",
)
def torch_compile(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """logits: [B, C] fp16/bf16/fp32/fp64; targets: [B] int64 or [B, C] probabilities."""
    return F.cross_entropy(
        logits,
        targets,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
