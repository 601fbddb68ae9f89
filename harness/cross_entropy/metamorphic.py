"""The same loss asked another way: the point's inputs with the classes permuted and every logit
shifted, judged against their own float64 reference.

Cross-entropy is invariant under both: permuting the classes (with the targets and the class
weights) permutes the gradient and leaves the loss, and adding one constant to a row's logits
changes neither. A correct variant is therefore as accurate on the transformed inputs as on the
drawn ones; a bug that depends on where a class sits (a tile boundary, the last class, the
class index 0) or on the logits' absolute level (a clamp, an exp without the max subtracted,
lse - z_y formed whole) can pass on one and not the other.

The shifted logits are rounded to the dtype again, so the transformed inputs are a problem of
their own, not the drawn one's answer moved: each is judged against the float64 reference of
exactly what the variant received (harness/cross_entropy/reference.py), never against the other
call's result. So the relations add no tolerance of their own, and "loss >= 0" and "each gradient
row sums to 0" need no check apart: the element-wise verdict on each row bounds both (a row's
sum is within sqrt(C) times its error norm).
"""

from __future__ import annotations

import math

import torch

from harness.cross_entropy.inputs import Inputs, spatial_layout
from harness.cross_entropy.point import Point
from harness.loss.errors import row_blocks

# Where the permutation is drawn from: its own stream, so that it is the same at every run of a
# point and independent of the inputs' draws (harness/loss/weights.py OPTIONS_STREAM is 2^62).
_PERMUTATION_STREAM = (1 << 62) + 7


def permutation(point: Point) -> torch.Tensor:
    """A seeded permutation of the point's C (padded) classes. An ignore_index inside the class
    range stays where it is: it is a label, and moving it would ignore other rows."""
    c = point.width
    g = torch.Generator().manual_seed(point.seed + _PERMUTATION_STREAM)
    perm = torch.randperm(c, generator=g)
    ii = point.ignore_index
    if 0 <= ii < c:
        at = int((perm == ii).nonzero()[0, 0])
        perm[at], perm[ii] = perm[ii].clone(), perm[at].clone()
    return perm


def shift(logits: torch.Tensor) -> float:
    """The constant added to every logit: the power of two at or above the largest finite |z|
    (1 when there is none), so that every shifted logit is positive and the row max moves far
    from 0 (a variant that forgets to subtract it overflows where the drawn logits did not)."""
    top = 0.0
    for rows in row_blocks(logits):  # the finite entries' copy block by block
        block = logits[rows]
        finite = block[torch.isfinite(block)]
        top = max(top, float(finite.abs().max())) if finite.numel() else top
    return 2.0 ** math.ceil(math.log2(top)) if top > 0 else 1.0


def transformed(point: Point, inputs: Inputs) -> tuple[Inputs, str]:
    """(the inputs with the classes permuted and the logits shifted, rounded to the point's
    dtype; a phrase that says what was done, for messages). Its draw is the point's: only the
    verdict's reference is made of it (no total error)."""
    perm = permutation(point).to(inputs.logits.device)
    c = shift(inputs.logits)
    z = torch.empty_like(inputs.logits)
    for rows in row_blocks(z):  # float64 block by block: whole, 2 copies at 8 bytes an element
        z[rows] = (inputs.logits[rows].to(torch.float64)[:, perm] + c).to(z.dtype)
    if inputs.kind == "hard":
        inverse = torch.argsort(perm)
        y = inputs.targets
        inside = (y >= 0) & (y < point.width) & (y != point.ignore_index)
        targets = torch.where(inside, inverse[y.clamp(0, point.width - 1)], y)
    else:
        targets = inputs.targets[:, perm].contiguous()
    weight = None if inputs.weight is None else inputs.weight[perm].contiguous()
    d = point.spatial_size
    laid_out = spatial_layout(z, d) if d else None
    return Inputs(
        z, targets, inputs.draw, inputs.kind, weight, spatial=laid_out
    ), f"the classes permuted and {c:g} added to every logit"
