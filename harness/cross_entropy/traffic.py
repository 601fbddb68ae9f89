"""The byte model: the fewest bytes a mode must move through memory, for GB/s figures.

fwd reads the logits (B*C*bytes) and, for soft targets, the targets (B*C*bytes); hard targets
are B int64 indices (8*B bytes). fwd_bwd must also write the gradient (B*C*bytes). Writing
the scalar loss is negligible. With L = B*C*bytes(logits) and hard targets this is L for fwd
and 2L for fwd_bwd: the floor against which fast kernels are judged (README, Numerics §7).
"""

from __future__ import annotations

from harness.cross_entropy.point import Point


def bytes_moved(point: Point, mode: str) -> int:
    elem = point.torch_dtype.itemsize
    logits = point.batch_size * point.width * elem
    targets = logits if point.targets == "soft" else 8 * point.batch_size
    grad = logits if mode == "fwd_bwd" else 0
    return logits + targets + grad
