"""Cross-entropy over class chunks with a custom backward: memory of one gradient, nothing more.

  chunked   two passes over class chunks (row max, then sum of exp(z - max)), per-row
            statistics only; backward recomputes softmax chunk by chunk into the gradient

Forward holds [B, CHUNK] temporaries and [B] statistics; backward holds the gradient [B, C]
(unavoidable: it is the output) plus [B, CHUNK] temporaries. F.cross_entropy instead keeps the
[B, C] log-probabilities for backward and builds the gradient from them, so at large C its
peak is about one extra [B, C] buffer above this one (tests/cross_entropy/test_chunked_memory.py).

Loss options (harness/loss/options.py): all six, with F.cross_entropy's meaning, and
z-loss as Liger's lse_square_scale. Per row, with effective targets q (label smoothing and class
weights folded in, 0 on ignored rows) and Q = sum_c q_c,

    loss_b = Q_b lse_b - sum_c q_bc z_bc + z_loss lse_b^2
    dloss_b/dz_bc = (Q_b + 2 z_loss lse_b) p_bc - q_bc

so the plain loss's per-row statistics carry over: Q replaces T = sum_c t_c, sum_c q_c z_c
replaces t.z, both gathered chunk by chunk (q is never formed as [B, C]). Softcap is applied to
each chunk as it is read, in forward and again in backward (tanh recomputed, no capped copy of
the logits kept), and the backward multiplies by its derivative 1 - tanh^2. ignore_index rows
get Q = 0 and a zero row scale, so their loss and gradient are exactly 0. Under mean, the
cross-entropy part is divided by the rows' summed target weights (the count of kept rows
without weights, B for soft targets) and the z-loss part by the count of kept rows.

With every option at its default the arithmetic is the plain loss's, operation for operation.

The per-row helpers below (target terms, reduction, block-wise backward) are shared with `online`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.declared import REDUCTIONS
from harness.loss.options import Keywords, LossOptions, Unpack, capped

OPTIONS = {
    "ignore_index",
    "label_smoothing",
    "z_loss",
    "softcap",
    "weight",
    "reduction",
    "num_items_in_batch",
}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32 for fp16/bf16/fp32 (as PyTorch's CUDA kernels do), fp64 for fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def read_chunk(logits: Tensor, lo: int, hi: int, acc: torch.dtype, softcap: float | None) -> Tensor:
    """Classes lo:hi in the accumulation dtype, soft-capped when `softcap` is set: [B, hi - lo]."""
    z = logits[:, lo:hi].to(acc)
    # Capped in the accumulation dtype: one rounding of tanh, not a second one to fp16/bf16.
    return capped(z, softcap)


def cap_max(m: Tensor, softcap: float | None) -> Tensor:
    """The capped row max from the raw one: the cap is increasing, so it commutes with max
    (and the max is only a shift for exp, so a last-bit difference would not matter)."""
    return m if softcap is None else softcap * torch.tanh(m / softcap)


class Targets:
    """The effective targets q of one call, per row, without ever forming q as [B, C].

    hard y:  q_c = (1 - eps) w_y [c = y] + (eps / C) w_c     (0 on ignored rows)
    soft t:  q_c = w_c ((1 - eps) t_c + eps / C)              (w = 1 without weights)

    Forward: `add` each (capped) chunk, then `totals` gives Q_b = sum_c q_bc and sum_c q_bc z_bc.
    Backward: `subtract` takes q's block off the gradient block."""

    def __init__(
        self, logits: Tensor, targets: Tensor, ignore_index: int, eps: float, weight: Tensor | None
    ) -> None:
        self.acc = acc_dtype(logits.dtype)
        self.b, self.c = logits.shape
        self.eps = float(eps)
        self.w = None if weight is None else weight.to(self.acc)
        self.hard = targets.dtype == torch.int64
        zeros = torch.zeros(self.b, dtype=self.acc, device=logits.device)
        self.valid: Tensor | None = None  # [B] bool, hard targets only: not ignore_index
        self.w_y: Tensor | None = None  # [B] w at the target (0 on ignored rows)
        if self.hard:
            self.valid = targets != ignore_index
            # Ignored rows point at no class (-1 is outside every chunk), whatever ignore_index is.
            self.y = torch.where(self.valid, targets, torch.full_like(targets, -1))
            if self.w is not None:
                w_y = self.w.gather(0, self.y.clamp(0, self.c - 1))
                self.w_y = torch.where(self.valid, w_y, torch.zeros_like(w_y))
            self.zy = zeros  # z at the target, gathered from whichever chunk holds it
            self.zbar = zeros.clone() if self.eps else None  # sum_c w_c z_c, for the smoothing
        else:
            self.y = targets
            self.total = zeros
            self.zq = zeros.clone()

    def soft_block(self, lo: int, hi: int) -> Tensor:
        """q for classes lo:hi, soft targets: [B, hi - lo] in the accumulation dtype."""
        q = self.y[:, lo:hi].to(self.acc)  # may be the targets themselves: not changed in place
        if self.eps:
            q = (q * (1.0 - self.eps)).add_(self.eps / self.c)
        if self.w is not None:
            q = q.mul_(self.w[lo:hi]) if self.eps else q * self.w[lo:hi]
        return q

    def add(self, z: Tensor, lo: int, hi: int) -> None:
        """Accumulate the target terms of classes lo:hi; z: that chunk, capped, accumulation dtype."""
        if not self.hard:
            q = self.soft_block(lo, hi)
            self.total += q.sum(dim=1)
            self.zq += (q * z).sum(dim=1)
            return
        inside = (self.y >= lo) & (self.y < hi)
        idx = (self.y - lo).clamp(0, hi - lo - 1)[:, None]
        z_y = z.gather(1, idx)[:, 0]
        self.zy += torch.where(inside, z_y, torch.zeros_like(z_y))
        if self.zbar is not None:
            self.zbar += (z if self.w is None else z * self.w[lo:hi]).sum(dim=1)

    def totals(self) -> tuple[Tensor, Tensor]:
        """(Q, sum_c q_c z_c): [B] each, accumulation dtype, after every chunk was added."""
        if not self.hard:
            return self.total, self.zq
        total = ((self.y >= 0) & (self.y < self.c)).to(self.acc)  # the one-hot's sum: 1, or 0 if ignored
        zq = self.zy
        if self.w_y is not None:
            total = total * self.w_y
            zq = zq * self.w_y
        if self.eps:
            spread = self.eps / self.c * (self.c if self.w is None else self.w.sum())
            zero = torch.zeros_like(zq)
            total = (1.0 - self.eps) * total + torch.where(self.valid, spread, zero)
            zq = (1.0 - self.eps) * zq + torch.where(self.valid, self.eps / self.c * self.zbar, zero)
        return total, zq

    def subtract(self, g: Tensor, lo: int, hi: int, rows: Tensor) -> None:
        """g[:, lo:hi] -= q (in place), the gradient block; ignored rows are zeroed by the caller."""
        if not self.hard:
            g -= self.soft_block(lo, hi)
            return
        if self.eps:
            g -= self.eps / self.c if self.w is None else self.eps / self.c * self.w[lo:hi]
        inside = (self.y >= lo) & (self.y < hi)
        at_y = 1.0 - self.eps  # 1.0 exactly without smoothing: the plain loss's "- 1"
        if self.w_y is not None:
            at_y = at_y * self.w_y[inside]
        g[rows[inside], self.y[inside] - lo] -= at_y


def save_and_reduce(ctx, logits: Tensor, tg: Targets, lse: Tensor, opts: LossOptions) -> Tensor:  # noqa: ANN001
    """Keep only per-row statistics for backward; return the reduced loss in the logits' dtype.
    lse: [B] in the accumulation dtype (of the capped logits)."""
    z_loss, reduction = opts.z_loss, opts.reduction
    total, zq = tg.totals()
    rows = total * lse - zq
    zrows = z_loss * lse * lse if z_loss else None
    kept = tg.b  # rows in the z-loss mean (and the CE mean, unweighted)
    if tg.valid is not None:  # `where`, not a product: an ignored row is 0 even if its lse is not finite
        zero = torch.zeros_like(rows)
        rows = torch.where(tg.valid, rows, zero)
        zrows = None if zrows is None else torch.where(tg.valid, zrows, zero)
        kept = tg.valid.sum().to(tg.acc)
    # CE mean: sum / B, then times B / kept: exactly 1 when no row is ignored, so the plain loss
    # keeps its bits (/ kept directly would differ on CUDA, where / B by a host scalar is a
    # multiply by 1/B) and no host sync asks whether any row is ignored. Weighted: / sum of w_y.
    ce_div = None
    if reduction == "mean" and tg.hard:
        ce_div = tg.w_y.sum() if tg.w_y is not None else torch.full_like(kept, tg.b) / kept
    # The targets (or their ignore-masked copy) go through save_for_backward, so that an
    # in-place change before backward is caught; tg keeps the [B] per-row pieces and options.
    ctx.save_for_backward(logits, tg.y, lse, total, ce_div, kept if torch.is_tensor(kept) else None)
    tg.y = None
    ctx.tg, ctx.z_loss, ctx.softcap, ctx.reduction = tg, z_loss, opts.softcap, reduction
    if reduction == "none":
        out = rows if zrows is None else rows + zrows
    elif reduction == "sum":
        out = rows.sum() if zrows is None else rows.sum() + zrows.sum()
    else:
        if ce_div is None:
            out = rows.sum() / tg.b
        elif tg.w_y is not None:
            out = rows.sum() / ce_div
        else:
            out = rows.sum() / tg.b * ce_div
        if zrows is not None:
            out = out + zrows.sum() / kept
    return out.to(logits.dtype)


def backward_saved(ctx, grad_out: Tensor, block: int) -> tuple:  # noqa: ANN001
    """The gradient from what `save_and_reduce` kept, recomputed `block` classes at a time:
    dloss/dz_bc = (s_b (Q_b p_bc - q_bc) + 2 z_loss lse_b s'_b p_bc) * cap'(z_bc), where s_b and
    s'_b are the reduction's scales of row b for the CE and z-loss parts (grad_output over
    their means' divisors, which differ under class weights), both 0 on ignored rows."""
    logits, y, lse, total, ce_div, kept = ctx.saved_tensors
    tg: Targets = ctx.tg
    tg.y = y
    acc = lse.dtype
    g_out = grad_out.to(acc)
    if ctx.reduction == "mean":
        scale = g_out / tg.b
        if ce_div is not None:
            scale = g_out / ce_div if tg.w_y is not None else scale * ce_div
        z_scale = g_out / (kept if kept is not None else tg.b)
    else:  # sum: a scalar; none: one grad_output per row
        scale = z_scale = g_out
    scale = scale.expand(tg.b)
    zfac = 2.0 * ctx.z_loss * lse * z_scale if ctx.z_loss else None
    if tg.valid is not None:  # ignored rows: exactly 0, even where 1 / (kept rows) is inf
        zero = torch.zeros_like(lse)
        scale = torch.where(tg.valid, scale, zero)
        zfac = None if zfac is None else torch.where(tg.valid, zfac, zero)
    grad = torch.empty_like(logits)
    rows = torch.arange(tg.b, device=logits.device)
    c = logits.shape[1]
    for lo in range(0, c, block):
        hi = min(lo + block, c)
        # In-place steps below act only on fresh temporaries (never on `logits`, which .to(acc)
        # returns itself when it is already in acc), to keep the live [B, block] buffers few.
        z = logits[:, lo:hi].to(acc)
        if ctx.softcap is not None:
            # A masked class (-inf) gets z = -cap and so a p here, but its chain factor below,
            # 1 - tanh^2 = 1 - 1, is exactly 0: its gradient is 0, as `capped` has it.
            th = torch.tanh_(z / ctx.softcap)
            z = th * ctx.softcap
        p = torch.exp_(z - lse[:, None])
        del z
        g = p * total[:, None]
        tg.subtract(g, lo, hi, rows)
        g.mul_(scale[:, None])
        if zfac is not None:
            g.addcmul_(p, zfac[:, None])
        del p
        if ctx.softcap is not None:
            g.mul_(th.square_().neg_().add_(1.0))  # d(softcap tanh(z / softcap))/dz = 1 - tanh^2
            del th
        grad[:, lo:hi] = g
    return grad, None, None  # the targets and the options take no gradient


def options_apply(fn: type, logits: Tensor, targets: Tensor, options: Keywords) -> Tensor:
    """`fn.apply(logits, targets, LossOptions)` from the variant's keywords (`Keywords`; those
    not given at their defaults), after checking the reduction. Given num_items_in_batch
    (gradient accumulation), the sum over this micro-batch divided by it."""
    opts = LossOptions.of_keywords(options)
    if opts.reduction not in REDUCTIONS:
        raise ValueError(f"reduction={opts.reduction!r}: use one of {', '.join(REDUCTIONS)}")
    return _apply(fn, logits, targets, opts, options.get("num_items_in_batch"))


def _apply(fn: type, logits: Tensor, targets: Tensor, o: LossOptions, items: int | None) -> Tensor:
    if logits.dim() == 3:
        # F.cross_entropy's (N, C, d) form with targets (N, d): the rows [N d, C] are a copy (the
        # classes lie d apart), made inside the call and so timed as this variant's own cost;
        # autograd carries the gradient back to (N, C, d).
        n, c, d = logits.shape
        rows = _apply(fn, logits.transpose(1, 2).reshape(-1, c), targets.reshape(-1), o, items)
        return rows.view(n, d) if o.reduction == "none" else rows
    if items is not None:
        return _apply(fn, logits, targets, replace(o, reduction="sum"), None) / items
    return fn.apply(logits, targets, o)


CHUNK = 4096  # classes per chunk: [64, 4096] fp32 = 1 MiB temporaries, small next to C = 128k


class ChunkedCrossEntropy(torch.autograd.Function):
    """Cross-entropy with options; logits [B, C] fp16/bf16/fp32/fp64, targets [B] int64 or [B, C]."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, opts: LossOptions) -> Tensor:  # noqa: ANN001
        acc, softcap = acc_dtype(logits.dtype), opts.softcap
        b, c = logits.shape
        # Pass 1: the row max, so that no exp below can overflow.
        m = torch.full((b,), -torch.inf, dtype=acc, device=logits.device)
        for lo in range(0, c, CHUNK):
            m = torch.maximum(m, logits[:, lo : lo + CHUNK].amax(dim=1).to(acc))
        m = cap_max(m, softcap)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf row: keep exp finite
        # Pass 2: sum of exp(z - max), and the target terms, chunk by chunk.
        s = torch.zeros(b, dtype=acc, device=logits.device)
        tg = Targets(logits, targets, opts.ignore_index, opts.label_smoothing, opts.weight)
        for lo in range(0, c, CHUNK):
            hi = min(lo + CHUNK, c)
            z = read_chunk(logits, lo, hi, acc, softcap)
            s += torch.exp(z - m[:, None]).sum(dim=1)
            tg.add(z, lo, hi)
        return save_and_reduce(ctx, logits, tg, m + torch.log(s), opts)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        return backward_saved(ctx, grad_out, CHUNK)


@register(
    "chunked",
    spatial=True,
    options=OPTIONS,
    description=f"class chunks of {CHUNK}: two passes (max, sum), per-row stats, "
    "backward recomputes softmax per chunk (memory = the gradient)",
)
def chunked(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    """logits: [B, C] or (N, C, d); targets: [B] (or (N, d)) int64 or [B, C] probabilities in the
    logits' dtype; options as F.cross_entropy's, plus z_loss and softcap (module docstring)."""
    return options_apply(ChunkedCrossEntropy, logits, targets, options)
