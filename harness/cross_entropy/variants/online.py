"""The online-softmax normaliser: one pass with a running max and a rescaled running sum.

  online   for each class block: m' = max(m, max z_blk); d = d * exp(m - m') + sum exp(z_blk - m')
           then lse = m + log d; custom backward from the saved lse

This is the recurrence of Milakov & Gimelshein (2018) that fused GPU kernels (Liger-Kernel,
flash-attention) use to read the logits once; here the blocks run in a Python loop, so it
shows the recurrence's numerics, not its speed. Each rescale multiplies d by exp(m - m') <= 1,
so d never overflows; the cost is one extra rounding of d per block where the max moves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.cross_entropy.variants import register
from harness.cross_entropy.variants.chunked import acc_dtype, backward_saved, save_and_reduce, target_terms

BLOCK = 2048  # classes per step; smaller than chunked's CHUNK so the rescale runs more often


class OnlineCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy; logits [B, C] fp16/bf16/fp32/fp64, targets [B] int64 or [B, C]."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # noqa: ANN001
        acc = acc_dtype(logits.dtype)
        b, c = logits.shape
        m = torch.full((b,), -torch.inf, dtype=acc, device=logits.device)
        d = torch.zeros(b, dtype=acc, device=logits.device)
        total = torch.zeros_like(d)
        zy = torch.zeros_like(d)
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            z = logits[:, lo:hi].to(acc)
            m_new = torch.maximum(m, z.amax(dim=1))
            # exp(-inf - finite) = 0 on the first block, so d starts cleanly at 0.
            d = d * torch.exp(m - m_new) + torch.exp(z - m_new[:, None]).sum(dim=1)
            m = m_new
            t_part, zy_part = target_terms(logits, targets, lo, hi)
            total += t_part
            zy += zy_part
        return save_and_reduce(ctx, logits, targets, m + torch.log(d), total, zy)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        return backward_saved(ctx, grad_out, BLOCK)


@register(
    "online",
    description=f"single-pass online softmax (running max, rescaled sum) in blocks of "
    f"{BLOCK}, custom backward from the saved lse",
)
def online(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C]; targets: [B] int64 or [B, C] probabilities in the logits' dtype."""
    return OnlineCrossEntropy.apply(logits, targets)
