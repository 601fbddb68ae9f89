"""Relative errors, and the incoming gradient a per-row loss is differentiated with: the parts
of judging a result against float64 that every family shares (each family's `assess` adds
its own gradients and tolerance)."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor


def upstream(rows: int, like: Tensor) -> Tensor:
    """The incoming gradient a reduction="none" loss is differentiated with: 1, 1.25, 1.5, 1.75
    repeating over the rows, in `like`'s dtype and device. Not all ones: with ones, an
    implementation that sums its rows before applying the per-row gradient (a dW scaled after
    the sum, a broadcast of the first entry) gives the right answer and passes. Each value is
    exact in fp16 and bf16, so the reference uses the very numbers the variant received."""
    return (1.0 + 0.25 * (torch.arange(rows, device=like.device) % 4)).to(like.dtype)


# The incoming gradient a scalar loss (reduction mean or sum) is differentiated with. Not 1: a
# backward that ignores its grad_output, or reads another tensor for it, is right at 1 and
# nowhere else (Megatron-LM #1750 / TransformerEngine PR #2139: "the tests passed because we skip
# the backward kernel when the grad output is 1"). A power of two, as a loss scaler passes: a
# correct variant's gradient is exactly twice its gradient at 1 (no rounding added, so no error
# column moves), and one that ignores it is off by exactly a half.
SCALAR_UPSTREAM = 2.0


def incoming(loss: Tensor, scalar: float = SCALAR_UPSTREAM) -> Tensor:
    """The incoming gradient `loss` is differentiated with: `upstream` for per-row losses [B],
    `scalar` for a scalar one, in the loss's dtype and device."""
    if loss.dim() == 1:
        return upstream(loss.shape[0], loss)
    return torch.full_like(loss, scalar)


def gradients(loss: Tensor, wrt: tuple[Tensor, ...], grad_outputs: Tensor, backwards: int = 1, **kw) -> tuple:
    """torch.autograd.grad of `loss` with respect to `wrt`, taken `backwards` times over one
    graph (retain_graph=True on all but the last), as a training step that calls backward twice
    does: the last one's gradients."""
    for _ in range(backwards - 1):
        torch.autograd.grad(loss, wrt, grad_outputs=grad_outputs, retain_graph=True, **kw)
    return torch.autograd.grad(loss, wrt, grad_outputs=grad_outputs, **kw)


def rel_err(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref) if ref != 0 else abs(value - ref)


def rows_rel_err(losses: Tensor, ref: Tensor) -> float:
    """||losses - ref||_2 / ||ref||_2 for per-row losses (reduction none), in float64."""
    diff = torch.linalg.vector_norm(losses.detach().to(torch.float64) - ref).item()
    norm = torch.linalg.vector_norm(ref).item()
    return diff / norm if norm != 0 else diff


# Rows per block when a whole tensor is compared or scanned: about 2^20 elements (8 MiB of
# float64) per temporary on a CPU, so judging a [B, C] gradient never holds a float64 copy of it
# (8 bytes an element: twice fp32 logits, four times bf16 ones).
_BLOCK_ELEMENTS = 1 << 20
# On a GPU every operation of a block is a kernel launch (5-10 us) and every .item() a
# synchronisation, whatever the block's size: with the CPU's blocks a walk over the fp32 soft
# B = 8192, C = 262144 point is 8192 blocks of about 60 launches, seconds of launch overhead per
# walk, one walk per variant and mode (an H200 point ran past 240 s). 16x larger blocks make it
# 512 blocks (the draw's own block size, harness/cross_entropy/inputs.py) at 16x the temporaries'
# bytes: 128 MiB of float64 here, well inside a card that holds the logits.
_CUDA_FACTOR = 16


def block_elements(elements: int, device: torch.device | str) -> int:
    """`elements` (a CPU block size) for a walk on `device`: _CUDA_FACTOR times it on a GPU."""
    return elements * _CUDA_FACTOR if torch.device(device).type == "cuda" else elements


def row_slices(rows: int, per_row: int, elements: int = _BLOCK_ELEMENTS) -> Iterator[slice]:
    """Slices of `rows` rows of `per_row` elements each, about `elements` elements a slice
    (at least one row): how every block-by-block walk here cuts its tensors."""
    step = max(1, elements // max(1, per_row))
    for lo in range(0, rows, step):
        yield slice(lo, min(lo + step, rows))


def row_blocks(t: Tensor) -> Iterator[slice]:
    """Slices of `t`'s leading dimension (t: 1-D or more) of about _BLOCK_ELEMENTS elements each
    (block_elements: more on a GPU)."""
    rows = t.shape[0]
    return row_slices(rows, t[0].numel() if rows else 1, block_elements(_BLOCK_ELEMENTS, t.device))


class NormDiff:
    """||x - s * ref||_2 / ||s * ref||_2 in float64, accumulated block by block of rows, so that
    neither a float64 copy of x nor the whole reference is ever held. `row_scale` s [rows]: a
    factor per leading-dim row (the incoming gradient of per-row losses), applied to the
    reference's rows. The whole norms come from the blocks' (hypot: no square of a block's norm
    to overflow); absolute where the reference is 0."""

    def __init__(self, row_scale: Tensor | None = None) -> None:
        self.row_scale = row_scale
        self.diff = 0.0
        self.norm = 0.0

    def add(self, x: Tensor, ref: Tensor, rows: slice | None = None) -> None:
        """x: a block of the result (any float dtype); ref: the same block of the float64
        reference; rows: where the block sits (for the row scale)."""
        if self.row_scale is not None:
            s = self.row_scale[rows if rows is not None else slice(None)].to(ref.dtype)
            ref = ref * s.reshape(-1, *([1] * (ref.dim() - 1)))
        self.norm = math.hypot(self.norm, torch.linalg.vector_norm(ref).item())
        diff = x.detach().to(torch.float64, copy=True).sub_(ref)  # never into the variant's own
        self.diff = math.hypot(self.diff, torch.linalg.vector_norm(diff).item())

    def rel(self, norm: float | None = None) -> float:
        """The relative difference; `norm`: the reference's norm where it is known already (an
        unscaled reference), in place of the one summed here."""
        norm = self.norm if norm is None or self.row_scale is not None else norm
        return self.diff / norm if norm != 0 else self.diff


def norm_rel_err(
    x: Tensor, ref: Tensor, ref_norm: float | None = None, row_scale: Tensor | None = None
) -> float:
    """||x - s * ref||_2 / ||s * ref||_2 in float64, block by block over the rows (x: any float
    dtype; ref: float64, same shape, held whole; s: NormDiff's). `ref_norm`: ||ref||, where the
    caller has it (ignored under a row scale, whose norm is summed along)."""
    if x.dim() == 0:
        x, ref = x.reshape(1), ref.reshape(1)
    acc = NormDiff(row_scale)
    for rows in row_blocks(x):
        acc.add(x[rows], ref[rows], rows)
    return acc.rel(ref_norm)


def nonfinite_counts(t: Tensor) -> tuple[int, int]:
    """(NaN count, ±inf count) of `t`. Mostly there are none: a float64 sum of every element is
    finite exactly when all of them are (no sum of float16/bfloat16/float32 values can overflow
    float64; a float64 tensor whose finite values overflow the sum is counted in full), so the
    common case is one reduction a block with no [B, C] boolean; the counts go block by block
    too. Block by block: on a CPU, t.sum(dtype=torch.float64) first copies t whole to float64
    (8 bytes an element: 4x a bf16 gradient, measured +527 MB at B = 2048, C = 32768), which was
    the point's peak."""
    if not t.is_floating_point():
        return 0, 0
    t = t.reshape(1) if t.dim() == 0 else t
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    for rows in row_blocks(t):
        total += t[rows].sum(dtype=torch.float64)
    if math.isfinite(total.item()):
        return 0, 0
    nan = inf = 0
    for rows in row_blocks(t):
        nan += int(torch.isnan(t[rows]).sum().item())
        inf += int(torch.isinf(t[rows]).sum().item())
    return nan, inf


class Entrywise:
    """Where a norm-wise error is blind: a bug confined to one class, one row or the target
    entries is a small share of ||g - ref|| over the whole gradient (a wrong last class at
    bf16, B=64, C=32000: 6.6e-5, 0.01x the norm-wise bound, while that column is 100% wrong).
    Accumulated block by block of rows, next to NormDiff: per row [B] and per class [C], the
    squared norms of the error, of the reference and of the per-entry bound (the reference's
    `_Part.bound`, what a careful implementation may be off by at each entry); and the same
    over the hard targets' entries alone. Only [B] and [C] stay resident.

    A norm of per-entry bounds bounds the norm of errors each within its own, so comparing a
    row's (a class's, the targets') error norm with its bound norm is as sound as the bound is
    per entry, and as sharp as the row itself: a confident row's target entry p_y - 1 is tiny,
    and so is its bound."""

    def __init__(
        self, shape: tuple[int, int], row_scale: Tensor | None = None, targets: Tensor | None = None
    ) -> None:
        rows, classes = shape
        f64 = torch.float64
        device = row_scale.device if row_scale is not None else None
        self.row_scale = row_scale
        self.targets = targets  # [B] class indices (hard), -1 on rows that do not count; or None
        self.row = torch.zeros((3, rows), dtype=f64, device=device)  # error^2, ref^2, bound^2
        self.cls = torch.zeros((3, classes), dtype=f64, device=device)
        self.target = torch.zeros(3, dtype=f64, device=device)
        self.worst = ""  # where the worst ratio is, after `result`

    def add(self, x: Tensor, ref: Tensor, bound: Tensor, rows: slice) -> None:
        """x: a block [R, C] of the result; ref, bound: the same block of the float64 reference
        and of its per-entry bound; rows: where the block sits."""
        if self.row.device != ref.device:
            self.row, self.cls, self.target = (a.to(ref.device) for a in (self.row, self.cls, self.target))
        if self.row_scale is not None:
            s = self.row_scale[rows].to(ref.dtype)[:, None]
            ref, bound = ref * s, bound * s.abs()
        # one squared block at a time: the comparison walk's temporaries stay few
        self._fold(0, x.detach().to(torch.float64, copy=True).sub_(ref).square_(), rows)
        self._fold(1, ref.square(), rows)
        self._fold(2, bound.square(), rows)

    def _fold(self, i: int, sq: Tensor, rows: slice) -> None:
        self.row[i, rows] = sq.sum(dim=1)
        self.cls[i] += sq.sum(dim=0)
        if self.targets is not None:
            y = self.targets[rows]
            self.target[i] += (sq.gather(1, y.clamp(min=0)[:, None])[:, 0] * (y >= 0)).sum()

    def result(self) -> dict[str, float]:
        """grad_row_err, grad_class_err: the worst relative error of one row, of one class
        (over those whose reference is not 0); grad_target_err: of the target entries together
        (NaN without hard targets); grad_entry_ratio: the worst of the rows', the classes' and
        the targets' error norms over their bound norms (an error where the bound is 0, a
        masked or ignored entry, is inf). `worst` says where that ratio was: "row 16",
        "class 31999" or "the target entries"."""
        out = {}
        found = []  # (ratio, where)
        for name, (err, ref, bound) in (("row", self.row), ("class", self.cls)):
            nz = ref > 0
            worst = (err[nz] / ref[nz]).max().sqrt().item() if bool(nz.any()) else 0.0
            out[f"grad_{name}_err"] = float(worst)
            ratio, at = worst_ratio(err, bound)
            found.append((ratio, f"{name} {at}"))
        err, ref, bound = self.target
        if self.targets is None:
            out["grad_target_err"] = math.nan
        else:
            out["grad_target_err"] = math.sqrt(err / ref) if ref > 0 else math.sqrt(err)
            found.append((worst_ratio(err[None], bound[None])[0], "the target entries"))
        out["grad_entry_ratio"], self.worst = max(found, key=lambda f: f[0])
        return out


def worst_ratio(err_sq: Tensor, bound_sq: Tensor) -> tuple[float, int]:
    """max sqrt(err^2 / bound^2) and where it is, with 0/0 = 0 and x/0 = inf."""
    if not err_sq.numel():
        return 0.0, 0
    beyond = (bound_sq == 0) & (err_sq > 0)
    if bool(beyond.any()):
        return math.inf, int(beyond.nonzero()[0, 0].item())
    zero = bound_sq == 0
    r = torch.where(zero, 0.0, err_sq / bound_sq.masked_fill(zero, 1.0))
    at = int(r.argmax().item())
    return float(r[at].sqrt().item()), at
