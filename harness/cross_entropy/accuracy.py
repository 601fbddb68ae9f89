"""Errors of one cross-entropy result against the float64 reference, and the status they imply
(the relative errors and the per-row upstream gradient are the loss core's:
harness/loss/errors.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.cross_entropy.reference import Reference
from harness.cross_entropy.tolerance import tolerance
from harness.loss.errors import rel_err, rows_rel_err, upstream


@dataclass(frozen=True)
class Accuracy:
    loss: float  # the loss; with reduction none, the mean of the per-row losses
    loss_ref: float
    loss_rel_err: float | None  # |loss - ref| / |ref| (absolute error when ref == 0); with
    #                             reduction none, ||losses - ref||_2 / ||ref||_2 over the rows
    grad_rel_err: float | None  # ||g - g_ref||_2 / ||g_ref||_2, fwd_bwd only
    loss_tolerance: float | None  # the thresholds this row was judged against
    grad_tolerance: float | None
    nan_count: int  # over the loss and every gradient element
    inf_count: int
    status: str  # ok | inaccurate | nonfinite | no_reference
    message: str = ""


def upstream_scaled(ref: Reference, loss_dims: int) -> Reference:
    """The reference whose gradient a variant's is compared with: as it is for a scalar loss; for
    per-row losses (reduction none) each row of the gradient of their sum times `upstream`'s
    entry, the gradient the runner asks for (a row's loss depends on its own logits alone)."""
    if loss_dims == 0 or ref.grad.dim() != 2:
        return ref
    return dataclasses.replace(ref, grad=ref.grad * upstream(ref.grad.shape[0], ref.grad)[:, None])


def grad_rel_err(grad: Tensor, ref: Reference) -> float:
    """||grad - ref.grad||_2 / ||ref.grad||_2, in float64 (grad: [B, C] any float dtype)."""
    diff = torch.linalg.vector_norm(grad.to(torch.float64).sub_(ref.grad)).item()
    return diff / ref.grad_norm if ref.grad_norm != 0 else diff


def assess(loss: Tensor, grad: Tensor | None, ref: Reference, dtype_name: str) -> Accuracy:
    """loss: 0-dim tensor, or [B] per-row losses (reduction none); grad: [B, C] or None (fwd mode)."""
    losses = loss.detach().to(torch.float64)
    value = float(losses.mean().item())
    nan = int(torch.isnan(losses).sum().item())
    inf = int(torch.isinf(losses).sum().item())
    if grad is not None and not bool(torch.isfinite(grad).all()):  # count only when there is some
        nan += int(torch.isnan(grad).sum().item())
        inf += int(torch.isinf(grad).sum().item())
    if not ref.finite:
        return Accuracy(value, ref.loss, None, None, None, None, nan, inf, "no_reference", ref.missing)
    l_err = rel_err(value, ref.loss) if losses.dim() == 0 else rows_rel_err(losses, ref.losses)
    g_err = grad_rel_err(grad, upstream_scaled(ref, losses.dim())) if grad is not None else None
    tol = tolerance(ref, dtype_name)
    if nan or inf:
        status = "nonfinite"
    elif l_err > tol.loss or (g_err is not None and g_err > tol.grad):
        status = "inaccurate"
    else:
        status = "ok"
    return Accuracy(
        value, ref.loss, l_err, g_err, tol.loss, tol.grad if grad is not None else None, nan, inf, status
    )
