"""The float64 reference of the vocabulary-parallel loss: the unsharded loss and its gradient.

Sharding changes where the numbers are, not what they are: the reference is the loss on the
whole logits [N, V], and a variant's shards of the gradient, gathered in rank order, are
judged against its gradient. With z' = softcap tanh(z / softcap) under a softcap (else z),
lse_b = log sum_v exp(z'_bv), p = exp(z' - lse), class weights w (else 1), eps the label
smoothing, and per kept row b (target y_b not ignore_index; every other row is 0):

    loss_b = sum_v q_bv (lse_b - z'_bv) + z_loss lse_b^2
    q_bv   = (1 - eps) w_y [v = y_b] + (eps / V) w_v            Q_b = sum_v q_bv
    dloss_b/dz_bv = (Q_b p_bv - q_bv + 2 z_loss lse_b p_bv) sech^2(z_bv / softcap)

reduced as F.cross_entropy reduces (mean: the cross-entropy part over the kept targets' summed
weights, n kept rows without weights, the z-loss part over n, as Liger's lse_square_scale;
sum; none: the [N] losses, differentiated with harness/loss/errors.py `upstream`), and a scalar
loss differentiated with SCALAR_UPSTREAM, as the runner does.

Cancellation-free where float64 would otherwise lose digits: lse_b - z'_bv is formed as
(m_b - z'_bv) + log1p(sum of exp(z' - m) without the row max's own 1), and 1 - p_y as the sum
of the other classes' probabilities, so a confident row's loss and target gradient keep their
relative accuracy. tests/vocab_parallel_cross_entropy/ checks it against float64 autograd of
F.cross_entropy with every option, and against mpmath.

With the values it records the conditioning the tolerance needs (tolerance.py): how much one
unit of absolute error in each row's lse (the error every implementation makes forming it in
its compute precision, u_c (max|z'| + ln V + 2 sqrt(V)) per row) moves the reduced loss, and
the gradient's share in p (which carries that error) and in p |log p| (the rounding of log p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.loss.errors import SCALAR_UPSTREAM, block_elements, row_slices, upstream
from harness.loss.options import LossOptions


@dataclass(frozen=True)
class Reference:
    loss: float  # the reduced loss (reduction none: the mean of `losses`)
    losses: Tensor  # [N] float64 per-row losses, 0 on ignored rows
    grad: Tensor  # [N, V] float64: the gradient the runner's call produces, upstream included
    grad_norm: float
    loss_magnitude: float  # relative error of the loss per unit u_c in every row's lse
    grad_magnitude: float  # ||the part of the gradient in p, times each row's lse error|| / ||grad||
    grad_log_p: float  # ||T p |log p| sech^2|| / ||grad||: log p rounded to the dtype
    kept: int
    finite: bool
    missing: str = ""


# Rows per block: about 2^20 float64 elements (8 MiB) per temporary on a CPU, 16x on a GPU
# (harness/loss/errors.py block_elements). A block's pass holds about twenty of them; over the
# whole [N, V] at once they were 53x bf16 logits (7.1 GB at N = 2048, V = 32768, tp = 2).
_BLOCK_ELEMENTS = 1 << 20


def reference(logits: Tensor, targets: Tensor, options: LossOptions) -> Reference:
    """float64 loss and gradient of the loss on the whole logits (any dtype, read as rounded),
    block by block of rows: every quantity is a row's, but for the sums that reduce them (the
    loss, the norms), accumulated over the blocks. Only the [N, V] float64 gradient is held."""
    n, v = logits.shape
    device = logits.device
    rows_at = list(row_slices(n, v, block_elements(_BLOCK_ELEMENTS, device)))
    if not all(bool(torch.isfinite(logits[r]).all()) for r in rows_at):
        return _missing(n, v, device, "the rounded logits hold a non-finite value")
    kept = targets != options.ignore_index
    y = torch.where(kept, targets, 0)
    w = options.weight.to(torch.float64) if options.weight is not None else torch.ones(v, dtype=torch.float64)
    w = w.to(device)
    keptf = kept.to(torch.float64)
    wy = w[y]  # [N]
    kept_n = int(kept.sum().item())
    red = options.reduction
    if red == "mean":
        if kept_n == 0:
            return _missing(n, v, device, "every row is ignored: the mean has nothing to divide")
        ce_scale, zl_scale = 1.0 / float((wy * keptf).sum().item()), 1.0 / kept_n
    else:
        ce_scale = zl_scale = 1.0
    if red == "none":
        row_factor = upstream(n, torch.empty(0, dtype=torch.float64, device=device))
    else:
        row_factor = torch.full((n,), SCALAR_UPSTREAM, dtype=torch.float64, device=device)
    scales = (ce_scale, zl_scale)

    grad = torch.empty((n, v), dtype=torch.float64, device=device)
    ce = torch.empty(n, dtype=torch.float64, device=device)
    zl = torch.empty(n, dtype=torch.float64, device=device)
    per_lse_err = torch.empty(n, dtype=torch.float64, device=device)
    grad_norm = tp_norm = log_p_norm = 0.0
    for r in rows_at:
        part = _block(logits[r].to(torch.float64), y[r], keptf[r], w, row_factor[r], options, scales)
        grad[r], ce[r], zl[r], per_lse_err[r] = part.grad, part.ce, part.zl, part.per_lse_err
        grad_norm = math.hypot(grad_norm, part.grad_norm)
        tp_norm, log_p_norm = math.hypot(tp_norm, part.tp_norm), math.hypot(log_p_norm, part.log_p_norm)

    if red == "mean":
        loss = float(ce.sum().item()) * ce_scale + float(zl.sum().item()) * zl_scale
        losses = ce * ce_scale + zl * zl_scale  # each row's share of the reduced loss
    else:
        losses = ce + zl
        loss = float(losses.sum().item()) if red == "sum" else float(losses.mean().item())
    # conditioning: one unit of error in row b's lse moves its loss by d(loss_b)/d(lse_b)
    if red == "none":
        lm = float(torch.linalg.vector_norm(per_lse_err).item()) / max(
            float(torch.linalg.vector_norm(losses).item()), 1e-300
        )
    else:
        lm = float(per_lse_err.sum().item()) / max(abs(loss), 1e-300)
    denom = max(grad_norm, 1e-300)
    return Reference(
        loss=loss,
        losses=losses,
        grad=grad,
        grad_norm=grad_norm,
        loss_magnitude=lm,
        grad_magnitude=tp_norm / denom,
        grad_log_p=log_p_norm / denom,
        kept=kept_n,
        # a NaN or inf entry makes the norm NaN or inf, and no finite entry can overflow it (each
        # is at most a few times the incoming gradient): no second pass over the gradient
        finite=math.isfinite(loss) and math.isfinite(grad_norm),
    )


@dataclass(frozen=True)
class _Part:
    """One block of rows' share: its gradient rows, per-row loss parts, and norms to combine."""

    grad: Tensor  # [R, V]
    ce: Tensor  # [R] the cross-entropy part of each kept row's loss (0 on ignored rows)
    zl: Tensor  # [R] the z-loss part
    per_lse_err: Tensor  # [R] d(loss_b)/d(lse_b) times lse_b's error in units of u_c
    grad_norm: float
    tp_norm: float  # ||the part of the gradient in p, times each row's lse error||
    log_p_norm: float  # ||T p |log p| sech^2||


def _block(
    z: Tensor,
    y: Tensor,
    keptf: Tensor,
    w: Tensor,
    row_factor: Tensor,
    options: LossOptions,
    scales: tuple[float, float],
) -> _Part:
    """The module docstring's formulas on rows z [R, V] float64 with targets y (safe: 0 where
    ignored), keptf (1.0 on kept rows), the class weights w [V] and each row's incoming gradient
    (row_factor); scales: the reduction's (cross-entropy, z-loss) factors."""
    v = z.shape[1]
    ce_scale, zl_scale = scales
    cap = options.softcap
    zc = cap * torch.tanh(z / cap) if cap else z

    m, top = zc.max(dim=1, keepdim=True)
    e = torch.exp(zc - m)
    e_rest = e.scatter(1, top, 0.0)  # every class but the row max's own 1
    s1 = e_rest.sum(dim=1, keepdim=True)
    s = 1.0 + s1
    lse = m + torch.log1p(s1)  # [R, 1]
    p = e / s
    gap = (m - zc) + torch.log1p(s1)  # lse - z', never a difference of two large numbers

    eps = options.label_smoothing
    wy = w[y]  # [R]
    q_target = (1.0 - eps) * wy
    q_smooth = (eps / v) * w  # [V]
    Q = q_target + q_smooth.sum()
    ce = q_target * gap.gather(1, y[:, None])[:, 0] + (gap * q_smooth).sum(dim=1)
    zl = options.z_loss * lse[:, 0] ** 2
    ce, zl = ce * keptf, zl * keptf

    # the gradient of each row's loss with respect to its z' entries: Q p - q + 2 zl lse p,
    # with the target's Q p_y - q_y = -(1 - eps) w_y (1 - p_y) + (Q - (1 - eps) w_y) p_y - q_smooth_y
    # formed from 1 - p_y = (the others' exponentials) / s, a sum of positives: no cancellation
    # at a confident row (s - e_y would cancel to the last bit of s)
    one_minus_py = e.scatter(1, y[:, None], 0.0).sum(dim=1) / s[:, 0]
    p_y = p.gather(1, y[:, None])[:, 0]
    g_ce = Q[:, None] * p - q_smooth
    g_ce.scatter_(1, y[:, None], (-q_target * one_minus_py + (Q - q_target) * p_y - q_smooth[y])[:, None])
    g_zl = 2.0 * options.z_loss * lse * p
    sech2 = _sech2(z / cap) if cap else None

    # the cross-entropy part and the z-loss part are scaled apart under mean
    grad = (g_ce * ce_scale + g_zl * zl_scale) * (row_factor * keptf)[:, None]
    grad_capped = grad  # the gradient with respect to z' (the capped logits)
    if sech2 is not None:
        grad = grad * sech2

    per_lse = (Q * ce_scale + 2.0 * options.z_loss * lse[:, 0].abs() * zl_scale) * keptf
    zmax = zc.abs().amax(dim=1)
    lse_err = zmax + math.log(v) + 2.0 * math.sqrt(v)  # in units of u_c (the tolerance's)
    tp_part = (per_lse * row_factor)[:, None] * p * lse_err[:, None]
    log_p = (per_lse * row_factor)[:, None] * p * gap
    if sech2 is not None:
        # autograd's chain through tanh forms 1 - t^2 from t = tanh rounded: an absolute error
        # of 2 u tanh^2, times the gradient with respect to z' (not z: near saturation sech^2
        # is tiny and this error is all that is left of the entry)
        tp_part = tp_part * sech2 + 2.0 * grad_capped.abs() * (1.0 - sech2)
        log_p = log_p * sech2
    return _Part(
        grad=grad,
        ce=ce,
        zl=zl,
        per_lse_err=per_lse * lse_err,
        grad_norm=float(torch.linalg.vector_norm(grad).item()),
        tp_norm=float(torch.linalg.vector_norm(tp_part).item()),
        log_p_norm=float(torch.linalg.vector_norm(log_p).item()),
    )


def _sech2(x: Tensor) -> Tensor:
    """sech^2 x = 4 e^-2|x| / (1 + e^-2|x|)^2, never 1 - tanh^2 (which cancels near saturation)."""
    t = torch.exp(-2.0 * x.abs())
    return 4.0 * t / (1.0 + t) ** 2


def _missing(n: int, v: int, device, why: str) -> Reference:
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=device)
    return Reference(
        loss=math.nan,
        losses=nan,
        grad=torch.full((n, v), math.nan, dtype=torch.float64, device=device),
        grad_norm=math.nan,
        loss_magnitude=math.nan,
        grad_magnitude=math.nan,
        grad_log_p=math.nan,
        kept=0,
        finite=False,
        missing=why,
    )
