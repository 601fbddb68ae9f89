"""Errors of one cross-entropy result against the float64 reference, and the status they imply
(the relative errors and the per-row upstream gradient are the loss core's:
harness/loss/errors.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.cross_entropy.reference import Reference
from harness.cross_entropy.tolerance import tolerance
from harness.loss import verdict
from harness.loss.errors import (
    SCALAR_UPSTREAM,
    Entrywise,
    NormDiff,
    nonfinite_counts,
    rel_err,
    rows_rel_err,
    upstream,
)


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
    status: str  # ok | inaccurate | unjudged | nonfinite | no_reference
    message: str = ""
    # Element-wise (harness/loss/errors.py Entrywise), fwd_bwd only: the worst row's and
    # class's relative gradient error, the target entries', and the worst of their error norms
    # over K_ENTRY times their per-entry bound norms (above 1: inaccurate).
    grad_row_err: float | None = None
    grad_class_err: float | None = None
    grad_target_err: float | None = None
    grad_entry_ratio: float | None = None


def row_scale(ref: Reference, loss_dims: int, scalar: float = SCALAR_UPSTREAM) -> Tensor | None:
    """The factor per row of the reference gradient a variant's is compared with: the incoming
    gradient it was differentiated with (harness/loss/errors.py `incoming`): `scalar` on every
    row for a scalar loss (the runner's SCALAR_UPSTREAM; None for 1); for per-row losses
    (reduction none) `upstream`'s entry (a row's loss depends on its own logits alone, so the
    reference's gradient of their sum, row b times upstream_b, is the gradient of their
    weighted sum)."""
    if not ref.finite or (loss_dims == 0 and scalar == 1.0):
        return None
    rows = ref.shape[0]
    if loss_dims == 0:
        return torch.full((rows,), scalar, dtype=torch.float64, device=ref.losses.device)
    return upstream(rows, ref.losses)


def grad_rel_err(grad: Tensor, ref: Reference, scale: Tensor | None = None) -> float:
    """||grad - s ref.grad||_2 / ||s ref.grad||_2, in float64 block by block, the reference's
    gradient made again beside each block of the variant's (grad: [B, C] any float dtype; s:
    `row_scale`, or 1)."""
    acc = NormDiff(scale)
    for rows, r in ref.gradient.blocks():
        acc.add(grad[rows], r, rows)
    return acc.rel(ref.grad_norm)


def entrywise(ref: Reference, scale: Tensor | None) -> Entrywise | None:
    """The element-wise accumulator for gradients judged against `ref` (None: it has no bound)."""
    g = ref.gradient
    if g.kept_bound is None and g.bounded is None:
        return None
    return Entrywise(ref.shape, scale, ref.entry_targets)


def grad_errors(grad: Tensor, ref: Reference, scale: Tensor | None = None) -> tuple[float, dict[str, float]]:
    """`grad_rel_err` and the element-wise columns (`element_columns`) in one walk: each block
    of the reference made once, with its per-entry bound."""
    acc, local = NormDiff(scale), entrywise(ref, scale)
    for rows, r, bound in ref.gradient.blocks_and_bounds(with_bounds=local is not None):
        acc.add(grad[rows], r, rows)
        if local is not None:
            local.add(grad[rows], r, bound, rows)
    return acc.rel(ref.grad_norm), element_columns(local)


def element_columns(local: Entrywise | None) -> dict[str, float]:
    """The Accuracy fields of an element-wise accumulator, its ratio over K_ENTRY."""
    if local is None:
        return {}
    cols = local.result()
    cols["grad_entry_ratio"] /= verdict.K_ENTRY
    cols["worst"] = local.worst  # for the message, not a column
    return cols


def assess(
    loss: Tensor,
    grad: Tensor | None,
    ref: Reference,
    dtype_name: str,
    grad_err: float | None = None,
    local: dict[str, float] | None = None,
) -> Accuracy:
    """loss: 0-dim tensor, or [B] per-row losses (reduction none); grad: [B, C] or None (fwd mode);
    grad_err, local: its `grad_errors`, where the caller measured them (the runner's: of an
    incoming gradient of SCALAR_UPSTREAM); else they are measured here as the gradient of the
    loss as returned (of `upstream` for per-row losses)."""
    losses = loss.detach().to(torch.float64)
    value = float(losses.mean().item())
    nan, inf = nonfinite_counts(losses)
    if grad is not None:
        nan, inf = (a + b for a, b in zip((nan, inf), nonfinite_counts(grad)))
    if not ref.finite:
        return Accuracy(value, ref.loss, None, None, None, None, nan, inf, "no_reference", ref.missing)
    l_err = rel_err(value, ref.loss) if losses.dim() == 0 else rows_rel_err(losses, ref.losses)
    g_err, local = (grad_err, dict(local or {})) if grad_err is not None else (None, {})
    if grad is not None and grad_err is None:
        g_err, local = grad_errors(grad, ref, row_scale(ref, losses.dim(), scalar=1.0))
    worst = local.pop("worst", "")
    tol = tolerance(ref, dtype_name)
    ratio = local.get("grad_entry_ratio")
    status = verdict.status(bool(nan or inf), [(l_err, tol.loss), (g_err, tol.grad)], local=ratio)
    message = ""
    if status == "inaccurate" and ratio is not None and ratio > 1 and g_err is not None and g_err <= tol.grad:
        message = _local_message(local, worst)
    return Accuracy(
        value,
        ref.loss,
        l_err,
        g_err,
        tol.loss,
        tol.grad if grad is not None else None,
        nan,
        inf,
        status,
        message,
        **local,
    )


def _local_message(local: dict[str, float], worst: str) -> str:
    """Why a row within its norm-wise bound is inaccurate: where, and the element-wise figures."""
    named = (("row", "grad_row_err"), ("class", "grad_class_err"), ("the targets", "grad_target_err"))
    parts = [f"{what} {local[k]:.3g}" for what, k in named if math.isfinite(local.get(k) or math.nan)]
    return (
        f"the gradient is within its norm-wise bound but not element-wise: {worst} is "
        f"{local['grad_entry_ratio']:.3g}x its per-entry bound (worst relative error of a "
        f"{', of a '.join(parts[:2])}{', of ' + parts[2] if len(parts) > 2 else ''})"
    )
