"""Dtype names, their IEEE facts and the tolerance table used to call a result `inaccurate`.

Everything numeric here is derived from `torch.finfo`, never typed in, except the tolerance
multipliers, each of which says where it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp64": torch.float64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of one round-to-nearest (2^-11 for fp16)."""
    return torch.finfo(dtype).eps / 2


# Relative error (loss and gradient, each against float64 on the same rounded inputs) beyond
# which a finite result is `inaccurate`, in units of u. Two roundings are unavoidable for any
# implementation that returns its result in the input dtype (the loss and every gradient
# element are stored in it), so 2u is the floor. The rest is the headroom a correct,
# max-shifted implementation needs for its reductions:
#   - fp16/bf16: PyTorch's CPU kernels keep some intermediates (log-probabilities, the batch
#     sum) in the input dtype, each adding up to u; measured medians of F.cross_entropy on the
#     `cpu` sweep stay below 4u (README, "Findings"), so 16u leaves 4x headroom while still
#     catching a formula that is wrong by a few percent in bf16 (16u = 6.3e-2) or 1% in fp16.
#   - fp32: errors grow with log2(C) for the pairwise sums used by PyTorch (C = 2^17 gives
#     ~17u); 64u = 3.8e-6 is the same order as torch.testing's fp32 rtol (1.3e-6 ~ 22u).
#   - fp64: the reference itself is fp64, so the comparison is of two fp64 evaluations;
#     64u = 7.1e-15 lets different summation orders agree.
TOLERANCE_IN_U: dict[str, float] = {"fp16": 16.0, "bf16": 16.0, "fp32": 64.0, "fp64": 64.0}


def tolerance(dtype_name: str) -> float:
    """Relative-error threshold for `inaccurate` at this dtype (see TOLERANCE_IN_U)."""
    return TOLERANCE_IN_U[dtype_name] * unit_roundoff(DTYPES[dtype_name])


@dataclass(frozen=True)
class DtypeEdges:
    """Where exp() and the dtype's range end, derived from torch.finfo alone."""

    max: float              # largest finite value
    tiny: float             # smallest normal
    min_subnormal: float    # smallest positive subnormal
    u: float                # unit roundoff
    log_max: float          # exp(x) overflows for x above this (ln of max)
    log_min_subnormal: float  # exp(x) rounds to 0 below ln(min_subnormal / 2)


def edges(dtype: torch.dtype) -> DtypeEdges:
    fi = torch.finfo(dtype)
    # The smallest subnormal is tiny * 2^-(mantissa bits); finfo has `smallest_normal` only.
    mantissa_bits = round(-math.log2(fi.eps))
    min_sub = fi.tiny * 2.0 ** (-mantissa_bits)
    return DtypeEdges(
        max=fi.max,
        tiny=fi.tiny,
        min_subnormal=min_sub,
        u=fi.eps / 2,
        log_max=math.log(fi.max),
        # Round-to-nearest sends anything below half the smallest subnormal to zero.
        log_min_subnormal=math.log(min_sub / 2),
    )
