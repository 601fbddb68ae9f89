"""Megatron-LM's vocabulary-parallel cross-entropy, written out: three all-reduces forward, none
backward.

Each rank holds z [N, V_r] (computed in fp32, or fp64 for fp64 inputs). Forward:

  1. m = all-reduce MAX of the rows' local maxima: the global row max, so that every rank's
     exp(z - m) is <= 1 and the ranks' sums add on one scale;
  2. the target logit: the rank that holds row b's target contributes z_{b, y_b}, the others 0,
     all-reduce SUM (the rank test is start <= y < stop, never y < V_r);
  3. sum_v exp(z_v - m), with label smoothing's sum_v w_v z_v beside it in the same tensor,
     all-reduce SUM: lse = m + log(sum), and eps spreads over all V classes, not a shard's.

Backward needs no collective: dz = (Q p - q + 2 z_loss lse p) times the reduction's scale and
the incoming gradient (harness/loss/options.py has the formulas), each rank on its own columns,
from the p and lse it saved. PyTorch's test of `loss_parallel` asserts the same 3 and 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from harness.loss.options import Keywords, LossOptions, Unpack

from . import Shard, register

OPTIONS = {"ignore_index", "label_smoothing", "z_loss", "softcap", "weight", "reduction"}


def COLLECTIVES(point: Any) -> dict[str, list[tuple[str, int]]]:
    """3 all-reduces of N values in the compute precision; smoothing doubles the third's width."""
    el = 8 if point.dtype == "fp64" else 4
    n = point.batch_size
    third = 2 * n if point.label_smoothing > 0 else n
    return {"fwd": [("all_reduce", n * el), ("all_reduce", n * el), ("all_reduce", third * el)], "bwd": []}


class _VocabParallelCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor, shard: Shard, opts: LossOptions) -> Tensor:
        compute = torch.float64 if z.dtype == torch.float64 else torch.float32
        x = z.to(compute)
        cap = opts.softcap
        if cap:
            x = cap * torch.tanh(x / cap)
        group = shard.group
        m = x.max(dim=1).values
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)

        kept = targets != opts.ignore_index
        here = kept & (targets >= shard.start) & (targets < shard.stop)
        local = torch.where(here, targets - shard.start, 0)
        target_logit = torch.where(here, x.gather(1, local[:, None])[:, 0], 0.0)
        dist.all_reduce(target_logit, group=group)

        e = torch.exp(x - m[:, None])
        v = shard.num_classes
        weight = opts.weight
        w_local = None if weight is None else weight[shard.start : shard.stop].to(compute)
        eps = opts.label_smoothing
        sums = e.sum(dim=1, keepdim=True)
        if eps > 0:  # sum_v w_v z'_v over all V, reduced with the exponentials
            wz = (x * w_local).sum(dim=1, keepdim=True) if w_local is not None else x.sum(dim=1, keepdim=True)
            sums = torch.cat([sums, wz], dim=1)
        dist.all_reduce(sums, group=group)
        lse = m + torch.log(sums[:, 0])
        p = e / sums[:, :1]

        y = torch.where(kept, targets, 0)
        w_all = None if weight is None else weight.to(compute)
        wy = torch.ones_like(lse) if w_all is None else w_all[y]
        w_sum = float(v) if w_all is None else float(w_all.sum())
        q_target = (1.0 - eps) * wy
        ce = q_target * (lse - target_logit)
        if eps > 0:
            ce = ce + (eps / v) * (w_sum * lse - sums[:, 1])
        zl = opts.z_loss * lse * lse
        keptf = kept.to(compute)
        if opts.reduction == "mean":
            ce_scale = 1.0 / (wy * keptf).sum()
            zl_scale = 1.0 / keptf.sum()
        else:
            ce_scale = zl_scale = torch.ones((), dtype=compute, device=z.device)
        rows = (ce * ce_scale + zl * zl_scale) * keptf
        ctx.save_for_backward(p, lse, local, here, keptf, wy, ce_scale, zl_scale, z)
        ctx.opts, ctx.w_local, ctx.eps, ctx.w_sum, ctx.v = opts, w_local, eps, w_sum, v
        return rows

    @staticmethod
    def backward(ctx, grad_rows: Tensor):
        p, lse, local, here, keptf, wy, ce_scale, zl_scale, z = ctx.saved_tensors
        opts, eps, v = ctx.opts, ctx.eps, ctx.v
        q_smooth = (eps / v) * (ctx.w_local if ctx.w_local is not None else torch.ones_like(p[0]))
        big_q = (1.0 - eps) * wy + (eps / v) * ctx.w_sum
        g = big_q[:, None] * p - q_smooth
        # the target's own -(1 - eps) w_y, on the rank that holds it
        hit = torch.zeros_like(p).scatter_(1, local[:, None], ((1.0 - eps) * wy * here)[:, None])
        g = (g - hit) * ce_scale + 2.0 * opts.z_loss * lse[:, None] * p * zl_scale
        g = g * (keptf * grad_rows)[:, None]
        cap = opts.softcap
        if cap:
            t = torch.exp(-2.0 * (z.to(g.dtype) / cap).abs())
            g = g * (4.0 * t / (1.0 + t) ** 2)  # sech^2, not 1 - tanh^2 (which cancels)
        return g.to(z.dtype), None, None, None


@register(
    "megatron",
    options=OPTIONS,
    description="Megatron-style: all-reduce the max, target logit and sum of exponentials; local backward",
)
def megatron(logits: Tensor, targets: Tensor, shard: Shard, **options: Unpack[Keywords]) -> Tensor:
    opts = LossOptions.of_keywords(options)
    rows = _VocabParallelCE.apply(logits, targets, shard, opts)
    out = rows if opts.reduction == "none" else rows.sum()
    return out.to(logits.dtype)
