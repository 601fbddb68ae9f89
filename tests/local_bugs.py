"""Bugs confined to one class, one row or the confident rows, written as user variants
(tests.local_bugs:NAME). Each returns the right loss and a gradient right everywhere but in a
small part of it, so that its norm-wise error over the whole [B, C] gradient is small (at C =
32000 a wrong column is 1/32000 of the entries): only the element-wise verdicts
(harness/loss/errors.py Entrywise) can see them. tests/cross_entropy/test_elementwise.py
requires each to be flagged wherever its element-wise error is 8x the correct variants'."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.tracker_bugs import target_gradient_rounded_before_subtracting

Damage = Callable[[Tensor, Tensor, Tensor], None]  # (gradient [B, C] fp32, logits, targets), in place


class _Damaged(torch.autograd.Function):
    """Forward: F.cross_entropy in fp32 (the loss right); backward: the fp32 gradient of a
    careful kernel, then `damage`, then the incoming gradient and the dtype."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, damage: Damage) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(logits, targets)
        ctx.damage = damage
        return F.cross_entropy(logits.float(), targets).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001
        logits, targets = ctx.saved_tensors
        z = logits.float()
        if targets.dtype == torch.int64:
            t = torch.zeros_like(z).scatter_(1, targets[:, None], 1.0)
        else:
            t = targets.float()
        g = (torch.softmax(z, dim=1) * t.sum(dim=1, keepdim=True) - t) / z.shape[0]
        ctx.damage(g, logits, targets)
        return (g * grad_output.float()).to(logits.dtype), None, None


def _last_class(g: Tensor, logits: Tensor, targets: Tensor) -> None:
    g[:, -1] = 0.0


def _last_row(g: Tensor, logits: Tensor, targets: Tensor) -> None:
    g[-1] = 0.0


def _tail_tile(g: Tensor, logits: Tensor, targets: Tensor) -> None:
    c = logits.shape[1]
    tail = c % 64 or 64
    g[:, c - tail :] *= 0.5


def last_class_gradient_dropped(logits: Tensor, targets: Tensor) -> Tensor:
    """The last class's gradient never stored (a backward whose last column falls outside its
    store mask): 100% wrong in one column, 1/C of the entries."""
    return _Damaged.apply(logits, targets, _last_class)


def last_row_gradient_dropped(logits: Tensor, targets: Tensor) -> Tensor:
    """The last row's gradient never written (a launch grid of B - 1 programs: a ceil-div off by
    one): 100% wrong in one row, 1/B of the entries."""
    return _Damaged.apply(logits, targets, _last_row)


def tail_tile_halved(logits: Tensor, targets: Tensor) -> Tensor:
    """The classes of the last, partial tile of 64 scaled by 1/2 (a tail that reuses the
    previous tile's scale): only C mod 64 columns wrong."""
    return _Damaged.apply(logits, targets, _tail_tile)


CATALOGUE = (
    last_class_gradient_dropped,
    last_row_gradient_dropped,
    tail_tile_halved,
    target_gradient_rounded_before_subtracting,
)
for _fn in CATALOGUE[:3]:
    _fn.harness_targets = {"soft", "hard"}


def upcast_to_fp32(logits: Tensor, targets: Tensor) -> Tensor:
    """Not a bug: F.cross_entropy on the logits upcast to fp32, the loss rounded back. The
    careful kernel a half-precision bug is measured against on a CPU, where F.cross_entropy in
    fp16/bf16 rounds its softmax to the dtype (docs/findings.md); its fp32 sum of C exponentials
    is a running one, as most kernels' are."""
    return F.cross_entropy(logits.float(), targets).to(logits.dtype)


upcast_to_fp32.harness_targets = {"soft", "hard"}
