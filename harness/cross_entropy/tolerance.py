"""When a finite result is `inaccurate`: the one tolerance table, each number with its reason.

An error (loss: |l - ref| / |ref|; gradient: ||g - ref||_2 / ||ref||_2, both against float64 on
the same rounded inputs) is judged against what a careful implementation in this dtype makes on
this problem. The bound is the sum of the rounding errors such an implementation cannot avoid,
each carried to the result through the problem's own conditioning (README, Numerics §9):

    loss      K_LOSS * (u_d + u_c * loss_magnitude)
    gradient  K_GRAD * (u_d * (1 + grad_log_p) + u_c * grad_magnitude + grad_subnormal)

  u_d  unit roundoff of the dtype (2^-11 fp16, 2^-8 bf16, 2^-24 fp32, 2^-53 fp64). The loss
       and every gradient element are returned in it: one rounding each is unavoidable.
  u_c  unit roundoff of the precision a careful implementation computes in: fp32 for
       fp16/bf16/fp32 (what PyTorch's CUDA kernels accumulate in), fp64 for fp64. A bf16
       computation therefore never passes as an fp32 one.
  loss_magnitude = mean_b T_b (max_c |z_bc| + ln C + 2 sqrt(C)) / loss: lse_b held in u_c
       carries an absolute error of u_c |lse_b| <= u_c (max|z| + ln C), which every
       implementation that forms lse - z_y makes, and its running sum of C exponentials about
       sqrt(C) u_c more (reference.py `_summed`: CPU fp32 F.cross_entropy reaches 2.5 sqrt(C)).
       An absolute error becomes relative through the size of the loss: this term is large
       only where the loss is small next to the logits (a confident, correct prediction; a
       large common offset), never because the logits are spread out.
  grad_log_p = ||T p |log p| || / ||T p - t||: log p (or z - lse) rounded to u_d is an error
       of u_d |log p| in p, carried into the gradient; p |log p| <= 1/e keeps it bounded.
  grad_magnitude = ||T p (max|z| + ln C + 2 sqrt(C))|| / ||T p - t||: p = exp(z - lse) with
       lse rounded to u_c (and summed), as kernels that save lse for the backward compute it.
  grad_subnormal: where |g| is below the dtype's smallest normal (fp16 gradients at C ~ 32k
       are 1e-5 / B), its rounding costs up to half the subnormal spacing, not u_d |g|.

All of them come from the reference's own pass (harness/cross_entropy/reference.py). No term grows with the
spread of the logits: a loss divided by C instead of B is flagged at logit scale 1e6 as at 1.

K_LOSS = 4, K_GRAD = 2 (harness/loss/verdict.py, every family's): the headroom for what the bound
leaves out (a batch sum kept in the input dtype, a sum of C terms past 2 sqrt(C) u_c). Measured by
`python scripts/verdict_audit.py` (last line) over the verdict grid and the smoke and cpu sweeps'
points: the worst error of torch_cross_entropy, chunked, online and log1p_shifted is 2.10x the
loss bound (CPU fp16 F.cross_entropy, whose batch sum is kept in fp16) and 0.74x the gradient
bound, so K_LOSS leaves 1.9x and K_GRAD 2.7x to spare, while every bug of the catalogue is flagged
wherever its error is above max(8 u_d, 8 x the worst correct error)
(tests/cross_entropy/test_verdicts.py).
"""

from __future__ import annotations

from harness.cross_entropy.reference import Reference
from harness.dtypes import DTYPES, compute_roundoff, unit_roundoff
from harness.loss.verdict import K_GRAD, K_LOSS, Tolerance


def tolerance(ref: Reference, dtype_name: str) -> Tolerance:
    """The thresholds for one point: its reference's conditioning at this dtype."""
    u_d = unit_roundoff(DTYPES[dtype_name])
    u_c = compute_roundoff(dtype_name)
    return Tolerance(
        loss=K_LOSS * (u_d + u_c * ref.loss_magnitude),
        grad=K_GRAD * (u_d * (1.0 + ref.grad_log_p) + u_c * ref.grad_magnitude + ref.grad_subnormal),
    )
