"""Inputs no variant can change: a kept copy, a bitwise check after each variant, a restore.

Every (variant, mode) must receive the point's inputs exactly as they were made. In-place kernels
exist by design (Liger-Kernel writes the gradient into the logits' storage during the forward),
and a variant that writes into its inputs silently would make every later variant at the point
look wrong. So:

  - `Guard` keeps one copy of the logits and targets per point (1x the logits in memory) and,
    after a variant's calls, compares bit patterns (one read of each; NaN-safe, unlike ==). A
    difference is reported and the inputs are restored before the next variant.
  - A variant that declares `overwrites_input` is called through a `Feed` that hands it a fresh
    copy before every call, made by `Feed.refresh` outside the timed interval and outside the
    memory measurement (on CPU and CUDA alike), instead of a clone inside its own timed call.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """The tensor's bit pattern as integers of the same width (so NaN == NaN, -0 != +0)."""
    return t.view(_SAME_WIDTH_INT[t.element_size()]) if t.is_floating_point() else t


def same_bits(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


class Guard:
    """Kept copies of one point's inputs; `changed` names what a variant wrote into."""

    def __init__(self, *tensors: Tensor, names: tuple[str, ...]) -> None:
        self._live = tensors
        self._kept = tuple(t.clone() for t in tensors)
        self._names = names

    def changed(self) -> list[str]:
        """Names of the inputs that differ from their kept copy (restored on the way out)."""
        out = []
        for live, kept, name in zip(self._live, self._kept, self._names):
            if not same_bits(live, kept):
                live.copy_(kept)
                out.append(name)
        return out


class Feed:
    """The tensors one (variant, mode) is called with, by name (`feed.logits`, `feed.hidden`: the
    family's call reads them), and the keyword options it receives. `fresh`: the variant
    overwrites its inputs, so each `refresh` gives it new copies of the originals (a None, such
    as a point's absent bias, stays None)."""

    def __init__(self, fresh: bool = False, kwargs: dict | None = None, **tensors: Tensor | None) -> None:
        self._sources = dict(tensors)
        self.fresh = fresh
        self.kwargs = dict(kwargs or {})  # passed to the variant by keyword on every call (options)
        self.__dict__.update(tensors)

    def refresh(self) -> None:
        """Before each call, outside any timed or tracked interval."""
        if self.fresh:
            for name, t in self._sources.items():
                setattr(self, name, None if t is None else t.clone())

    def release(self) -> None:
        """After each call: a fresh copy is not kept between calls, so that the point's variants,
        timed side by side (harness/runner.py), do not each hold one."""
        if self.fresh:
            self.__dict__.update(self._sources)
