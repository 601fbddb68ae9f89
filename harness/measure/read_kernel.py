"""A streaming read on CUDA: the fastest way this harness knows to read a buffer once.

The read-only floor of a forward pass (harness/measure/ceiling.py) must be a rate no kernel
beats. On an H200 a device-to-device copy moved 4.23 TB/s (read + write), while triton_fused's
forward, which only reads, reached 4.7 TB/s: 1.11x "the floor" (rows of +sweep=gpu at 08dce5c).
PyTorch's reductions are not built for that rate, so the read ceiling is timed with Triton, in
two layouts, and the faster counts:
  - `blocks`: one program per BLOCK of fp32 values, one partial sum stored per program. It read
    4.47 TB/s on the H200, where triton_fused's fp32 forward at C = 262144 read 4.63 (1.036x).
  - `rows`: the buffer viewed as ROWS rows, one program per row looping over it in BLOCK-wide
    steps, the shape of triton_fused's first pass, which is the fastest reader measured so far
    (unmeasured as a ceiling).
The stores keep the loads from being optimised away; the sums are discarded. Imported only on
CUDA (and by a test under the interpreter), so `import harness` does not import Triton.
"""

from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl

BLOCK = 8192  # fp32 values per program (`blocks`): 32 KiB in flight each
WARPS = 8
ROWS = 2048  # programs of the `rows` layout: 16 per SM on a 132-SM chip, each reading 512 KiB
ROW_BLOCK, ROW_WARPS = 16384, 8  # triton_fused's fp32 forward setting (kernel.LAUNCH_TABLE)


@triton.jit
def _read_blocks(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 before the multiply: 1 GiB buffers and beyond
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + pid, tl.sum(x, axis=0))


@triton.jit
def _read_rows(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * n_cols
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(base + offs, mask=offs < n_cols, other=0.0)
    tl.store(out_ptr + row, tl.sum(acc, axis=0))


def reader(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call that reads `x` (contiguous fp32) once in the `blocks` layout; returns the
    [programs] partial sums."""
    n = x.numel()
    programs = triton.cdiv(n, BLOCK)
    out = torch.empty(programs, dtype=torch.float32, device=x.device)

    def call() -> torch.Tensor:
        _read_blocks[(programs,)](x, out, n, BLOCK=BLOCK, num_warps=WARPS)
        return out

    return call


def row_reader(x: torch.Tensor, rows: int = ROWS) -> Callable[[], torch.Tensor]:
    """The same read in the `rows` layout (x.numel() a multiple of `rows`); returns [rows] sums."""
    n = x.numel()
    if n % rows:
        raise ValueError(f"{n} elements do not split into {rows} rows")
    out = torch.empty(rows, dtype=torch.float32, device=x.device)

    def call() -> torch.Tensor:
        _read_rows[(rows,)](x, out, n // rows, BLOCK=ROW_BLOCK, num_warps=ROW_WARPS)
        return out

    return call


def readers(x: torch.Tensor) -> list[Callable[[], torch.Tensor]]:
    """Both layouts over `x`: the ceiling is the faster."""
    return [reader(x), row_reader(x)]
