"""The online-softmax normaliser: one pass with a running max and a rescaled running sum.

  online   for each class block: m' = max(m, max z_blk); d = d * exp(m - m') + sum exp(z_blk - m')
           then lse = m + log d; custom backward from the saved lse

This is the recurrence of Milakov & Gimelshein (2018) that fused GPU kernels (Liger-Kernel,
flash-attention) use to read the logits once; here the blocks run in a Python loop, so it
shows the recurrence's numerics, not its speed. Each rescale multiplies d by exp(m - m') <= 1,
so d never overflows; the cost is one extra rounding of d per block where the max moves.

Loss options: all six (ignore_index, label_smoothing, z_loss, softcap, weight, reduction), the
same way as `chunked` (whose module docstring has the formulas) and through its shared helpers:
each block is soft-capped as it is read, so the running max and sum are those of the capped
logits; the effective targets' per-row sums are gathered block by block alongside; backward
recomputes the capped softmax per block from the saved lse. Every option at its default leaves
the plain loss's arithmetic unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.cross_entropy.variants import register
from harness.cross_entropy.variants.chunked import (
    OPTIONS,
    Targets,
    acc_dtype,
    backward_saved,
    options_apply,
    read_chunk,
    save_and_reduce,
)
from harness.loss.options import Keywords, LossOptions, Unpack

BLOCK = 2048  # classes per step; smaller than chunked's CHUNK so the rescale runs more often


class OnlineCrossEntropy(torch.autograd.Function):
    """Cross-entropy with options; logits [B, C] fp16/bf16/fp32/fp64, targets [B] int64 or [B, C]."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, opts: LossOptions) -> Tensor:  # noqa: ANN001
        acc = acc_dtype(logits.dtype)
        b, c = logits.shape
        m = torch.full((b,), -torch.inf, dtype=acc, device=logits.device)
        d = torch.zeros(b, dtype=acc, device=logits.device)
        tg = Targets(logits, targets, opts.ignore_index, opts.label_smoothing, opts.weight)
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            z = read_chunk(logits, lo, hi, acc, opts.softcap)
            m_new = torch.maximum(m, z.amax(dim=1))
            # exp(-inf - finite) = 0 on the first block, so d starts cleanly at 0. A row whose
            # blocks so far are all masked (-inf) has m_new = -inf, and -inf - -inf is NaN: shift
            # by 0 there instead, which leaves d at 0 (flash-attention #1930: NaN when most logits
            # are -inf, depending on where the finite ones fall in the blocks).
            shift = torch.where(torch.isneginf(m_new), 0.0, m_new)
            d = d * torch.exp(m - shift) + torch.exp(z - shift[:, None]).sum(dim=1)
            m = m_new
            tg.add(z, lo, hi)
        return save_and_reduce(ctx, logits, tg, m + torch.log(d), opts)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        return backward_saved(ctx, grad_out, BLOCK)


@register(
    "online",
    spatial=True,
    options=OPTIONS,
    description=f"single-pass online softmax (running max, rescaled sum) in blocks of "
    f"{BLOCK}, custom backward from the saved lse",
)
def online(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    """logits: [B, C] or (N, C, d); targets: [B] (or (N, d)) int64 or [B, C] probabilities in the
    logits' dtype; options as F.cross_entropy's, plus z_loss and softcap (chunked's module
    docstring)."""
    return options_apply(OnlineCrossEntropy, logits, targets, options)
