"""What a variant returned, checked before anything is measured on it: the same contract in
every family (a scalar for mean and sum, one loss per row for none)."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class BadResult(Exception):
    """The variant returned something that is not the loss the reduction asks for."""


def checked_loss(out: Any, reduction: str, rows: int) -> Tensor:
    """The loss as returned: a scalar (mean, sum) or the [rows] per-row losses (reduction none)."""
    if not isinstance(out, Tensor):
        raise BadResult(f"returned {type(out).__name__}, expected a tensor (the {reduction} loss)")
    if reduction == "none":
        if out.shape != (rows,):
            raise BadResult(f"returned shape {list(out.shape)} with reduction=none, expected [{rows}]")
        return out
    if out.numel() != 1:
        raise BadResult(
            f"returned a tensor of shape {list(out.shape)}, expected a scalar (the {reduction} loss)"
        )
    return out.reshape(())
