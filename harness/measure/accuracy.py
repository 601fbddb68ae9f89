"""Errors of one result against the float64 reference, and the status they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.dtypes import tolerance
from harness.reference import Reference

STATUSES = ("ok", "inaccurate", "nonfinite", "error", "oom", "unsupported")


@dataclass(frozen=True)
class Accuracy:
    loss: float
    loss_ref: float
    loss_rel_err: float           # |loss - ref| / |ref| (absolute error when ref == 0)
    grad_rel_err: float | None    # ||g - g_ref||_2 / ||g_ref||_2, fwd_bwd only
    nan_count: int                # over the loss and every gradient element
    inf_count: int
    status: str                   # ok | inaccurate | nonfinite


def rel_err(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref) if ref != 0 else abs(value - ref)


def grad_rel_err(grad: Tensor, ref: Reference) -> float:
    """||grad - ref.grad||_2 / ||ref.grad||_2, in float64 (grad: [B, C] any float dtype)."""
    diff = torch.linalg.vector_norm(grad.to(torch.float64).sub_(ref.grad)).item()
    return diff / ref.grad_norm if ref.grad_norm != 0 else diff


def assess(loss: Tensor, grad: Tensor | None, ref: Reference, dtype_name: str) -> Accuracy:
    """loss: 0-dim tensor; grad: [B, C] or None (fwd mode)."""
    value = float(loss.detach().to(torch.float64).item())
    nan = int(math.isnan(value))
    inf = int(math.isinf(value))
    g_err = None
    if grad is not None:
        if not bool(torch.isfinite(grad).all()):   # count only when there is something to count
            nan += int(torch.isnan(grad).sum().item())
            inf += int(torch.isinf(grad).sum().item())
        g_err = grad_rel_err(grad, ref)
    l_err = rel_err(value, ref.loss)
    tol = tolerance(dtype_name, ref.spread)
    if nan or inf:
        status = "nonfinite"
    elif l_err > tol or (g_err is not None and g_err > tol):
        status = "inaccurate"
    else:
        status = "ok"
    return Accuracy(value, ref.loss, l_err, g_err, nan, inf, status)
