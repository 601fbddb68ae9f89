"""The float64 reference of linear + cross-entropy: loss, dH, dW (and dbias), in vocabulary chunks.

With z = H W^T (+ b) (N x V), the loss options of harness/loss/options.py (`LossOptions`)
and the first family's formulas (harness/cross_entropy/reference.py has them with their
sources): z' = softcap tanh(z / softcap) under a softcap (else z' = z), lse'_b = log sum_v
exp(z'_bv), class weights w (else 1), eps the label smoothing, and per kept row b (target y_b
not ignore_index; every other row is 0):

    loss_b = sum_v q_bv (lse'_b - z'_bv) + z_loss lse'_b^2
    q_bv   = (1 - eps) w_y [v = y_b] + (eps / V) w_v               Q_b = sum_v q_bv
    dloss_b/dz_bv = ((Q_b p'_bv - q_bv) + 2 z_loss lse'_b p'_bv) sech^2(z_bv / softcap)

reduced by `reduction`: mean = (sum_b CE_b) / D_ce + (sum_b z-loss_b) / n, with n the kept rows
and D_ce the kept targets' summed weights (n without weights); sum; none = the [N] losses, whose
sum is differentiated (`loss` is then their mean over all N rows, a scalar summary, as the first
family's). Then dZ = dloss/dz, and

    dH = dZ W        [N, D]          dW = dZ^T H        [V, D]          db = sum_b dZ_b   [V]

computed in float64 on the rounded inputs without ever holding [N, V]: a [N, V] float64 tensor
is 17 GB at N = 8192, V = 262144. Two passes over chunks of the vocabulary:

  1. z_chunk = H W_chunk^T (+ b_chunk), capped; an online max and rescaled sum per row give
     lse'_b (the first family's `online` recurrence, in float64);
  2. z_chunk again; p' = exp(z'_chunk - lse') gives dZ_chunk by the formula above, and
     dH += dZ_chunk W_chunk, dW_chunk = dZ_chunk^T H, db_chunk = the column sums of dZ_chunk
     (each chunk of dW and db written once); label smoothing's share of the loss,
     sum_v (eps / V) w_v (lse' - z'_v), is summed in this pass too, a sum of non-negative terms.

The target logits z_{b,y_b} are dot products of H's rows with the gathered W rows (plus the
gathered bias). Everything is float64 arithmetic on float64 copies of the inputs: each product
of two fp32 (or narrower) numbers is exact in float64, and a dot product of D terms is accurate
to ~D * 2^-53 of the sum of |terms|, far below any dtype's unit roundoff. No cancellation-free
rewriting as the first family's reference does: with Gaussian logits and uniform targets the
loss lse - z_y is ~ln V, never a small difference of large numbers, and sech^2 is formed as
4 e^-2|x| / (1 + e^-2|x|)^2, never as 1 - tanh^2. tests/linear_cross_entropy/test_linear_ce_options.py
checks it against float64 autograd of the materialised formula with every option, and against
the first family's mpmath-checked reference on the float64 logits.

Alongside the values it records the conditioning the tolerance needs (tolerance.py): the mean
over kept rows of max_v |z_bv| (the size of the logits next to the loss); ||softmax part|| /
||dZ|| (how much of dZ is the term in p', which carries the logits' rounding, rather than the
exact q: ~0.05 for spread-out rows, ~1 for confident ones); what a logit error of at most
u |z_bv| + k max_v |z_bv| can do to that term, entry by entry (`soft_error`, from the
softmax-weighted mean of |z| per row, a_b, summed online in pass 1); and how much one unit of
error in every row's lse' moves the reduced loss, relative to it (1 / loss for the plain mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from harness.loss.errors import block_elements
from harness.loss.options import LossOptions

# Classes per chunk: a [N, chunk] float64 block of about 2^20 elements (8 MiB) on a CPU, 16x
# that on a GPU (harness/loss/errors.py block_elements: a chunk's operations are launches there).
# A chunk's pass holds about ten such temporaries: at 2^24 elements on a CPU (128 MiB each) the
# reference was the point's peak, 1.75 GB at bf16 N = 4096, D = 512, V = 32000, in 40 s a point;
# at 2^20, 1.51 GB (the native op's own backward is the peak) in 28-30 s.
BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Reference:
    loss: float  # the reduced loss (reduction none: the mean of `losses`); NaN when every row is
    #              ignored under mean
    losses: Tensor  # [N] float64 per-row losses, 0 on ignored rows
    grad_hidden: Tensor  # [N, D] float64
    grad_weight: Tensor  # [V, D] float64
    grad_bias: Tensor | None  # [V] float64, None without a bias
    grad_hidden_norm: float  # ||dH||_2 (Frobenius)
    grad_weight_norm: float
    grad_bias_norm: float  # 0.0 without a bias
    logit_max: float  # mean over kept rows of max_v |z_bv|: how large the logits are
    p_share: float  # ||softmax part of dZ|| / ||dZ|| over kept rows
    loss_per_lse: float  # relative change of the reduced loss per unit of error in every lse'
    kept: int  # rows whose target is not ignored
    finite: bool  # a finite loss exists (some row kept under mean, every value finite)
    missing: str = ""  # why not, when not finite
    # What the logits' rounding can do to the softmax part of dZ, per entry (module docstring):
    # (sum X^2, sum X Y, sum Y^2) / ||dZ||^2, so that the tolerance's term for logit errors of at
    # most u |z_bv| + k max_v |z_bv| is sqrt(u^2 XX + 2 u k XY + k^2 YY).
    soft_error: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Per-entry bounds, as norms (`reference(..., units=...)`; None without): what a careful
    # implementation may be off by in each row of dH [N] and each class's row of dW [V]
    # (`_EntryBounds`), for the element-wise verdict.
    hidden_bound: Tensor | None = None
    weight_bound: Tensor | None = None

    def times(self, s: float) -> Reference:
        """The gradients of s times the loss, scaled in place (s a power of two: exact), loss
        and conditioning as they are: the reference of a backward whose incoming gradient is s."""
        for g in (self.grad_hidden, self.grad_weight, self.grad_bias):
            if g is not None:
                g.mul_(s)
        for g in (self.hidden_bound, self.weight_bound):
            if g is not None:
                g.mul_(abs(s))
        norms = {
            n: getattr(self, n) * abs(s) for n in ("grad_hidden_norm", "grad_weight_norm", "grad_bias_norm")
        }
        return replace(self, **norms)


def chunk_size(rows: int, classes: int, device: torch.device | str = "cpu") -> int:
    return max(1, min(classes, block_elements(BLOCK_ELEMENTS, device) // max(rows, 1)))


def _capped(z: Tensor, cap: float | None) -> tuple[Tensor, Tensor | None]:
    """(z', dz'/dz): softcap tanh(z / softcap) and sech^2(z / softcap), or (z, None)."""
    if cap is None:
        return z, None
    x = z / cap
    e = torch.exp(x.abs().mul_(-2.0))  # e^-2|x|: sech^2 = 4e / (1 + e)^2, no 1 - tanh^2
    return cap * torch.tanh(x), e.mul(4.0).div_(e.add(1.0).square_())


def reference(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    options: LossOptions | None = None,
    bias: Tensor | None = None,
    upstream: Tensor | None = None,
    units: tuple[float, float, float] | None = None,
) -> Reference:
    """hidden [N, D], weight [V, D], bias [V] or None in any float dtype (upcast here), targets
    [N] int64. options: the loss's (None: the plain mean); its class weights [V] in any float
    dtype. upstream: under reduction "none", the [N] incoming gradient the gradients are of
    (harness/loss/errors.py `upstream`; None: all ones, the gradient of the rows' sum). units:
    (u_d, u_c sqrt(D), u_c) of the variants' dtype, for the per-entry bounds (None: none)."""
    opts = options if options is not None else LossOptions()
    f64 = torch.float64
    h = hidden.to(f64)
    w = weight.to(f64)
    b = None if bias is None else bias.to(f64)
    cw = None if opts.weight is None else opts.weight.to(dtype=f64, device=h.device)
    eps, zl, cap = float(opts.label_smoothing), float(opts.z_loss), opts.softcap
    n_rows, v = h.shape[0], w.shape[0]
    kept_mask = targets != opts.ignore_index
    kept = int(kept_mask.sum().item())
    safe_t = torch.where(kept_mask, targets, torch.zeros_like(targets))
    w_y = cw[safe_t] if cw is not None else torch.ones(n_rows, dtype=f64, device=h.device)
    w_sum = float(cw.sum().item()) if cw is not None else float(v)
    step = chunk_size(n_rows, v, h.device)

    def logits(lo: int, hi: int) -> Tensor:
        z = h @ w[lo:hi].T
        return z if b is None else z.add_(b[lo:hi])

    # Pass 1: lse' per row, online over the chunks; for the tolerance, max |z| per row and the
    # softmax-weighted mean of |z| (a_b = sum_v p'_bv |z_bv|, rescaled online as the sum is).
    m = torch.full((n_rows,), -math.inf, dtype=f64, device=h.device)
    s = torch.zeros(n_rows, dtype=f64, device=h.device)
    t = torch.zeros(n_rows, dtype=f64, device=h.device)
    zmax = torch.zeros(n_rows, dtype=f64, device=h.device)
    for lo in range(0, v, step):
        z = logits(lo, min(lo + step, v))
        zmax = torch.maximum(zmax, z.abs().max(dim=1).values)
        zc, _ = _capped(z, cap)
        new_m = torch.maximum(m, zc.max(dim=1).values)
        e = torch.exp(zc - new_m[:, None])
        rescale = torch.exp(m - new_m)
        s = s * rescale + e.sum(dim=1)
        t = t * rescale + (e * z.abs()).sum(dim=1)
        m = new_m
        del z, zc, e
    lse = m + torch.log(s)
    a_abs = t / s
    z_target = (h * w[safe_t]).sum(dim=1)
    if b is not None:
        z_target += b[safe_t]
    z_target, _ = _capped(z_target, cap)

    # What the reduction divides by: the CE part by the kept targets' summed weights (the kept
    # rows without weights), z-loss by the kept rows; 1 for sum and none.
    if opts.reduction == "mean":
        d_ce = float(w_y[kept_mask].sum().item()) if cw is not None else float(kept)
        d_z = float(kept)
    else:
        d_ce = d_z = 1.0
    zero = torch.zeros_like(lse)
    ce_scale = torch.where(kept_mask, 1.0 / d_ce if d_ce else 0.0, zero)  # [N]
    z_scale = torch.where(kept_mask, 1.0 / d_z if d_z else 0.0, zero)
    if upstream is not None and opts.reduction == "none":  # each row's loss times its incoming gradient
        ce_scale = ce_scale * upstream.to(dtype=f64, device=h.device)
        z_scale = z_scale * upstream.to(dtype=f64, device=h.device)
    q_total = (1.0 - eps) * w_y + eps / v * w_sum  # Q_b
    coef = q_total * ce_scale + 2.0 * zl * lse * z_scale  # the coefficient of p' in dZ
    target_q = (1.0 - eps) * w_y * ce_scale  # subtracted at the target's entry

    # Pass 2: the gradients, one chunk of dZ at a time, and label smoothing's share of the loss.
    smooth = torch.zeros_like(lse)
    dh = torch.zeros_like(h)
    dw = torch.empty_like(w)
    db = None if b is None else torch.empty_like(b)
    p_sq = dz_sq = 0.0  # ||softmax part||^2 and ||dZ||^2, for p_share
    xx = xy = yy = 0.0  # the softmax part's error sums (soft_error)
    bounds = None if units is None else _EntryBounds(units, h, w)
    for lo in range(0, v, step):
        hi = min(lo + step, v)
        z = logits(lo, hi)
        zc, chain = _capped(z, cap)
        gaps = lse[:, None] - zc  # >= 0
        p = torch.exp(-gaps)
        # |dp'_bv| <= p'_bv |dz_bv - sum_j p'_bj dz_bj| <= p'_bv ((1 - p'_bv) d_bv + sum_{j != v} p'_bj d_bj)
        # for logit errors |dz_bj| <= d_bj = u |z_bj| + k zmax_b (the cap's derivative is at most
        # 1): u X + k Y with X = |z_bv| (1 - 2 p'_bv) + a_b and Y = 2 zmax_b (1 - p'_bv), each
        # times |coef_b| p'_bv (and the cap's derivative), the entry's share of the softmax part
        weight = p * coef[:, None].abs()
        if chain is not None:
            weight.mul_(chain)
        x = (z.abs() * (1.0 - 2.0 * p) + a_abs[:, None]).mul_(weight)
        y = (1.0 - p).mul_(2.0 * zmax[:, None]).mul_(weight)
        xx += float(x.square().sum().item())
        xy += float((x * y).sum().item())
        yy += float(y.square().sum().item())
        if bounds is not None:  # [N, chunk]; lse's own sum of V exponentials: u_c (ln V + 2 sqrt V)
            logit_error = x.mul_(bounds.u_d).add_(y, alpha=bounds.k).add_(weight, alpha=bounds.summed)
        del x, y, weight, z
        soft = p.mul_(coef[:, None])
        dz = soft.clone()
        if eps:
            q_smooth = eps / v * (cw[lo:hi] if cw is not None else 1.0)  # [chunk] or a number
            smooth += (gaps * q_smooth).sum(dim=1)
            dz.sub_(ce_scale[:, None] * q_smooth)
        del gaps
        rows = (kept_mask & (safe_t >= lo) & (safe_t < hi)).nonzero()[:, 0]
        dz[rows, safe_t[rows] - lo] -= target_q[rows]
        if chain is not None:
            soft.mul_(chain)
            dz.mul_(chain)
        p_sq += float(soft.square().sum().item())
        dz_sq += float(dz.square().sum().item())
        dh.addmm_(dz, w[lo:hi])
        dw[lo:hi] = dz.T @ h
        if bounds is not None:
            bounds.add(logit_error, dz, dw[lo:hi], lo, hi)
            del logit_error
        if db is not None:
            db[lo:hi] = dz.sum(dim=0)
        del soft, dz, zc, chain

    ce_rows = torch.where(kept_mask, (1.0 - eps) * w_y * (lse - z_target) + smooth, zero)
    z_rows = torch.where(kept_mask, zl * lse.square(), zero) if zl else zero
    losses = ce_rows + z_rows
    lse_rows = torch.where(kept_mask, q_total + 2.0 * zl * lse.abs(), zero)  # d loss_b / d lse'_b
    if opts.reduction == "none":
        loss = float(losses.mean().item())
        shift = float(torch.linalg.vector_norm(lse_rows).item())
        size = float(torch.linalg.vector_norm(losses).item())
    else:
        ce_sum, z_sum = float(ce_rows.sum().item()), float(z_rows.sum().item())
        if opts.reduction == "sum":
            loss = ce_sum + z_sum
        else:  # mean: 0/0 when every row is ignored, as F.cross_entropy's NaN
            loss = ce_sum / d_ce + z_sum / d_z if kept else math.nan
        shift = float((q_total * ce_scale + 2.0 * zl * lse.abs() * z_scale)[kept_mask].sum().item())
        size = abs(loss)
    finite = math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in (dh, dw, db) if g is not None)
    if finite:
        missing = ""
    elif kept == 0 and opts.reduction == "mean":
        missing = "every row is ignored: the mean loss is 0/0"
    else:
        missing = "non-finite float64 result"
    hidden_bound = weight_bound = None
    if bounds is not None:
        hidden_bound, weight_bound = bounds.norms(dh)
    return Reference(
        loss=loss,
        losses=losses,
        grad_hidden=dh,
        grad_weight=dw,
        grad_bias=db,
        grad_hidden_norm=float(torch.linalg.vector_norm(dh).item()),
        grad_weight_norm=float(torch.linalg.vector_norm(dw).item()),
        grad_bias_norm=0.0 if db is None else float(torch.linalg.vector_norm(db).item()),
        logit_max=float(zmax[kept_mask].mean().item()) if kept else 0.0,
        p_share=math.sqrt(p_sq / dz_sq) if dz_sq > 0 else 0.0,
        soft_error=(xx / dz_sq, xy / dz_sq, yy / dz_sq) if dz_sq > 0 else (0.0, 0.0, 0.0),
        loss_per_lse=shift / size if size > 0 else shift,
        kept=kept,
        finite=finite,
        missing=missing,
        hidden_bound=hidden_bound,
        weight_bound=weight_bound,
    )


class _EntryBounds:
    """Per-entry bounds of dH and dW, the norm-wise bound's terms (tolerance.py) taken entry by
    entry. An entry of dZ may be off by

        e_bv = u_d X_bv + k Y_bv + u_c (ln V + 2 sqrt(V)) |coef_b| p'_bv + 2 u_d |dZ_bv|

    (the logits' rounding through the softmax part, `soft_error`'s X and Y; lse's own sum of V
    exponentials, as the first family's bound has it, which each p' inherits; dZ and the
    returned gradient each rounded once). dH_b = sum_v dZ_bv W_v and dW_v = sum_b dZ_bv H_b carry it as
    sums of absolute values, plus their own accumulation, u_c sqrt(V) (dH) or u_c sqrt(N) (dW)
    times sum |dZ| |W| (|H|), and their rounding to the dtype, u_d |dH| (|dW|): so

        |ddH_bd| <= sum_v (e_bv + u_c sqrt(V) |dZ_bv|) |W_vd| + u_d |dH_bd|

    and likewise for dW. Only the rows' norms are kept: [N] and [V] (and, while the chunks of
    the vocabulary come by, the [N, D] sum and |H|: 16 N D bytes), never a [V, D] bound."""

    def __init__(self, units: tuple[float, float, float], h: Tensor, w: Tensor) -> None:
        self.u_d, self.k, self.u_c = units
        self.abs_h, self.w = h.abs(), w  # |W| a chunk at a time: a whole one is V D 8 bytes more
        n, v = h.shape[0], w.shape[0]
        self.hidden = torch.zeros_like(h)  # [N, D]: sum over the chunks so far
        self.weight = torch.empty(v, dtype=h.dtype, device=h.device)  # [V] norms
        self.acc_h, self.acc_w = self.u_c * math.sqrt(v), self.u_c * math.sqrt(n)
        self.summed = self.u_c * (math.log(v) + 2.0 * math.sqrt(v))

    def add(self, logit_error: Tensor, dz: Tensor, dw: Tensor, lo: int, hi: int) -> None:
        abs_dz = dz.abs()
        e = logit_error.add_(abs_dz, alpha=2.0 * self.u_d)
        self.hidden.addmm_(e + self.acc_h * abs_dz, self.w[lo:hi].abs())
        e.add_(abs_dz, alpha=self.acc_w)
        per_class = (e.T @ self.abs_h).add_(dw.abs(), alpha=self.u_d)
        self.weight[lo:hi] = torch.linalg.vector_norm(per_class, dim=1)

    def norms(self, dh: Tensor) -> tuple[Tensor, Tensor]:
        hidden = torch.linalg.vector_norm(self.hidden.add_(dh.abs(), alpha=self.u_d), dim=1)
        return hidden, self.weight
