"""Inputs no variant can change: a check after each variant, and a restore.

Every (variant, mode) must receive the point's inputs exactly as they were made. In-place kernels
exist by design (Liger-Kernel writes the gradient into the logits' storage during the forward),
and a variant that writes into its inputs silently would make every later variant at the point
look wrong. So:

  - `Guard` records each input as it was made and, after a variant's calls, checks it again. A
    difference is reported and the inputs are restored before the next variant. Small inputs
    (targets, class weights: under 1 MiB) are kept as copies and compared bit for bit. Large
    ones are not copied: a copy of the logits is 1x their bytes, held for the whole point, on the
    device the variants need. They are kept as a fingerprint instead: the sums of their bit
    patterns along each row and each column, in int64 (exact). Any write of one element moves
    its row's sum; a write that keeps every row and column sum needs +d and -d at the four
    corners of a rectangle, which no in-place kernel does by accident (they write whole rows,
    gradients or zeros). The restore remakes the inputs from the point's seed (`remake`): the
    draw is deterministic, so the remade tensors are the same bits.
  - A variant that declares `overwrites_input` is called through a `Feed` that hands it a fresh
    copy before every call, made by `Feed.refresh` outside the timed interval and outside the
    memory measurement (on CPU and CUDA alike), instead of a clone inside its own timed call.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from harness.loss.errors import row_blocks

_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """The tensor's bit pattern as integers of the same width (so NaN == NaN, -0 != +0)."""
    return t.view(_SAME_WIDTH_INT[t.element_size()]) if t.is_floating_point() else t


def same_bits(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


# Below this many bytes an input is kept as a copy; from it up, as a fingerprint (module docstring).
COPY_BELOW_BYTES = 1 << 20


def fingerprint(t: Tensor) -> tuple[Tensor, Tensor]:
    """(sums of each row's bit patterns [rows], sums of each column's [cols]), int64, for `t` seen
    as 2-D (rows = its leading dimension). Exact: at most 2^31 elements of at most 2^32 each
    fit in int64 (a 64-bit input's bits are summed modulo 2^64, which still moves with any one
    element)."""
    flat = _bits(t.detach()).reshape(t.shape[0], -1) if t.dim() else _bits(t.detach()).reshape(1, 1)
    rows = torch.empty(flat.shape[0], dtype=torch.int64, device=t.device)
    cols = torch.zeros(flat.shape[1], dtype=torch.int64, device=t.device)
    for lo_hi in row_blocks(flat):  # int64 temporaries of 8 MiB at most (128 MiB on a GPU)
        block = flat[lo_hi].to(torch.int64)
        rows[lo_hi] = block.sum(dim=1)
        cols += block.sum(dim=0)
    return rows, cols


class Guard:
    """One point's inputs as they were made; `changed` names what a variant wrote into, and
    restores it. remake: makes the inputs again, by the same names (needed only when an input is
    large enough to be fingerprinted rather than copied)."""

    def __init__(
        self,
        *tensors: Tensor,
        names: tuple[str, ...],
        remake: Callable[[], dict[str, Tensor]] | None = None,
        copy_below_bytes: int | None = None,
    ) -> None:
        self._live = tensors
        self._names = names
        self._remake = remake
        below = COPY_BELOW_BYTES if copy_below_bytes is None else copy_below_bytes
        copied = [remake is None or t.numel() * t.element_size() < below for t in tensors]
        self._kept = tuple(t.clone() if c else fingerprint(t) for t, c in zip(tensors, copied))

    def held_bytes(self) -> int:
        """What the guard holds: the copies and fingerprints."""
        kept = [k for x in self._kept for k in (x if isinstance(x, tuple) else (x,))]
        return sum(k.numel() * k.element_size() for k in kept)

    def changed(self) -> list[str]:
        """Names of the inputs that differ from how they were made (restored on the way out)."""
        out = []
        remade: dict[str, Tensor] | None = None
        for live, kept, name in zip(self._live, self._kept, self._names):
            if isinstance(kept, Tensor):
                if not same_bits(live, kept):
                    live.copy_(kept)
                    out.append(name)
                continue
            now = fingerprint(live)
            if not (torch.equal(now[0], kept[0]) and torch.equal(now[1], kept[1])):
                remade = remade if remade is not None else self._remake()
                live.copy_(remade[name])
                out.append(name)
        return out


class Feed:
    """The tensors one (variant, mode) is called with, by name (`feed.logits`, `feed.hidden`: the
    family's call reads them), and the keyword options it receives. `fresh`: the variant
    overwrites its inputs, so each `refresh` gives it new copies of the originals (a None, such
    as a point's absent bias, stays None)."""

    def __init__(
        self, fresh: bool = False, kwargs: dict | None = None, splits: int = 1, **tensors: Tensor | None
    ) -> None:
        self._sources = dict(tensors)
        self.fresh = fresh
        self.splits = splits  # micro-batches the rows are cut into, one call each (gradient accumulation)
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
