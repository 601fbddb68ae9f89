"""The float64 reference of linear + cross-entropy: loss, dH and dW, in vocabulary chunks.

With z = H W^T (N x V), K the kept rows (target != ignore_index) and n = |K| (mean reduction):

    loss  = (1/n) sum_{b in K} (lse_b - z_{b,y_b})             lse_b = log sum_v exp(z_bv)
    dZ    = (softmax(z) - onehot(y)) / n on kept rows, 0 on ignored ones
    dH    = dZ W        [N, D]          dW = dZ^T H        [V, D]

computed in float64 on the rounded inputs without ever holding [N, V]: a [N, V] float64 tensor
is 17 GB at N = 8192, V = 262144. Two passes over chunks of the vocabulary:

  1. z_chunk = H W_chunk^T; an online max and rescaled sum per row give lse_b (the first
     family's `online` recurrence, in float64);
  2. z_chunk again; dZ_chunk = exp(z_chunk - lse) minus the one-hot, scaled by 1/n;
     dH += dZ_chunk W_chunk and dW_chunk = dZ_chunk^T H (each chunk of dW written once).

The target logits z_{b,y_b} are dot products of H's rows with the gathered W rows. Everything is
float64 arithmetic on float64 copies of the inputs: each product of two fp32 (or narrower)
numbers is exact in float64, and a dot product of D terms is accurate to ~D * 2^-53 of the sum
of |terms|, far below any dtype's unit roundoff. No cancellation-free rewriting as the first
family's reference does (harness/cross_entropy/reference.py): with Gaussian logits and uniform
targets the loss lse - z_y is ~ln V, never a small difference of large numbers, and the
gradient's entries are as the data makes them. tests/test_linear_ce.py checks it against float64
autograd on the materialised logits.

Alongside the values it records the conditioning the tolerance needs (tolerance.py): the mean
over kept rows of max_v |z_bv| (the size of the logits next to the loss), and ||P|| / ||P - Y||
(how much of dZ is the softmax, which carries the logits' rounding, rather than the exact
one-hot: ~0.05 for spread-out rows, ~1 for confident ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Classes per chunk: a [N, chunk] float64 block of at most 2^24 elements (128 MiB), so the
# reference's temporaries stay small next to the [V, D] float64 dW it returns.
BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Reference:
    loss: float  # mean over kept rows (NaN when every row is ignored)
    losses: Tensor  # [N] float64 per-row losses, 0 on ignored rows
    grad_hidden: Tensor  # [N, D] float64
    grad_weight: Tensor  # [V, D] float64
    grad_hidden_norm: float  # ||dH||_2 (Frobenius)
    grad_weight_norm: float
    logit_max: float  # mean over kept rows of max_v |z_bv|: how large the logits are
    p_share: float  # ||P|| / ||P - Y|| over kept rows: the softmax's share of the gradient
    kept: int  # rows whose target is not ignored
    finite: bool  # a finite loss exists (some row kept, every value finite)
    missing: str = ""  # why not, when not finite


def chunk_size(rows: int, classes: int) -> int:
    return max(1, min(classes, BLOCK_ELEMENTS // max(rows, 1)))


def reference(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int) -> Reference:
    """hidden [N, D], weight [V, D] in any float dtype (upcast here), targets [N] int64."""
    h = hidden.to(torch.float64)
    w = weight.to(torch.float64)
    n_rows, v = h.shape[0], w.shape[0]
    kept_mask = targets != ignore_index
    kept = int(kept_mask.sum().item())
    safe_t = torch.where(kept_mask, targets, torch.zeros_like(targets))
    step = chunk_size(n_rows, v)

    # Pass 1: lse per row, online over the chunks; max |z| per row for the tolerance.
    m = torch.full((n_rows,), -math.inf, dtype=torch.float64, device=h.device)
    s = torch.zeros(n_rows, dtype=torch.float64, device=h.device)
    zmax = torch.zeros(n_rows, dtype=torch.float64, device=h.device)
    for lo in range(0, v, step):
        z = h @ w[lo : lo + step].T
        new_m = torch.maximum(m, z.max(dim=1).values)
        s = s * torch.exp(m - new_m) + torch.exp(z - new_m[:, None]).sum(dim=1)
        m = new_m
        zmax = torch.maximum(zmax, z.abs().max(dim=1).values)
        del z
    lse = m + torch.log(s)
    z_target = (h * w[safe_t]).sum(dim=1)
    losses = torch.where(kept_mask, lse - z_target, torch.zeros_like(lse))

    # Pass 2: the gradients, one chunk of dZ at a time.
    scale = 1.0 / kept if kept else 0.0
    row_scale = kept_mask.to(torch.float64) * scale
    dh = torch.zeros_like(h)
    dw = torch.empty_like(w)
    p_sq = dz_sq = 0.0  # ||P||^2 and ||P - Y||^2 over the kept rows, for p_share
    for lo in range(0, v, step):
        hi = min(lo + step, v)
        dz = torch.exp(h @ w[lo:hi].T - lse[:, None])
        p_sq += float((dz.square().sum(dim=1) * kept_mask).sum().item())
        inside = kept_mask & (safe_t >= lo) & (safe_t < hi)
        rows = inside.nonzero()[:, 0]
        dz[rows, safe_t[rows] - lo] -= 1.0
        dz_sq += float((dz.square().sum(dim=1) * kept_mask).sum().item())
        dz.mul_(row_scale[:, None])
        dh.addmm_(dz, w[lo:hi])
        dw[lo:hi] = dz.T @ h
        del dz

    loss = float(losses.sum().item()) / kept if kept else math.nan
    finite = kept > 0 and math.isfinite(loss) and bool(torch.isfinite(dh).all() and torch.isfinite(dw).all())
    missing = (
        ""
        if finite
        else ("every row is ignored: the mean loss is 0/0" if kept == 0 else "non-finite float64 result")
    )
    return Reference(
        loss=loss,
        losses=losses,
        grad_hidden=dh,
        grad_weight=dw,
        grad_hidden_norm=float(torch.linalg.vector_norm(dh).item()),
        grad_weight_norm=float(torch.linalg.vector_norm(dw).item()),
        logit_max=float(zmax[kept_mask].mean().item()) if kept else 0.0,
        p_share=math.sqrt(p_sq / dz_sq) if dz_sq > 0 else 0.0,
        kept=kept,
        finite=finite,
        missing=missing,
    )
