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

Checked against mpmath at 60 digits on adversarial points (tests/cross_entropy/test_reference.py): relative
error below 1e-13 in the loss and the gradient (norm-wise) wherever the true value is a normal
float64. Computed in blocks of rows (about 2^22 elements): one pass per point makes the loss,
the per-row losses, the gradient's norm and the conditioning, shared by every variant and mode;
the [B, C] gradient is never held whole, but made again block by block where a variant's
gradient is compared with it (`Gradient`), from inputs that are themselves made again from the
seed (harness/cross_entropy/inputs.py Draw). Only per-row figures stay resident.

Options (harness/loss/options.py; `reference(..., options)`). With z' = softcap
tanh(z / softcap) under a softcap (else z' = z; a masked z = -inf stays -inf), lse' = log
sum_c exp(z'_c), weights w (else 1) and eps the label smoothing, each row's loss is

    loss_b = sum_c q_bc (lse'_b - z'_bc) + z_loss lse'_b^2          (0 on an ignored row)
    hard:  q_c = (1 - eps) w_y [c = y] + (eps / C) w_c               (F.cross_entropy, LossNLL.cpp)
    soft:  q_c = w_c ((1 - eps) t_c + eps / C)                       (ignore_index does not apply:
                                                                      F.cross_entropy refuses one)
    dloss_b/dz_c = ((Q_b p'_c - q_c) + 2 z_loss lse'_b p'_c) sech^2(z_c / softcap)

  - reduction "mean": (sum_b CE_b) / D + (sum_b z_loss lse'_b^2) / N, N the kept rows (B for soft
    targets), D the kept targets' summed weights w_y (hard, weighted; as F.cross_entropy, label
    smoothing included) or else N. z-loss is Liger-Kernel's `lse_square_scale`
    (ops/cross_entropy.py, read at ead96b6): lse of the capped logits, per kept row, not
    weighted, divided by N under mean even with weights. "sum": sum_b loss_b. "none": `losses`,
    the gradient of their sum, and `loss` = their mean over all B rows (a scalar summary).
  - Every target ignored under mean: F.cross_entropy in float64 gives a NaN loss (0 / 0) and a
    zero gradient (weights and smoothing or not); so does the reference, with `missing` saying
    no finite value exists. Under sum and none the loss and gradient are 0.
  - Hard targets with smoothing and every soft target go through the soft form with q for t: q
    is formed in float64 (a rounding or two per entry, as t's own rounding), then the loss and
    gradient are as exact in q as above. z-loss adds 2 z_loss lse' p to the CE gradient as it
    is: what cancels there is the problem's. The softcap enters as the capped gaps z'_k - z'_c
    and sech^2 formed without 1 - tanh^2 or a difference of tanh (`_softcap`): each to a few
    ulps at any logit size, the rounding of z / softcap carried along.
  - The plain loss (options None or LossOptions()) is computed by the same operations as
    without options, bit for bit.

Alongside the values it records the conditioning the tolerance needs (harness/cross_entropy/tolerance.py): how
large the logits are next to the loss, and how strongly the gradient amplifies a relative error
in the softmax. They fall out of the same pass. With options they are taken of the optioned
loss: q in place of t, the coefficient of p in the gradient (Q + 2 z_loss lse', scaled to the
CE part's denominator) in place of T, z-loss's own dependence on lse' added to the magnitudes
(its loss moves by 2 z_loss |lse'| per unit of lse'), and under a softcap the capped logits'
size (kernels cap in the compute precision, then take lse of the capped values), the chain
factor on every term, and sech^2's own error from z / softcap rounded (2 |z / softcap| u_c).
The same terms entry by entry make the per-entry bound the element-wise verdicts read
(`_Part.bound`; harness/loss/errors.py Entrywise), beside the gradient wherever it is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from harness.cross_entropy.streamed import Gradient, Rows, held, rows_of
from harness.loss.errors import nonfinite_counts
from harness.loss.options import LossOptions

# A reference gradient of at most this many bytes is kept whole (Gradient): 16 MiB, B x C up to
# 2^21 (every point of the cpu, smoke and options sweeps), less than a block's temporaries.
_HOLD_BELOW_BYTES = 1 << 24
# Unit roundoffs of the two compute precisions (harness/dtypes.py compute_roundoff).
_U32 = torch.finfo(torch.float32).eps / 2
_U64 = torch.finfo(torch.float64).eps / 2


@dataclass
class Reference:
    loss: float  # float64 loss (the mean, or as the options reduce); NaN when no finite reference exists
    gradient: Gradient  # [B, C] float64 gradient of `loss`, streamed (empty when not finite)
    # Conditioning, for the tolerance (harness/cross_entropy/tolerance.py, README Numerics §9):
    loss_magnitude: float  # mean_b T_b (max_c |z_bc| + ln C) / |loss|: an absolute error of u*|lse|
    #                        per row, as any implementation that forms lse makes, over the loss
    grad_log_p: float  # ||T p |log p| || / ||T p - t||: a relative error of u |log p| in each
    #                        probability (log p or z - lse rounded), carried into the gradient
    grad_magnitude: float  # ||T p (max|z| + ln C)|| / ||T p - t||: the same for an error of
    #                        u (max|z| + ln C) in each probability (lse rounded, then exp(z - lse))
    grad_subnormal: float  # ||rounding of g below the output dtype's smallest normal|| / ||g||
    # With options (harness/loss/options.py) `loss` is the reduced loss (mean or sum;
    # reduction "none": the mean of `losses` over all B rows, as a scalar summary) and the
    # gradient that of it ("none": of the sum of the per-row losses; harness/cross_entropy/accuracy.py scales
    # its rows by the incoming gradient the runner used).
    losses: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))  # [B]
    #                        float64 per-row losses after the options, before the reduction; 0 on ignored rows
    denominator: float = math.nan  # what the reduction divides the summed CE part by: B plain;
    #                        the kept rows, or their targets' summed weights, under mean; 1 for sum and none
    missing: str = ""  # why there is no finite reference (non-finite logits after rounding)
    entry_targets: Tensor | None = None  # [B] hard targets, -1 on ignored rows: the entries
    #                        grad_target_err reads (harness/loss/errors.py Entrywise)

    @property
    def finite(self) -> bool:
        return not self.missing

    @property
    def grad(self) -> Tensor:
        """The whole gradient, made here and held by the caller (tests, small points)."""
        return self.gradient.whole()

    @property
    def grad_norm(self) -> float:
        """||grad||_2, from the reference's pass; shared by every row's gradient error."""
        return self.gradient.norm

    @property
    def shape(self) -> tuple[int, int]:
        return self.gradient.rows.shape

    def held(self) -> list[Tensor]:
        """The tensors this reference keeps while the variants run (harness/measure/memory.py)."""
        g = self.gradient
        kept = [x for x in (g.kept, g.kept_bound, self.entry_targets) if x is not None]
        return [self.losses, *g.keeps, *kept]

    def scaled(self, s: float) -> Reference:
        """The reference of s times the loss: loss, per-row losses and gradient scaled, the
        conditioning unchanged (a relative property)."""
        return replace(self, loss=self.loss * s, losses=self.losses * s, gradient=self.gradient.scaled(s))


def _summed(c: int) -> float:
    """What lse's absolute error grows by with C, in units of u_c, besides the logits' size:
    ln C (lse itself is up to max|z| + ln C) and 2 sqrt(C) (the sum of C exponentials rounded:
    the largest of a batch's rows reaches 2.5 sqrt(C), which K_GRAD and K_ENTRY cover)."""
    return math.log(c) + 2.0 * math.sqrt(c)


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


def _no_reference(why: str) -> Reference:
    nan = math.nan
    return Reference(
        loss=nan,
        gradient=held(torch.empty((0, 0), dtype=torch.float64)),
        loss_magnitude=nan,
        grad_log_p=nan,
        grad_magnitude=nan,
        grad_subnormal=nan,
        missing=why,
    )


def _unusable(z: Tensor) -> int:
    """The NaN and +inf logits of a block: no float64 answer exists for them. A -inf logit is a
    masked class (a padded or forbidden token): probability 0 and gradient 0, as F.cross_entropy
    has it, so the reference takes it exactly."""
    if math.isfinite(z.sum(dtype=torch.float64).item()):
        return 0  # the common case: one reduction, no [R, C] boolean
    return int(torch.isnan(z).sum().item() + torch.isposinf(z).sum().item())


def _not_finite(bad: int, dtype: torch.dtype) -> Reference:
    return _no_reference(
        f"no float64 reference: {bad} logits are not finite in {str(dtype).removeprefix('torch.')}"
    )


def _infinite_loss(src: Rows, targets: Tensor | None, hard: bool) -> str:
    """Why a reference over logits with -inf entries has no finite loss: a row with no finite
    logit (softmax is 0/0), or a hard target on a -inf logit (its loss is +inf), as torch has it."""
    for rows, z, _ in src.blocks():
        if bool(torch.isneginf(z).all(dim=1).any()):
            return "no float64 reference: a row's every logit is -inf (softmax is 0/0)"
        if hard and bool(torch.isneginf(z.gather(1, targets[rows, None].clamp(0, z.shape[1] - 1))).any()):
            return "no float64 reference: a target's logit is -inf (masked): its loss is +inf"
    return "no float64 reference: the loss overflows float64"


def _zeros(rows: slice, z: Tensor, t: Tensor | None) -> Tensor:
    return torch.zeros(z.shape, dtype=torch.float64, device=z.device)


def _all_ignored(rows: Rows) -> Reference:
    """Every target ignored under reduction mean: F.cross_entropy gives a NaN loss (0 / 0) and a
    zero gradient (float64, with or without weights and label smoothing; checked in
    tests/cross_entropy/test_reference_options.py). The reference says the same, and that it
    has no finite value."""
    b, _ = rows.shape
    ref = _no_reference("no float64 reference: every target is ignored, and the mean of no rows is 0/0")
    ref.gradient = Gradient(rows, _zeros, 0.0)
    ref.losses = torch.zeros(b, dtype=torch.float64, device=rows.device)
    ref.denominator = 0.0
    return ref


def _division_residual(z: Tensor, x: Tensor, cap: float) -> Tensor:
    """(z - x cap) / cap for x = fl(z / cap): what the rounded quotient misses, to a relative u.
    x cap = p + e exactly (Dekker's product, by splitting both factors in halves of 26 bits);
    z - p is then exact (Sterbenz), and z - p - e is the residual."""

    def split(v):
        big = v * 134217729.0  # 2^27 + 1
        hi = big - (big - v)
        return hi, v - hi

    p = x * cap
    xh, xl = split(x)
    ch, cl = split(torch.tensor(cap, dtype=x.dtype, device=x.device))
    e = ((xh * ch - p) + xh * cl + xl * ch) + xl * cl
    r = ((z - p) - e).div_(cap)
    return r.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # |x| near float64's top: no residual


def _softcap(z: Tensor, k: Tensor, a: Tensor, cap: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For z' = cap tanh(z / cap) on a block [R, C] with row max a = z_k [R, 1]:

        gap    z'_k - z'_c >= 0  [R, C]  (0 at k)
        chain  dz'/dz = 1 - tanh^2(z / cap) = sech^2(z / cap)  [R, C]
        top    z'_k  [R, 1]
        x      z / cap  [R, C]

    each to a few ulps relative, at any size of z. With x = z / cap, D = (z_k - z_c) / cap >= 0:

        tanh(x_k) - tanh(x_c) = 2 (1 - e^-2D) e^(2 (min(x_k, 0) - max(x_c, 0)))
                                / ((1 + e^-2|x_k|) (1 + e^-2|x_c|))
        sech^2(x) = 4 e^-2|x| / (1 + e^-2|x|)^2

    No factor cancels or overflows: 1 - e^-2D is -expm1(-2D) of D formed from z_k - z_c (exact for
    logits from a narrower dtype, relative u for float64: -expm1(-2D) carries at most that), and
    the exponent min(x_k, 0) - max(x_c, 0) <= 0 has one of its terms 0 (x_k >= x_c), so it is
    exact. The rounding of x = z / cap itself would cost a relative 2|x| u in e^-2|x| (8e-14 at
    |x| = 350, where sech^2 leaves float64's range): its residual is carried along instead,
    dx = (z - x cap) / cap with x cap split exactly (Dekker), as a factor exp(-2 sign(x) dx)."""
    x = z / cap
    dx = _division_residual(z, x, cap)
    xk = x.gather(1, k)
    dk = dx.gather(1, k)
    ex = torch.exp(x.abs().mul_(-2.0)).mul_(torch.exp(dx * x.sign() * -2.0))  # e^-2|x|
    ek = torch.exp(xk.abs().mul_(-2.0)).mul_(torch.exp(dk * xk.sign() * -2.0))
    gap = torch.expm1((z - a).mul_(2.0 / cap)).neg_()  # 1 - e^-2D (z - a = -(z_k - z_c))
    # e^(2 (min(x_k, 0) - max(x_c, 0))): exact exponent (see above), then the residuals' share
    expo = (xk.clamp(max=0.0) - x.clamp(min=0.0)).add_(
        torch.where(xk < 0, dk, 0.0) - torch.where(x > 0, dx, 0.0)
    )
    gap.mul_(torch.exp(expo.mul_(2.0)))
    gap.mul_(2.0 * cap).div_(ex.add(1.0).mul_(ek.add(1.0)))
    chain = ex.mul(4.0).div_(ex.add_(1.0).square_())  # 0 at a masked class: e^-2|x| = 0
    masked = torch.isneginf(z)
    if bool(masked.any()):
        # A masked class stays masked under the cap (harness/loss/options.py): the formula above
        # would give it z' = -cap and so probability mass (Unsloth PR #10616). x there is only
        # read by the bounds, where its class has no probability and no gradient: 0.
        gap.masked_fill_(masked, math.inf)
        x.masked_fill_(masked, 0.0)
    return gap, chain, cap * torch.tanh(xk), x


@dataclass(frozen=True)
class _Problem:
    """What every block of one reference needs: the options resolved, the targets, the
    denominators (from the targets and weights alone, known before any logit is read)."""

    c: int
    hard: bool
    eps: float
    zl: float
    cap: float | None
    w: Tensor | None  # [C] float64 class weights
    targets: Tensor | None  # [B] class indices (hard)
    keep: Tensor | None  # [B]: the rows that count (hard)
    ignoring: bool
    d_ce: float
    zl_r: float
    exact: bool  # logits from a narrower dtype: z - max is exact in float64
    finfo: torch.finfo  # of the logits' dtype (the subnormal term)
    incoming: float  # the scalar incoming gradient the variants' gradients are of (the subnormal term)
    cancel: float  # sum |w_y| / |sum w_y| of a weighted mean's denominator (0: none)


@dataclass
class _Part:
    """One block's share of the reference. The gradient is in units of the CE part's
    denominator (divided by d_ce by the caller); the conditioning terms only when asked."""

    g: Tensor  # [R, C]
    row: Tensor  # [R] the CE part of each row's loss
    z_rows: Tensor | None  # [R] z_loss lse^2 per kept row
    magnitude: Tensor | None = None  # [R] T_b (max|z_b| + ln C)
    log_p_sq: Tensor | None = None
    magnitude_sq: Tensor | None = None
    subnormal_sq: Tensor | None = None
    bound: Tensor | None = None  # [R, C] per-entry bound, in the gradient's units (not of d_ce)


def _block(
    pr: _Problem, rows: slice, logits: Tensor, soft: Tensor | None, conditioning: bool, entries: bool = False
) -> _Part:
    """The reference on one block of rows (module docstring): logits [R, C] as stored, soft
    targets [R, C] (kind soft) or None. conditioning: the tolerance's norms too; entries: the
    per-entry bound (`_Part.bound`)."""
    f64 = torch.float64
    c, hard, eps, zl, cap, w = pr.c, pr.hard, pr.eps, pr.zl, pr.cap, pr.w
    z = logits.to(f64)
    # [R, 1], the first maximum as argmax has it; tanh is increasing: also the capped logits' max.
    # max(dim)'s indices: 150 us a block of 2^18 float64 on a CPU core, argmax's 220 us.
    k = z.max(dim=1, keepdim=True).indices
    a = z.gather(1, k)
    if cap is None:
        e = _shifted_exp(z, a, pr.exact)  # exp(z - a), 1 at k
    else:
        gap, chain, top, x = _softcap(z, k, a, cap)  # gap = z'_k - z' >= 0
        e = torch.exp(-gap)
    e.scatter_(1, k, 0.0)
    s = e.sum(dim=1, keepdim=True)  # sum over c != k: no 1 + tiny - 1
    e.scatter_(1, k, 1.0)
    big = s.add(1.0)  # S = sum_c exp(z_c - a)
    log_s = torch.log1p(s)  # lse - a
    p = e.div_(big)  # softmax, [R, C]
    not_max = s / big  # 1 - p_k
    kept = pr.keep[rows, None] if pr.ignoring else None  # [R, 1]
    if hard and not eps:
        # One target per row, of weight w_y (0 where ignored): the plain form, scaled.
        y = pr.targets[rows, None]
        if pr.ignoring:
            y = torch.where(kept, y, k)  # any valid class: the row's weight is 0
        total = torch.ones_like(s)
        row = (a - z.gather(1, y) if cap is None else gap.gather(1, y)) + log_s
        # 1 - p_y: the others' share; at the maximum, s / S (no 1 - (1 - tiny)).
        rest = torch.where(y == k, not_max, 1.0 - p.gather(1, y))
        g = p.clone().scatter_(1, y, -rest)
        if w is not None or pr.ignoring:
            total = w[y] if w is not None else total
            total = total * kept if pr.ignoring else total
            row = row * total
            g.mul_(total)
        row_ce = row[:, 0]
    else:
        # Soft targets, or hard ones with label smoothing: the effective target q [R, C]
        # (PyTorch's formulas, LossNLL.cpp), then the soft form, which is free of cancellation
        # for any non-negative q.
        if hard:
            y = pr.targets[rows, None]
            if pr.ignoring:
                y = torch.where(kept, y, k)
            t = torch.full_like(z, eps / c) if w is None else (eps / c * w).expand_as(z).clone()
            t.scatter_add_(1, y, (1.0 - eps) * (w[y] if w is not None else torch.ones_like(s)))
            if pr.ignoring:
                t.mul_(kept)
        else:
            t = soft.to(f64)
            if eps:
                t = t * (1.0 - eps) + eps / c
            if w is not None:
                t = t * w
        total = t.sum(dim=1, keepdim=True)
        row_ce = (t * ((a - z) if cap is None else gap).add_(log_s)).sum(dim=1)
        m = t.max(dim=1, keepdim=True).indices  # the first largest, as k
        t_rest = total - t  # T - t_c, exact enough off the largest t
        t_rest.scatter_(1, m, t.scatter(1, m, 0.0).sum(dim=1, keepdim=True))
        p_rest = (1.0 - p).scatter_(1, k, not_max)  # 1 - p_c; at the maximum, s / S
        g = p * t_rest - t * p_rest
    z_rows = None
    if zl:
        # z-loss: + z_loss lse^2 per kept row, gradient 2 z_loss lse p. Added to the CE
        # gradient as it is: what cancels there is the problem's, not the formula's.
        lse = (a if cap is None else top) + log_s
        zr = zl * lse.square()
        coef = 2.0 * pr.zl_r * lse
        if pr.ignoring:
            zr = zr * kept
            coef = coef * kept
        z_rows = zr[:, 0]
        g.add_(coef * p)
    if cap is not None:
        g.mul_(chain)  # d/dz = d/dz' * sech^2(z / cap)
    part = _Part(g, row_ce, z_rows)
    if not (conditioning or entries):  # the unrounded draw's reference: no tolerance reads it
        return part
    # Conditioning. T_eff: the coefficient of p in the gradient (total, plus z-loss's 2 z_loss
    # lse); mag: the size of lse, of the capped logits under a softcap (kernels cap in the
    # compute precision, then take lse of the capped values).
    # The sum of C exponentials, accumulated in u_c, adds a relative error of its own to every p
    # and to lse: about sqrt(C) u_c for a running sum of C positive terms (the probabilistic
    # bound of Higham and Mary; C u_c at worst). CPU fp32 F.cross_entropy makes up to 2.5
    # sqrt(C) u_c in lse over 64 rows at C = 32000 to 262144 (targets at p = 0.999: 1033 u_c at
    # C = 262144), 16-32x max|z| + ln C alone. `_summed` carries it with the size of lse.
    if cap is None:  # over the finite logits: a masked (-inf) class holds no probability
        mag = _largest_finite_size(z, a) + _summed(c)
    else:
        mag = cap * torch.tanh(x.abs().amax(dim=1, keepdim=True)) + _summed(c)
    # sum_c |q_c|: a row's loss is sum_c q_c (lse - z_c), and with signed class weights its terms
    # (and the rows of the batch) may cancel; each carries its own u_c mag
    weight_sum = total.abs() if hard and not eps else t.abs().sum(dim=1, keepdim=True)
    if zl:
        # lse off by u_c mag moves the row's loss by (T + 2 z_loss |lse|) u_c mag, and each
        # gradient entry by (|T_eff| + 2 z_loss) p u_c mag (through p and through lse itself).
        kz = 2.0 * pr.zl_r * (kept if pr.ignoring else 1.0)
        magnitude = ((weight_sum + kz * lse.abs()) * mag)[:, 0]
        tp = (total + coef).abs_() * p
        tp_mag = ((total + coef).abs_() + kz) * p
    else:
        magnitude = (weight_sum * mag)[:, 0]
        tp = total.abs() * p  # signed weights: each entry's own size
        tp_mag = tp
    cap_term = None
    if cap is not None:
        # Errors in z'-space reach the gradient through the chain factor; sech^2 itself, from
        # x = z / cap rounded to u_c, carries a relative error of ~2|x| u_c, and formed as
        # 1 - tanh^2 (autograd's tanh backward, every kernel's) one of 2 u_c sinh^2(x): tanh
        # rounded near 1 cancels (sinh^2(4) = 745: logits at 4 softcaps lose 10 bits). Times
        # |g| = |g'| sech^2 that is 2 u_c |g'| tanh^2, bounded where sech^2 underflows.
        tp = tp * chain
        tp_mag = tp_mag * chain
        cap_term = (g * x).mul_(2.0).abs_()
        tanh_sq = torch.where(chain > 0, g.abs() / chain.clamp(min=torch.finfo(f64).tiny), 0.0)
        cap_term.add_(tanh_sq.mul_(chain.neg().add_(1.0)), alpha=2.0)
        del tanh_sq
    # How a relative error in each probability reaches the gradient: u |log p| where log p
    # (or z - lse) is rounded, u (max|z| + ln C) where lse is. p |log p| <= 1/e keeps the
    # first bounded; the second grows with the logits. Per entry [R, C]:
    log_term = (tp * torch.log(p).nan_to_num_(neginf=0.0)).abs_()  # p = 0: nothing
    mag_term = tp_mag.mul_(mag)
    # The output dtype cannot hold |g / B| below its smallest normal to relative precision:
    # rounding there costs up to half the subnormal spacing (or |g| itself, if it rounds to 0).
    finfo = pr.finfo
    d = abs(pr.d_ce)  # a signed-weight denominator may be negative: |g| over |d|
    size = g.abs()
    floor = _subnormal_floor(size / d if pr.incoming == 1.0 else size * (pr.incoming / d), finfo)
    if conditioning:
        part.magnitude = magnitude
        part.log_p_sq = log_term.square().sum()
        part.magnitude_sq = mag_term.square().sum()
        if cap_term is not None:
            part.magnitude_sq += cap_term.square().sum()
        part.subnormal_sq = (
            torch.zeros((), dtype=f64, device=g.device) if floor is None else floor.square().sum()
        )
    if entries:
        # The same terms entry by entry (their norms above are the norm-wise bound's): what a
        # careful implementation may be off by at each entry of the gradient, in the gradient's
        # own units (divided by the denominator, the subnormal floor by the incoming gradient).
        u_d = finfo.eps / 2
        u_c = _U64 if finfo.bits == 64 else _U32
        bound = mag_term.mul_(u_c)  # in place: the norms above are taken (one temporary less)
        if cap_term is not None:
            bound.add_(cap_term, alpha=u_c)
        # |g| itself: rounded once to the output (u_d), and formed by a subtraction and a division
        # by the denominator in u_c (3 u |g| in fp64, where u_c = u_d: a kernel's T p - t over B)
        bound.add_(size, alpha=u_c * (2.0 + pr.cancel)).add_(size.add_(log_term), alpha=u_d)
        del size, log_term
        part.bound = bound.div_(d) if floor is None else bound.div_(d).add_(floor, alpha=1.0 / pr.incoming)
    return part


def _largest_finite_size(z: Tensor, a: Tensor) -> Tensor:
    """max |z_c| over each row's finite logits [R, 1] (a: the row max [R, 1]; no NaN, no +inf):
    the larger of |max| and |min| (both exact), one reduction and no [R, C] temporary; a row with a
    masked (-inf) class takes the masked form."""
    low = z.amin(dim=1, keepdim=True)
    if not bool(torch.isneginf(low).any()):
        return torch.maximum(a.abs(), low.abs())
    return torch.where(torch.isneginf(z), 0.0, z.abs()).amax(dim=1, keepdim=True)


def _subnormal_floor(gb: Tensor, finfo: torch.finfo) -> Tensor | None:
    """Per entry, what rounding |g| (gb, in the output's units) to the output dtype may cost
    where it lies below the smallest normal: up to half the subnormal spacing, or gb itself if it
    rounds to 0. None where no entry is that small (most blocks: one reduction, not three [R, C]
    passes)."""
    if not bool(gb.amin() < finfo.tiny):
        return None
    return torch.where(gb < finfo.tiny, gb.clamp(max=finfo.smallest_normal * finfo.eps / 2), 0.0)


def reference(
    logits: Tensor | Rows,
    targets: Tensor | None,
    kind: str,
    options: LossOptions | None = None,
    conditioning: bool = True,
    incoming: float = 1.0,
) -> Reference:
    """logits: [B, C] any float dtype (read as float64, the values as stored), or `Rows` that
    yield it block by block; targets: [B] int64 class indices (kind "hard") or [B, C]
    non-negative probabilities (kind "soft"; with Rows, the blocks carry them). options: the
    loss's options (harness/loss/options.py); None or LossOptions() is the plain loss,
    computed as it always was (bit for bit). conditioning=False: the loss and gradient alone,
    the conditioning fields NaN (about half the pass's work: the reference a total error is
    measured against, which no tolerance reads). incoming: the scalar incoming gradient the
    compared gradients are of (harness/loss/errors.py `incoming`): where the output dtype's
    subnormals begin is a matter of their size, so the subnormal term is of that gradient.

    One pass over the blocks makes the loss, the per-row losses, the gradient's norm and the
    conditioning; the gradient itself is not kept (Reference.gradient makes it again, block by
    block, where a variant's is compared with it)."""
    hard = kind == "hard"
    src = logits if isinstance(logits, Rows) else rows_of(logits, None if hard else targets)
    opts = options if options is not None else LossOptions()
    b, c = src.shape
    f64 = torch.float64
    dev = src.device
    eps, zl, cap = float(opts.label_smoothing), float(opts.z_loss), opts.softcap
    w = None if opts.weight is None else opts.weight.to(dtype=f64, device=dev)
    keep = targets != opts.ignore_index if hard else None  # [B]: the rows that count
    ignoring = hard and not bool(keep.all())
    n_rows = int(keep.sum().item()) if hard else b
    # What the reduction divides by (docstring above): the CE part by the summed weights of the
    # kept targets (hard, weighted), else by the kept rows; z-loss always by the kept rows.
    # How much the weighted mean's denominator cancels: sum |w_y| / |sum w_y|, 1 for weights of
    # one sign. A careful implementation sums w_y in the compute precision, a relative error of
    # u_c times this in the loss and in every gradient entry (signed weights only move it).
    cancel = 0.0  # no weighted denominator: no such term
    if opts.reduction == "mean":
        if hard and w is not None:
            d_ce = w[targets[keep]].sum().item()
            if d_ce == 0 and n_rows:
                return _no_reference("no float64 reference: the kept targets' class weights sum to 0 (0/0)")
            cancel = w[targets[keep]].abs().sum().item() / abs(d_ce) if n_rows else 1.0
        else:
            d_ce = float(n_rows)
        d_z = float(n_rows)
        if b and not n_rows:
            bad = sum(_unusable(z) for _, z, _ in src.blocks())
            return _not_finite(bad, src.dtype) if bad else _all_ignored(src)
    else:
        d_ce = d_z = 1.0
    # The gradient is accumulated in units of the CE part's denominator (divided by d_ce at the
    # end): z-loss's 2 z_loss lse p / d_z enters as 2 (z_loss d_ce / d_z) lse p.
    zl_r = zl * (d_ce / d_z) if zl else 0.0
    pr = _Problem(
        c, hard, eps, zl, cap, w, targets if hard else None, keep, ignoring, d_ce, zl_r,
        src.dtype != f64, torch.finfo(src.dtype), incoming, cancel,
    )  # fmt: skip
    row_loss = torch.empty(b, dtype=f64, device=dev)  # the CE part of each row's loss
    z_rows = torch.zeros(b, dtype=f64, device=dev) if zl else None  # z_loss lse^2 per kept row
    magnitude = torch.empty(b, dtype=f64, device=dev)  # T_b (max|z_b| + ln C)
    log_p_sq = torch.zeros((), dtype=f64, device=dev)
    magnitude_sq = torch.zeros((), dtype=f64, device=dev)
    subnormal_sq = torch.zeros((), dtype=f64, device=dev)
    kept = torch.empty((b, c), dtype=f64, device=dev) if 8 * b * c <= _HOLD_BELOW_BYTES else None
    # the per-entry bound beside a kept gradient (a reference with the conditioning only: the
    # verdict's); made in this pass, from the same temporaries
    kept_bound = torch.empty_like(kept) if kept is not None and conditioning else None
    bad = 0  # non-finite logits
    grad_norm = 0.0  # ||grad||_2, from the blocks' norms (hypot: no square of a block's norm to overflow)
    grad_finite = True
    for rows, z, t in src.blocks():
        bad += _unusable(z)
        if bad:
            continue  # no reference: only the count is left to make
        part = _block(pr, rows, z, t, conditioning, entries=kept_bound is not None)
        row_loss[rows] = part.row
        if zl:
            z_rows[rows] = part.z_rows
        if conditioning:
            magnitude[rows] = part.magnitude
            log_p_sq += part.log_p_sq
            magnitude_sq += part.magnitude_sq
            subnormal_sq += part.subnormal_sq
        g = part.g.div_(d_ce)
        if kept is not None:
            kept[rows] = g
        if kept_bound is not None:
            kept_bound[rows] = part.bound
        grad_norm = math.hypot(grad_norm, torch.linalg.vector_norm(g).item())
        grad_finite = grad_finite and nonfinite_counts(g) == (0, 0)
    if bad:
        return _not_finite(bad, src.dtype)
    ce_sum = row_loss.sum()
    z_sum = z_rows.sum() if zl else None
    losses = row_loss if not zl else row_loss + z_rows
    if opts.reduction == "mean":
        loss_t = ce_sum / d_ce if not zl else ce_sum / d_ce + z_sum / d_z
        scale = b / d_ce  # magnitude holds the rows in units of d_ce
    elif opts.reduction == "sum":
        loss_t = ce_sum if not zl else ce_sum + z_sum
        scale = float(b)
    else:  # none: the scalar summary is the mean of the per-row losses over all B rows
        loss_t = (ce_sum if not zl else ce_sum + z_sum) / b
        scale = 1.0
    loss = loss_t.item()
    if conditioning:
        g_norm = grad_norm * abs(d_ce)  # ||T p - t||
        ratio = lambda x: x / g_norm if g_norm > 0 else (0.0 if x == 0 else math.inf)
        fields = dict(
            loss_magnitude=(magnitude.mean().item() * abs(scale) / abs(loss) + cancel)
            if loss != 0
            else math.inf,
            grad_log_p=ratio(log_p_sq.sqrt().item()),
            grad_magnitude=ratio(magnitude_sq.sqrt().item()) + cancel,
            grad_subnormal=ratio(subnormal_sq.sqrt().item() * abs(d_ce) / incoming),  # of the scaled gradient
        )
    else:
        fields = dict.fromkeys(("loss_magnitude", "grad_log_p", "grad_magnitude", "grad_subnormal"), math.nan)
    if not (math.isfinite(loss) and grad_finite):
        return _no_reference(_infinite_loss(src, pr.targets, hard))
    keeps = tuple(x for x in (pr.targets, pr.keep, pr.w) if x is not None)
    of = lambda rows, z, t: _block(pr, rows, z, t, False).g.div_(d_ce)  # noqa: E731
    bounded = None
    if conditioning:

        def bounded(rows: slice, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
            part = _block(pr, rows, z, t, False, entries=True)
            return part.g.div_(d_ce), part.bound

    gradient = Gradient(src, of, grad_norm, keeps, kept, bounded, kept_bound)
    entry_targets = torch.where(keep, targets, -1) if hard and conditioning else None
    return Reference(
        loss=loss, gradient=gradient, **fields, losses=losses, denominator=d_ce, entry_targets=entry_targets
    )
