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
# which a finite result is `inaccurate`:
#
#     tolerance = K[dtype] * u[dtype]  +  2 * spread * u[compute]
#
# First term, in units of the dtype's unit roundoff u. Two roundings are unavoidable for any
# implementation that returns its result in the input dtype (the loss and every gradient
# element are stored in it), so 2u is the floor; the rest is headroom for the reductions:
#   - fp16/bf16, K = 16: F.cross_entropy's errors stay within a few u on points with
#     C <= 8192 (tests/test_accuracy.py pins them below 10u; soft-target gradients come
#     closest, since p - t cancels), so 16u leaves room while still catching a formula wrong
#     by 1% in fp16 (16u = 7.8e-3) or 6% in bf16 (6.3e-2). Past C ~ 16k an fp16 gradient
#     (p - t) / B falls below fp16's smallest normal (6.1e-5), where no stored value keeps a
#     relative precision of u: every implementation is then `inaccurate` in fp16, truthfully,
#     and err_vs_native tells the algorithm's share apart (README, Findings).
#   - fp32, K = 64: sums over C = 2^17 classes add ~log2(C) u; 64u = 3.8e-6 is the order of
#     torch.testing's fp32 rtol (1.3e-6 = 22u).
#   - fp64, K = 64: the variant and the reference are both fp64 computations.
# Second term: the conditioning of softmax in its inputs. Blanchard, Higham & Higham (IMA J.
# Numer. Anal. 41(4), 2021) bound the shifted softmax's error by (n + 2 + 2(x_max - x_min)) u;
# the n term is the worst case of a recursive sum, far from what blocked sums reach, but the
# spread term is real: z - max carries an absolute error of u * |z - max| in whatever precision
# it is computed. `spread` is the largest max - min of a row; u[compute] is fp32's for
# fp16/bf16/fp32 (the precision good implementations compute in) and fp64's for fp64, where it
# also covers the reference's own error. It matters only at large logit scales (fp32, spread
# 640: 7.6e-5) and never lets a bf16 computation pass as fp32 (fp16/bf16 keep their K u).
TOLERANCE_IN_U: dict[str, float] = {"fp16": 16.0, "bf16": 16.0, "fp32": 64.0, "fp64": 64.0}


def compute_roundoff(dtype_name: str) -> float:
    """u of the precision a careful implementation computes in for this input dtype."""
    return unit_roundoff(torch.float64 if dtype_name == "fp64" else torch.float32)


def tolerance(dtype_name: str, spread: float = 0.0) -> float:
    """Relative-error threshold for `inaccurate` at this dtype and logit spread (see above)."""
    return TOLERANCE_IN_U[dtype_name] * unit_roundoff(DTYPES[dtype_name]) + 2.0 * spread * compute_roundoff(dtype_name)


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
        log_min_subnormal=math.log(min_sub) - math.log(2.0),   # min_sub / 2 is 0.0 in fp64
    )
