"""When a finite vocabulary-parallel result is `inaccurate`: the first family's bound, unsharded.

Sharding moves no rounding that a careful unsharded implementation does not make: each rank's
max and sum of exponentials are exact or summed in the compute precision, and the all-reduce
adds tp - 1 more roundings to a sum of V terms, inside the 2 sqrt(V) u_c that the sum of V
exponentials already carries. So the bound is the first family's (harness/cross_entropy/tolerance.py
explains each term), with its conditioning from this family's reference:

    loss      K_LOSS * (u_d + u_c * loss_magnitude)
    gradient  K_GRAD * (u_d * (1 + grad_log_p) + u_c * grad_magnitude + subnormal)

  loss_magnitude  the reduced loss's relative change when every row's lse is off by
                  u_c (max|z'| + ln V + 2 sqrt V), over u_c;
  grad_magnitude  the same error carried into p = exp(z' - lse), norm-wise over ||grad||;
  grad_log_p      log p rounded to the dtype;
  subnormal       a gradient entry below the dtype's smallest normal is rounded to half the
                  subnormal spacing, not u_d |g|: sqrt(N V) of them at most, over ||grad||.

K_LOSS = 4, K_GRAD = 2 (harness/loss/verdict.py, every family's). Every correct variant of
this family sits below
0.3 of them over `+sweep=tp_cpu` (docs/vocab_parallel.md has the figures and the command), and
each bug of tests/vocab_parallel_bugs.py is flagged wherever its error is material.
"""

from __future__ import annotations

import math

import torch

from harness.dtypes import DTYPES, compute_roundoff, unit_roundoff
from harness.loss.verdict import K_GRAD, K_LOSS, Tolerance

from .reference import Reference


def tolerance(ref: Reference, dtype_name: str) -> Tolerance:
    dtype = DTYPES[dtype_name]
    u_d, u_c = unit_roundoff(dtype), compute_roundoff(dtype_name)
    n, v = ref.grad.shape
    # half the spacing of the dtype's subnormals, at every entry at most (fp16: 2^-25)
    spacing = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps / 2
    subnormal = math.sqrt(n * v) * spacing / max(ref.grad_norm, 1e-300)
    return Tolerance(
        loss=K_LOSS * (u_d + u_c * ref.loss_magnitude),
        grad=K_GRAD * (u_d * (1.0 + ref.grad_log_p) + u_c * ref.grad_magnitude + subnormal),
    )
