"""Relative errors, and the incoming gradient a per-row loss is differentiated with: the parts
of judging a result against float64 that every family shares (each family's `assess` adds
its own gradients and tolerance)."""

from __future__ import annotations

import torch
from torch import Tensor


def upstream(rows: int, like: Tensor) -> Tensor:
    """The incoming gradient a reduction="none" loss is differentiated with: 1, 1.25, 1.5, 1.75
    repeating over the rows, in `like`'s dtype and device. Not all ones: with ones, an
    implementation that sums its rows before applying the per-row gradient (a dW scaled after
    the sum, a broadcast of the first entry) gives the right answer and passes. Each value is
    exact in fp16 and bf16, so the reference uses the very numbers the variant received."""
    return (1.0 + 0.25 * (torch.arange(rows, device=like.device) % 4)).to(like.dtype)


def rel_err(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref) if ref != 0 else abs(value - ref)


def rows_rel_err(losses: Tensor, ref: Tensor) -> float:
    """||losses - ref||_2 / ||ref||_2 for per-row losses (reduction none), in float64."""
    diff = torch.linalg.vector_norm(losses.detach().to(torch.float64) - ref).item()
    norm = torch.linalg.vector_norm(ref).item()
    return diff / norm if norm != 0 else diff
