"""torch.compile of the materialised head: what Inductor makes of F.linear + F.cross_entropy.

  linear_compile   torch.compile(materialized), dynamic=False, compiled once per point, with
                   materialized's options (F.cross_entropy's and the bias)

Compilation happens in the variant's `setup` (timed into `compile_time_s`, kept out of the
timings), from an empty Dynamo cache at every point, as the first family's torch_compile
(harness/cross_entropy/variants/compiled.py says why). Inductor keeps the matmul as an extern
call and fuses the softmax around it; whether it still materialises the logits is what the
peak memory column says.
"""

from __future__ import annotations

from typing import Callable

import torch

from harness.linear_cross_entropy.variants import register
from harness.linear_cross_entropy.variants.native import CROSS_ENTROPY, materialized


def _compile(fn: Callable) -> Callable:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


# The function compiled is `materialized` itself, so the two can never drift apart.
register(
    "linear_compile",
    targets={"hard"},
    setup=_compile,
    options=CROSS_ENTROPY,
    description="torch.compile(F.linear + F.cross_entropy), dynamic=False",
)(materialized)
