"""torch.compile of the materialised head: what Inductor makes of F.linear + F.cross_entropy.

  linear_compile   torch.compile(materialized), dynamic=False, compiled once per point

Compilation happens in the variant's `setup` (timed into `compile_time_s`, kept out of the
timings), from an empty Dynamo cache at every point, as the first family's torch_compile
(harness/cross_entropy/variants/compiled.py says why). Inductor keeps the matmul as an extern
call and fuses the softmax around it; whether it still materialises the logits is what the
peak memory column says.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register


def _compile(fn: Callable) -> Callable:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


@register(
    "linear_compile",
    targets={"hard"},
    setup=_compile,
    options={"ignore_index"},
    description="torch.compile(F.linear + F.cross_entropy), dynamic=False",
)
def linear_compile(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
    return F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=ignore_index)
