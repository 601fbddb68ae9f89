"""The byte and FLOP model: the fewest bytes each mode must move, and the matmul work it must do.

fwd reads H [N, D] and W [V, D] in the dtype and the N int64 targets (and the bias [V] and the
class weights [V] when the point has them); fwd_bwd also writes dH [N, D] and dW [V, D] (and db
[V]). The loss (a scalar, or N values under reduction none) is negligible. The logits are *not*
counted: never materialising them is the point of a fused kernel, so a materialised variant's
extra traffic (2 N V elements and more) shows as a low pct_of_floor, not in the model.

FLOPs: the logits are 2 N D V; the backward's dH = dZ W and dW = dZ^T H are 2 N D V each, so
fwd_bwd is at least 6 N D V (a fused kernel that recomputes the logits in the backward does 8).
At N = 8192, D = 4096, V = 262144 that is 5.3e16 FLOP against 2.3 GB of bf16 traffic: on an
H100 this family is compute-bound (~55 ms at 1e15 FLOP/s against ~0.7 ms at 3.3 TB/s), so its
floor is the matmul rate's, not the bandwidth's (harness/linear_cross_entropy/__init__.py).
"""

from __future__ import annotations

from harness.linear_cross_entropy.point import Point


def bytes_moved(point: Point, mode: str) -> int:
    elem = point.torch_dtype.itemsize
    n, d, v = point.batch_size, point.hidden_size, point.num_classes
    bias = v if point.bias else 0
    weights = v if point.class_weights != "none" else 0
    reads = (n * d + v * d + bias + weights) * elem + 8 * n
    writes = (n * d + v * d + bias) * elem if mode == "fwd_bwd" else 0
    return reads + writes


def flops(point: Point, mode: str) -> int:
    """Multiply-adds x 2 of the matmuls the mode cannot avoid: 2 N D V (fwd), 6 N D V (fwd_bwd)."""
    ndv = point.batch_size * point.hidden_size * point.num_classes
    return (6 if mode == "fwd_bwd" else 2) * ndv
