"""Dtype names and their IEEE facts, derived from `torch.finfo`, never typed in.

The tolerance that turns an error into a verdict is in harness/cross_entropy/tolerance.py.
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


def compute_roundoff(dtype_name: str) -> float:
    """u of the precision a careful implementation computes in for this input dtype: fp32 for
    fp16, bf16 and fp32 (every family's tolerance allows for it), fp64 for fp64."""
    return unit_roundoff(torch.float64 if dtype_name == "fp64" else torch.float32)


@dataclass(frozen=True)
class DtypeEdges:
    """Where exp() and the dtype's range end, derived from torch.finfo alone."""

    max: float  # largest finite value
    tiny: float  # smallest normal
    min_subnormal: float  # smallest positive subnormal
    u: float  # unit roundoff
    log_max: float  # ln of max
    log_overflow_edge: float  # exp(x) rounds to inf from here: ln(max + ulp(max)/2)
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
        # max + ulp(max)/2 = 2^(emax+1) (1 - eps/4) is the first value round-to-nearest sends
        # to inf; in logs, since for fp64 the edge itself is past the range.
        log_overflow_edge=math.log(fi.max) + math.log1p(-fi.eps / 4) - math.log1p(-fi.eps / 2),
        # Round-to-nearest sends anything below half the smallest subnormal to zero.
        log_min_subnormal=math.log(min_sub) - math.log(2.0),  # min_sub / 2 is 0.0 in fp64
    )
