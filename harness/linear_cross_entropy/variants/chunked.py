"""Our own fused form: vocabulary chunks, an online lse, a custom backward that recomputes them.

  chunked_linear   never holds more than one [N, CHUNK] block of logits (and its fp32 softmax):
                   forward: z_c = H W_c^T per chunk, upcast to fp32, online max and rescaled
                   sum per row -> lse [N] (fp32), target logits picked from their chunk;
                   backward: z_c again, dZ_c = (exp(z_c - lse) - onehot) g / n in fp32,
                   dH += dZ_c W_c (accumulated in fp32), dW_c = dZ_c^T H written once per chunk.

Memory: dH and dW (the outputs) plus an fp32 [N, D] accumulator, lse, and a few [N, CHUNK]
temporaries at a time, against the materialised forms' [N, V] logits and their gradient. The
price is the logits computed twice (8 N D V FLOP against 6). The logits are rounded to the
input dtype by the matmul, as F.linear's are (the same rounding as `materialized`): what
differs is the memory and the fp32 softmax.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register

# Classes per chunk: at N = 8192 a [N, 4096] fp32 block is 128 MiB, against 8.6 GB for the
# whole fp32 logits at V = 262144 (the first family's `chunked` uses the same width).
CHUNK = 4096


def _target_logits(z: Tensor, targets: Tensor, lo: int, out: Tensor) -> None:
    """out[b] = z[b, targets[b] - lo] for the rows whose target lies in this chunk."""
    inside = (targets >= lo) & (targets < lo + z.shape[1])
    rows = inside.nonzero()[:, 0]
    out[rows] = z[rows, targets[rows] - lo]


class ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, chunk: int
    ) -> Tensor:
        n, v = hidden.shape[0], weight.shape[0]
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        m = torch.full((n,), -torch.inf, dtype=acc, device=hidden.device)
        s = torch.zeros(n, dtype=acc, device=hidden.device)
        z_target = torch.zeros(n, dtype=acc, device=hidden.device)
        for lo in range(0, v, chunk):
            z = F.linear(hidden, weight[lo : lo + chunk]).to(acc)
            _target_logits(z, targets, lo, z_target)
            new_m = torch.maximum(m, z.amax(dim=1))
            s.mul_(torch.exp(m - new_m)).add_(z.sub_(new_m[:, None]).exp_().sum(dim=1))
            m = new_m
            del z
        lse = m + torch.log(s)
        kept = targets != ignore_index
        n_kept = int(kept.sum().item())
        losses = torch.where(kept, lse - z_target, torch.zeros_like(lse))
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.ignore_index, ctx.chunk, ctx.n_kept = ignore_index, chunk, n_kept
        return (losses.sum() / n_kept).to(
            hidden.dtype
        )  # 0/0 = NaN when every row is ignored, as F.cross_entropy

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, targets, lse = ctx.saved_tensors
        v = weight.shape[0]
        acc = lse.dtype
        kept = targets != ctx.ignore_index
        # g / n on kept rows, 0 on ignored ones: one factor per row of dZ
        row_scale = kept.to(acc) * (grad_out.to(acc) / max(ctx.n_kept, 1))
        dh = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)
        dw = torch.empty_like(weight)
        for lo in range(0, v, ctx.chunk):
            hi = min(lo + ctx.chunk, v)
            dz = F.linear(hidden, weight[lo:hi]).to(acc)
            dz.sub_(lse[:, None]).exp_()
            inside = kept & (targets >= lo) & (targets < hi)
            rows = inside.nonzero()[:, 0]
            dz[rows, targets[rows] - lo] -= 1.0
            dz.mul_(row_scale[:, None])
            dz_in = dz.to(hidden.dtype)  # the matmuls run in the input dtype (fp32 accumulate)
            del dz
            dh.add_(dz_in @ weight[lo:hi])
            torch.mm(dz_in.T, hidden, out=dw[lo:hi])
            del dz_in
        return dh.to(hidden.dtype), dw, None, None, None


@register(
    "chunked_linear",
    targets={"hard"},
    options={"ignore_index"},
    description=f"vocabulary chunks of {CHUNK}: online lse in fp32, custom backward recomputes each "
    "chunk (never more than one [N, chunk] logits block)",
)
def chunked_linear(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
    return ChunkedLinearCE.apply(hidden, weight, targets, ignore_index, CHUNK)
