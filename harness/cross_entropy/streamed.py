"""How a float64 reference reads its inputs and gives its gradient back: block by block of rows,
so that no float64 [B, C] is held where it need not be (harness/cross_entropy/reference.py makes
the reference itself; harness/cross_entropy/footprint.py counts what this holds)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
from torch import Tensor

from harness.loss.errors import block_elements, row_slices

# Rows per block: about 2^18 float64 elements (2 MiB) per temporary, whatever C is. A block's
# pass holds 9 to 17 such temporaries at once (more with soft targets, options and the per-entry
# bound; measured with harness/measure/memory.py's tracker), so this sets the reference's
# transient bytes: 18 to 34 MiB. Smaller blocks cost a Python loop turn (about 60 ops) per
# block: 256 turns at B * C = 2^26, where 2^20 took as long (14 s a point either way, B = 2048,
# C = 32768) and peaked 60 MB higher in bf16 (1.21 GB against 1.15). On a GPU, 16x that
# (harness/loss/errors.py block_elements: a block's operations are launches).
_BLOCK_ELEMENTS = 1 << 18

# One block of a reference's inputs: (rows, logits [R, C] as stored, soft targets [R, C] or None).
Block = tuple[slice, Tensor, "Tensor | None"]


@dataclass(frozen=True)
class Rows:
    """Where a reference reads its inputs, block by block of rows: `walk()` yields blocks in
    order (made again at every walk where the inputs are a seeded draw, harness/cross_entropy/inputs.py
    Draw, so that no float64 [B, C] is ever held); `blocks()` splits them into the reference's
    own blocks. `dtype`: the logits' dtype as stored (from a narrower one, z - max is exact in
    float64)."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device
    walk: Callable[[], Iterator[Block]]

    @property
    def block_elements(self) -> int:
        return block_elements(_BLOCK_ELEMENTS, self.device)

    def blocks(self) -> Iterator[Block]:
        """The walk's blocks cut into blocks of about block_elements elements (views)."""
        for rows, z, t in self.walk():
            for part in row_slices(rows.stop - rows.start, self.shape[1], self.block_elements):
                at = slice(rows.start + part.start, rows.start + part.stop)
                yield at, z[part], None if t is None else t[part]


def rows_of(logits: Tensor, soft_targets: Tensor | None = None) -> Rows:
    """Rows over tensors held whole (tests, and any caller that has them): one block."""
    b, c = logits.shape
    return Rows((b, c), logits.dtype, logits.device, lambda: iter([(slice(0, b), logits, soft_targets)]))


@dataclass(frozen=True)
class Gradient:
    """The reference gradient [B, C] float64, streamed: `of` makes one block's from that block's
    inputs, `blocks()` walks the inputs and yields (rows, gradient block). Above
    reference._HOLD_BELOW_BYTES it is never held whole on the device (8 bytes an element: two of them, on
    the rounded and the unrounded inputs, were 4x fp32 logits, 8x bf16 ones); a comparison makes
    it again, block by block, beside the variant's. Below, `kept` holds it: smaller than the
    block temporaries a recompute would allocate, and a recompute per variant and mode took most
    of a small point's time. `norm`: ||gradient||_2, from the reference's own pass.

    `bounded`, where the reference has the conditioning (the rounded inputs'): a block's gradient
    and its per-entry bound together (`_Part.bound`, one pass), which the element-wise verdicts
    read (harness/loss/errors.py Entrywise); `kept_bound` beside `kept`."""

    rows: Rows
    of: Callable[[slice, Tensor, "Tensor | None"], Tensor]
    norm: float
    keeps: tuple[Tensor, ...] = ()  # what `of` reads besides its blocks (targets, kept rows, weights)
    kept: Tensor | None = None  # the whole gradient, where it is small enough to hold
    bounded: Callable[[slice, Tensor, "Tensor | None"], tuple[Tensor, Tensor]] | None = None
    kept_bound: Tensor | None = None

    def block(self, rows: slice, z: Tensor, t: Tensor | None) -> Tensor:
        """The gradient's rows `rows`, from their inputs z (and t) unless it is kept."""
        return self.kept[rows] if self.kept is not None else self.of(rows, z, t)

    def block_and_bound(self, rows: slice, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The gradient's rows and their per-entry bound (None where this reference has none)."""
        if self.kept is not None:
            return self.kept[rows], None if self.kept_bound is None else self.kept_bound[rows]
        if self.bounded is None:
            return self.of(rows, z, t), None
        return self.bounded(rows, z, t)

    def blocks(self) -> Iterator[tuple[slice, Tensor]]:
        for rows, g, _ in self.blocks_and_bounds(with_bounds=False):
            yield rows, g

    def blocks_and_bounds(self, with_bounds: bool = True) -> Iterator[tuple[slice, Tensor, Tensor | None]]:
        """(rows, gradient block, per-entry bound block or None) over the whole gradient."""
        if self.kept is not None:
            b, c = self.rows.shape
            for rows in row_slices(b, c, self.rows.block_elements):
                bound = self.kept_bound[rows] if with_bounds and self.kept_bound is not None else None
                yield rows, self.kept[rows], bound
            return
        for rows, z, t in self.rows.blocks():
            if with_bounds:
                yield rows, *self.block_and_bound(rows, z, t)
            else:
                yield rows, self.of(rows, z, t), None

    def whole(self) -> Tensor:
        """The gradient as one [B, C] tensor (tests, small points: holds it)."""
        b, c = self.rows.shape
        out = torch.empty((b, c), dtype=torch.float64, device=self.rows.device)
        for rows, g in self.blocks():
            out[rows] = g
        return out

    def scaled(self, s: float) -> Gradient:
        of, bounded = self.of, self.bounded
        return replace(
            self,
            of=lambda rows, z, t: of(rows, z, t) * s,
            norm=self.norm * abs(s),
            kept=None if self.kept is None else self.kept * s,
            bounded=None if bounded is None else lambda rows, z, t: _times(bounded(rows, z, t), s),
            kept_bound=None if self.kept_bound is None else self.kept_bound * abs(s),
        )


def _times(pair: tuple[Tensor, Tensor], s: float) -> tuple[Tensor, Tensor]:
    g, bound = pair
    return g * s, bound * abs(s)


def held(grad: Tensor) -> Gradient:
    """A gradient given whole (tests; a reference with no finite value holds an empty one)."""
    if grad.dim() != 2:
        grad = grad.reshape(grad.shape[0] if grad.dim() else 0, -1)
    norm = torch.linalg.vector_norm(grad).item()
    return Gradient(rows_of(grad), lambda r, z, t: z.to(torch.float64, copy=True), norm)
