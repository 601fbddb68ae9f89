"""The float64 reference: loss and gradient of cross-entropy, exact to float64, in closed form.

Semantics follow F.cross_entropy, including probability rows that do not sum to 1 (T_b = sum_c
t_bc after rounding to fp16 is 1 +- a few u):

    loss = (1/B) sum_b sum_c t_bc (lse_b - z_bc)          lse_b = log sum_c exp(z_bc)
    dloss/dz_bc = (T_b p_bc - t_bc) / B                    p = softmax(z)

Every quantity is formed so that no subtraction of nearly equal numbers is left (README,
Numerics §8). With k = argmax_c z_bc, a = z_bk and s = sum_{c != k} exp(z_c - a):

  - lse - z_c = (a - z_c) + log1p(s): a sum of two non-negative terms. The textbook lse - z_y
    cancels when the target holds the row maximum by a wide margin (B=2, C=2, logit scale
    100: 18% off in float64); log1p(s) keeps every digit of the tiny loss.
  - s is summed with the maximum's own exp(0) = 1 left out, not as (sum of all) - 1.
  - z_c - a is exact when the logits came from fp16/bf16/fp32 (a float64 holds the difference
    of two such numbers exactly). For float64 logits its rounding error is carried along
    (TwoSum) and exp(z - a) is corrected by it, so a logit scale of 1e4 costs no digits.
  - The gradient T p_c - t_c is rewritten as p_c (T - t_c) - t_c (1 - p_c), with 1 - p_k = s / S
    at the maximum (S = 1 + s) and T - t_m summed without t_m at the largest target m. Hard
    targets: the target's entry is -(sum of the other probabilities), not p_y - 1. What is left
    is the cancellation the data itself holds (targets close to the prediction), not the
    formula's.

Checked against mpmath at 60 digits on adversarial points (tests/test_reference.py): relative
error below 1e-13 in the loss and the gradient (norm-wise) wherever the true value is a normal
float64. Computed once per point, shared by every variant and mode, in blocks of rows so that its
float64 temporaries stay small next to the [B, C] gradient it returns.

Alongside the values it records the conditioning the tolerance needs (harness/cross_entropy/tolerance.py): how
large the logits are next to the loss, and how strongly the gradient amplifies a relative error
in the softmax. They fall out of the same pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

# Rows per block: about 2^22 float64 elements (32 MiB) per temporary, whatever C is.
_BLOCK_ELEMENTS = 1 << 22


@dataclass
class Reference:
    loss: float  # float64 mean loss; NaN when no finite reference exists
    grad: Tensor  # [B, C] float64 gradient of the mean loss (empty when not finite)
    # Conditioning, for the tolerance (harness/cross_entropy/tolerance.py, README Numerics §9):
    loss_magnitude: float  # mean_b T_b (max_c |z_bc| + ln C) / |loss|: an absolute error of u*|lse|
    #                        per row, as any implementation that forms lse makes, over the loss
    grad_log_p: float  # ||T p |log p| || / ||T p - t||: a relative error of u |log p| in each
    #                        probability (log p or z - lse rounded), carried into the gradient
    grad_magnitude: float  # ||T p (max|z| + ln C)|| / ||T p - t||: the same for an error of
    #                        u (max|z| + ln C) in each probability (lse rounded, then exp(z - lse))
    grad_subnormal: float  # ||rounding of g below the output dtype's smallest normal|| / ||g||
    missing: str = ""  # why there is no finite reference (non-finite logits after rounding)

    @property
    def finite(self) -> bool:
        return not self.missing

    @cached_property
    def grad_norm(self) -> float:
        """||grad||_2, computed once per point and shared by every row's gradient error."""
        return torch.linalg.vector_norm(self.grad).item()


def _shifted_exp(z: Tensor, a: Tensor, exact: bool) -> Tensor:
    """exp(z - a) [R, C] float64 for a = row max [R, 1], with the rounding of z - a corrected:
    d = fl(z - a) and e = (z - a) - d exactly (Knuth's TwoSum), so exp(z - a) = exp(d)(1 + e)
    to within e^2/2. `exact`: the logits came from fp16/bf16/fp32, so e is 0."""
    d = z - a
    if exact:  # logits from a narrower dtype: e = 0
        return torch.exp(d)
    bb = d - z
    e = (z - (d - bb)) + (-a - bb)
    e.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # d = -inf: exp(d) is 0 whatever e is
    return torch.exp(d).mul_(e.add_(1.0))


def _no_reference(logits: Tensor, why: str) -> Reference:
    nan = math.nan
    return Reference(
        loss=nan,
        grad=torch.empty(0, dtype=torch.float64, device=logits.device),
        loss_magnitude=nan,
        grad_log_p=nan,
        grad_magnitude=nan,
        grad_subnormal=nan,
        missing=why,
    )


def reference(logits: Tensor, targets: Tensor, kind: str) -> Reference:
    """logits: [B, C] any float dtype (read as float64, the values as stored); targets: [B] int64
    class indices (kind "hard") or [B, C] non-negative probabilities (kind "soft")."""
    bad = int((~torch.isfinite(logits)).sum().item())
    if bad:
        return _no_reference(
            logits,
            f"no float64 reference: {bad} logits are not finite in "
            f"{str(logits.dtype).removeprefix('torch.')}",
        )
    b, c = logits.shape
    f64 = torch.float64
    grad = torch.empty((b, c), dtype=f64, device=logits.device)
    row_loss = torch.empty(b, dtype=f64, device=logits.device)
    magnitude = torch.empty(b, dtype=f64, device=logits.device)  # T_b (max|z_b| + ln C)
    log_p_sq = torch.zeros((), dtype=f64, device=logits.device)
    magnitude_sq = torch.zeros((), dtype=f64, device=logits.device)
    finfo = torch.finfo(logits.dtype)
    subnormal_sq = torch.zeros((), dtype=f64, device=logits.device)
    step = max(1, _BLOCK_ELEMENTS // c)
    for lo in range(0, b, step):
        hi = min(lo + step, b)
        z = logits[lo:hi].to(f64)
        k = z.argmax(dim=1, keepdim=True)  # [R, 1]
        a = z.gather(1, k)
        e = _shifted_exp(z, a, logits.dtype != f64)  # exp(z - a), 1 at k
        e.scatter_(1, k, 0.0)
        s = e.sum(dim=1, keepdim=True)  # sum over c != k: no 1 + tiny - 1
        e.scatter_(1, k, 1.0)
        big = s.add(1.0)  # S = sum_c exp(z_c - a)
        log_s = torch.log1p(s)  # lse - a
        p = e.div_(big)  # softmax, [R, C]
        not_max = s / big  # 1 - p_k
        if kind == "hard":
            y = targets[lo:hi, None]
            total = torch.ones_like(s)
            row_loss[lo:hi] = (a - z.gather(1, y) + log_s)[:, 0]
            # 1 - p_y: the others' share; at the maximum, s / S (no 1 - (1 - tiny)).
            rest = torch.where(y == k, not_max, 1.0 - p.gather(1, y))
            g = p.clone().scatter_(1, y, -rest)
        else:
            t = targets[lo:hi].to(f64)
            total = t.sum(dim=1, keepdim=True)
            row_loss[lo:hi] = (t * (a - z + log_s)).sum(dim=1)
            m = t.argmax(dim=1, keepdim=True)
            t_rest = total - t  # T - t_c, exact enough off the largest t
            t_rest.scatter_(1, m, t.scatter(1, m, 0.0).sum(dim=1, keepdim=True))
            p_rest = torch.where(torch.arange(c, device=z.device) == k, not_max, 1.0 - p)
            g = p * t_rest - t * p_rest
        grad[lo:hi] = g
        mag = z.abs().amax(dim=1, keepdim=True) + math.log(c)
        magnitude[lo:hi] = (total * mag)[:, 0]
        # How a relative error in each probability reaches the gradient: u |log p| where log p
        # (or z - lse) is rounded, u (max|z| + ln C) where lse is. p |log p| <= 1/e keeps the
        # first bounded; the second grows with the logits, and is weighed by the gradient below.
        tp = total * p
        log_p_sq += (tp * torch.log(p).nan_to_num_(neginf=0.0)).square().sum()  # p = 0: nothing
        magnitude_sq += (tp * mag).square().sum()
        # The output dtype cannot hold |g / B| below its smallest normal to relative precision:
        # rounding there costs up to half the subnormal spacing (or |g| itself, if it rounds to 0).
        gb = g.abs() / b
        floor = torch.where(gb < finfo.tiny, gb.clamp(max=finfo.smallest_normal * finfo.eps / 2), 0.0)
        subnormal_sq += floor.square().sum()
    grad.div_(b)
    loss = (row_loss.sum() / b).item()
    g_norm = torch.linalg.vector_norm(grad).item() * b  # ||T p - t||
    ratio = lambda x: x / g_norm if g_norm > 0 else (0.0 if x == 0 else math.inf)
    ref = Reference(
        loss=loss,
        grad=grad,
        loss_magnitude=(magnitude.mean().item() / abs(loss)) if loss != 0 else math.inf,
        grad_log_p=ratio(log_p_sq.sqrt().item()),
        grad_magnitude=ratio(magnitude_sq.sqrt().item()),
        grad_subnormal=ratio(subnormal_sq.sqrt().item() * b),
    )
    if not (math.isfinite(loss) and bool(torch.isfinite(grad).all())):
        return _no_reference(logits, "no float64 reference: the loss overflows float64")
    return ref
