"""Cross-entropy over class chunks with a custom backward: memory of one gradient, nothing more.

  chunked   two passes over class chunks (row max, then sum of exp(z - max)), per-row
            statistics only; backward recomputes softmax chunk by chunk into the gradient

Forward holds [B, CHUNK] temporaries and [B] statistics; backward holds the gradient [B, C]
(unavoidable: it is the output) plus [B, CHUNK] temporaries. F.cross_entropy instead keeps the
[B, C] log-probabilities for backward and builds the gradient from them, so at large C its
peak is about one extra [B, C] buffer above this one (tests/test_chunked_memory.py).

The per-row helpers below (target terms, block-wise backward) are shared with `online`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.cross_entropy.variants import register


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32 for fp16/bf16/fp32 (as PyTorch's CUDA kernels do), fp64 for fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def target_terms(logits: Tensor, targets: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """(T, zy) contributions [B] of classes lo:hi: sum_c t_bc and sum_c t_bc z_bc.

    targets: [B] int64 (one-hot, T = 1 per row) or [B, C] probabilities."""
    acc = acc_dtype(logits.dtype)
    if targets.dtype == torch.int64:
        inside = (targets >= lo) & (targets < hi)
        idx = (targets - lo).clamp(0, hi - lo - 1)[:, None]
        z_y = logits[:, lo:hi].gather(1, idx)[:, 0].to(acc)
        return inside.to(acc), torch.where(inside, z_y, torch.zeros_like(z_y))
    t = targets[:, lo:hi].to(acc)
    return t.sum(dim=1), (t * logits[:, lo:hi].to(acc)).sum(dim=1)


def backward_blocks(
    logits: Tensor, targets: Tensor, lse: Tensor, total: Tensor, scale: Tensor, block: int
) -> Tensor:
    """dloss/dz = scale * (T_b * softmax(z)_bc - t_bc): [B, C] in the logits' dtype, written
    one class block at a time (block temporaries are [B, block] in the accumulation dtype).

    lse, total: [B] accumulation dtype; scale: 0-dim (grad_output / B)."""
    acc = lse.dtype
    grad = torch.empty_like(logits)
    b = logits.shape[0]
    rows = torch.arange(b, device=logits.device)
    for lo in range(0, logits.shape[1], block):
        hi = min(lo + block, logits.shape[1])
        g = torch.exp(logits[:, lo:hi].to(acc) - lse[:, None]) * total[:, None]
        if targets.dtype == torch.int64:
            inside = (targets >= lo) & (targets < hi)
            g[rows[inside], targets[inside] - lo] -= 1.0
        else:
            g -= targets[:, lo:hi].to(acc)
        grad[:, lo:hi] = g * scale
    return grad


def save_and_reduce(ctx, logits: Tensor, targets: Tensor, lse: Tensor, total: Tensor, zy: Tensor) -> Tensor:  # noqa: ANN001
    """Keep only the per-row statistics for backward; return the mean loss in the logits' dtype.
    lse, total (T_b), zy: [B] in the accumulation dtype."""
    ctx.save_for_backward(logits, targets, lse, total)
    return ((total * lse - zy).sum() / logits.shape[0]).to(logits.dtype)


def backward_saved(ctx, grad_out: Tensor, block: int) -> tuple[Tensor, None]:  # noqa: ANN001
    """The gradient from what `save_and_reduce` kept, recomputed `block` classes at a time."""
    logits, targets, lse, total = ctx.saved_tensors
    scale = grad_out.to(lse.dtype) / logits.shape[0]
    return backward_blocks(logits, targets, lse, total, scale, block), None


CHUNK = 4096  # classes per chunk: [64, 4096] fp32 = 1 MiB temporaries, small next to C = 128k


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy; logits [B, C] fp16/bf16/fp32/fp64, targets [B] int64 or [B, C]."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # noqa: ANN001
        acc = acc_dtype(logits.dtype)
        b, c = logits.shape
        # Pass 1: the row max, so that no exp below can overflow.
        m = torch.full((b,), -torch.inf, dtype=acc, device=logits.device)
        for lo in range(0, c, CHUNK):
            m = torch.maximum(m, logits[:, lo : lo + CHUNK].amax(dim=1).to(acc))
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf row: keep exp finite
        # Pass 2: sum of exp(z - max), and the target terms, chunk by chunk.
        s = torch.zeros(b, dtype=acc, device=logits.device)
        total = torch.zeros_like(s)
        zy = torch.zeros_like(s)
        for lo in range(0, c, CHUNK):
            hi = min(lo + CHUNK, c)
            s += torch.exp(logits[:, lo:hi].to(acc) - m[:, None]).sum(dim=1)
            t_part, zy_part = target_terms(logits, targets, lo, hi)
            total += t_part
            zy += zy_part
        return save_and_reduce(ctx, logits, targets, m + torch.log(s), total, zy)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        return backward_saved(ctx, grad_out, CHUNK)


@register(
    "chunked",
    description=f"class chunks of {CHUNK}: two passes (max, sum), per-row stats, "
    "backward recomputes softmax per chunk (memory = the gradient)",
)
def chunked(logits: Tensor, targets: Tensor) -> Tensor:
    """logits: [B, C]; targets: [B] int64 or [B, C] probabilities in the logits' dtype."""
    return ChunkedCrossEntropy.apply(logits, targets)
