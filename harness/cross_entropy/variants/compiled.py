"""torch.compile of PyTorch's cross-entropy: the compiler's fusion against the eager kernels.

  torch_compile   torch.compile(F.cross_entropy, dynamic=False), compiled once per point, with
                  the options F.cross_entropy takes

Compilation happens in the variant's `setup` (the runner times that first call into
`compile_time_s` and keeps it out of the timings). Inductor keeps fused intermediates in fp32,
so compiled fp16/bf16 is usually closer to fp64 than eager (README, Numerics §4): treat the two as
different variants, not as the same numbers at different speeds.
"""

import torch

from harness.cross_entropy.variants import LossFn, register
from harness.cross_entropy.variants.native import TORCH_OPTIONS, torch_cross_entropy


def _compile(fn: LossFn) -> LossFn:
    # Dynamo caches compiled graphs on the function's code object and stops recompiling after
    # `recompile_limit` shapes/dtypes, silently running eager from then on. A sweep visits many
    # shapes, so each point starts from an empty cache: every point is really compiled and its
    # compile time is its own.
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


# The function compiled is `torch_cross_entropy` itself, so the two can never drift apart.
register(
    "torch_compile",
    setup=_compile,
    options=TORCH_OPTIONS,
    description="torch.compile(F.cross_entropy), dynamic=False; Inductor keeps fp32 intermediates, "
    "so fp16/bf16 results are usually closer to fp64 than eager (README, Numerics §4)",
)(torch_cross_entropy)
