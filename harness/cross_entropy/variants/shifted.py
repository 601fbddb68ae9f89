"""The log-sum-exp Blanchard, Higham & Higham recommend (IMA J. Numer. Anal. 41(4), 2021).

  log1p_shifted   lse = a + log1p(sum_{i != k} exp(z_i - a)), a = z_k = max_c z_c;
                  exp in the logits' dtype, the sum and log1p in fp32 (fp64 for fp64),
                  gradient by autograd

Writing the k-th term (exactly 1) outside the sum and adding it with log1p keeps the small
sum's digits that log(1 + s) would round away; their error bound for this form is about
|n + ...| u relative to the result, independent of how large the logits are (README, Numerics §3).
The sum of C - 1 terms each <= 1 reaches C - 1, so it is accumulated in fp32: stored in fp16
it overflows for C >= 65,520 even when every logit is equal (as CPU fp16 log_softmax does,
README Findings). The loss is assembled as T * log1p(s) - sum_c t_c (z_c - a), never forming
a + log1p(s) - z_c from large terms, so the max cancels exactly instead of in rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.cross_entropy.variants import register


@register(
    "log1p_shifted",
    description="a + log1p(sum_{i!=k} exp(z_i - a)) with a = max (Blanchard-Higham-Higham); "
    "exp in the input dtype, sum and log1p in fp32",
)
def log1p_shifted(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C] fp16/bf16/fp32/fp64; targets: [B] int64 or [B, C] probabilities."""
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    # The shift a is a constant to autograd: were it differentiated, the max's gradient would be
    # -sum of every other class's gradient, summed in the input dtype, a cancellation that cost
    # 30-60% of the gradient norm in bf16 at C = 128k (overflow sweep). The k-th term's own
    # gradient comes from expm1(z_k - a): 0 in value (z_k - a = 0 exactly), slope 1 at z_k.
    a, k = logits.detach().max(dim=1, keepdim=True)  # [B, 1]
    y = logits - a  # <= 0, exact or one rounding: exp cannot overflow
    e = torch.exp(y).scatter(1, k, 0.0)  # drop the k-th term, exactly exp(0) = 1
    s = e.sum(dim=1, dtype=acc) + torch.expm1(y.gather(1, k))[:, 0].to(acc)
    log1p_s = torch.log1p(s)  # [B] = lse - a
    if targets.dtype == torch.int64:
        y_t = y.gather(1, targets[:, None])[:, 0].to(acc)  # z_y - a
        return (log1p_s - y_t).mean().to(logits.dtype)
    t = targets.to(acc)
    total = t.sum(dim=1)  # T_b (1 up to rounding)
    loss = (total * log1p_s - (t * y.to(acc)).sum(dim=1)).sum() / logits.shape[0]
    return loss.to(logits.dtype)
