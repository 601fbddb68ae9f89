"""Our own fused form: vocabulary chunks, an online lse, a custom backward that recomputes them.

  chunked_linear   never holds more than one [N, CHUNK] block of logits (and its fp32 softmax):
                   forward: z_c = H W_c^T (+ b_c) per chunk, upcast to fp32 (capped there under
                   a softcap), online max and rescaled sum per row -> lse [N] (fp32), target
                   logits picked from their chunk;
                   backward: z_c again, dZ_c = ((Q p - q) g_ce + 2 z_loss lse p g_z) sech^2 in
                   fp32 (the first family's formula, harness/loss/options.py; g the
                   incoming gradient over what the reduction divides by), dH += dZ_c W_c
                   (accumulated in fp32), dW_c = dZ_c^T H and db_c = column sums of dZ_c,
                   each written once per chunk.

It honours every option of the family: ignored rows, label smoothing, z-loss, softcap, class
weights, the three reductions and the bias. Label smoothing's share of the loss,
sum_v (eps / V) w_v (lse - z_v), is accumulated in the forward as sum_v w_v (m - z_v) with m the
running row max (rescaled when m grows: each term >= 0), so it never subtracts two large sums.

Memory: dH and dW (the outputs) plus an fp32 [N, D] accumulator, lse, and a few [N, CHUNK]
temporaries at a time, against the materialised forms' [N, V] logits and their gradient. The
price is the logits computed twice (8 N D V FLOP against 6). The logits are rounded to the
input dtype by the matmul, as F.linear's are (the same rounding as `materialized`): what
differs is the memory and the fp32 softmax.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register
from harness.loss.options import Keywords, LossOptions, Unpack

# Classes per chunk: at N = 8192 a [N, 4096] fp32 block is 128 MiB, against 8.6 GB for the
# whole fp32 logits at V = 262144 (the first family's `chunked` uses the same width).
CHUNK = 4096


def _target_logits(z: Tensor, targets: Tensor, lo: int, out: Tensor) -> None:
    """out[b] = z[b, targets[b] - lo] for the rows whose target lies in this chunk."""
    inside = (targets >= lo) & (targets < lo + z.shape[1])
    rows = inside.nonzero()[:, 0]
    out[rows] = z[rows, targets[rows] - lo]


def _logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, lo: int, hi: int, acc: torch.dtype
) -> Tensor:
    """[N, hi - lo] in `acc`: the chunk's logits rounded to the input dtype, as F.linear's are."""
    return F.linear(hidden, weight[lo:hi], None if bias is None else bias[lo:hi]).to(acc)


class ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        class_weight: Tensor | None,
        opts: LossOptions,
        chunk: int,
    ) -> Tensor:
        n, v = hidden.shape[0], weight.shape[0]
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        eps, cap = opts.label_smoothing, opts.softcap
        cw = None if class_weight is None else class_weight.to(acc)
        m = torch.full((n,), -torch.inf, dtype=acc, device=hidden.device)
        s = torch.zeros(n, dtype=acc, device=hidden.device)
        z_target = torch.zeros(n, dtype=acc, device=hidden.device)
        spread = torch.zeros(n, dtype=acc, device=hidden.device)  # sum_v w_v (m - z_v) so far
        seen = 0.0  # sum of w_v over the chunks so far
        for lo in range(0, v, chunk):
            hi = min(lo + chunk, v)
            z = _logits(hidden, weight, bias, lo, hi, acc)
            if cap is not None:
                z.div_(cap).tanh_().mul_(cap)
            _target_logits(z, targets, lo, z_target)
            new_m = torch.maximum(m, z.amax(dim=1))
            z.sub_(new_m[:, None])  # z - m <= 0
            if eps:
                spread.add_(torch.where(torch.isfinite(m), seen * (new_m - m), 0.0))
                spread.sub_(z.sum(dim=1) if cw is None else z @ cw[lo:hi])
                seen += (hi - lo) if cw is None else float(cw[lo:hi].sum().item())
            s.mul_(torch.exp(m - new_m)).add_(z.exp_().sum(dim=1))
            m = new_m
            del z
        lse = m + torch.log(s)
        kept = targets != opts.ignore_index
        safe_t = torch.where(kept, targets, torch.zeros_like(targets))
        w_y = torch.ones_like(lse) if cw is None else cw[safe_t]
        w_sum = float(v) if cw is None else float(cw.sum().item())
        ce = (1.0 - eps) * w_y * (lse - z_target)
        if eps:
            ce = ce + eps / v * (spread + w_sum * (lse - m))
        zero = torch.zeros_like(lse)
        ce = torch.where(kept, ce, zero)
        z_rows = torch.where(kept, opts.z_loss * lse.square(), zero)
        if opts.reduction == "mean":  # 0/0 = NaN when every row is ignored, as F.cross_entropy
            d_ce = w_y[kept].sum().item() if cw is not None else float(kept.sum().item())
            d_z = float(kept.sum().item())
            loss = ce.sum() / d_ce + (z_rows.sum() / d_z if opts.z_loss else 0.0)
        else:
            d_ce = d_z = 1.0
            loss = (ce + z_rows) if opts.reduction == "none" else (ce + z_rows).sum()
        ctx.save_for_backward(hidden, weight, bias, targets, cw, lse)
        ctx.opts, ctx.chunk, ctx.d_ce, ctx.d_z, ctx.w_sum = opts, chunk, d_ce, d_z, w_sum
        return loss.to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, cw, lse = ctx.saved_tensors
        opts = ctx.opts
        v = weight.shape[0]
        acc = lse.dtype
        eps, zl, cap = opts.label_smoothing, opts.z_loss, opts.softcap
        kept = (targets != opts.ignore_index).to(acc)
        safe_t = torch.where(targets != opts.ignore_index, targets, torch.zeros_like(targets))
        g = grad_out.to(acc)  # a scalar, or [N] under reduction none
        # Per row: the CE part's and z-loss's factors (g over what the reduction divided by; 0 on
        # ignored rows), the coefficient of p in dZ, and what the target's entry loses.
        # Every row ignored under mean (d = 0): a zero gradient, as F.cross_entropy's.
        ce_scale = kept * (g / (ctx.d_ce or math.inf))
        z_scale = kept * (g / (ctx.d_z or math.inf))
        w_y = torch.ones_like(lse) if cw is None else cw[safe_t]
        coef = ((1.0 - eps) * w_y + eps / v * ctx.w_sum) * ce_scale + 2.0 * zl * lse * z_scale
        target_q = (1.0 - eps) * w_y * ce_scale
        dh = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)
        dw = torch.empty_like(weight)
        db = None if bias is None else torch.empty(v, dtype=acc, device=bias.device)
        for lo in range(0, v, ctx.chunk):
            hi = min(lo + ctx.chunk, v)
            dz = _logits(hidden, weight, bias, lo, hi, acc)
            chain = None
            if cap is not None:
                t = dz.div_(cap).tanh_()
                chain = 1.0 - t * t  # sech^2(z / cap): dz'/dz
                t.mul_(cap)
            dz.sub_(lse[:, None]).exp_().mul_(coef[:, None])
            if eps:
                q_smooth = eps / v * (1.0 if cw is None else cw[lo:hi])
                dz.sub_(ce_scale[:, None] * q_smooth)
            rows = ((targets >= lo) & (targets < hi) & (kept > 0)).nonzero()[:, 0]
            dz[rows, targets[rows] - lo] -= target_q[rows]
            if chain is not None:
                dz.mul_(chain)
                del chain
            if db is not None:
                db[lo:hi] = dz.sum(dim=0)
            dz_in = dz.to(hidden.dtype)  # the matmuls run in the input dtype (fp32 accumulate)
            del dz
            dh.add_(dz_in @ weight[lo:hi])
            torch.mm(dz_in.T, hidden, out=dw[lo:hi])
            del dz_in
        return dh.to(hidden.dtype), dw, None if db is None else db.to(bias.dtype), None, None, None, None


@register(
    "chunked_linear",
    targets={"hard"},
    options={"ignore_index", "label_smoothing", "z_loss", "softcap", "class_weight", "reduction", "bias"},
    description=f"vocabulary chunks of {CHUNK}: online lse in fp32, custom backward recomputes each "
    "chunk (never more than one [N, chunk] logits block); every option",
)
def chunked_linear(hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    opts = LossOptions.of_keywords(options)
    return ChunkedLinearCE.apply(hidden, weight, options.get("bias"), targets, opts.weight, opts, CHUNK)
