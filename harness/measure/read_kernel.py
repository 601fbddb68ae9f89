"""A streaming read on CUDA: the fastest way this harness knows to read a buffer once.

The read-only floor of a forward pass (harness/measure/ceiling.py) must be a rate no kernel
beats. On an H200 a device-to-device copy moved 4.23 TB/s (read + write), while triton_fused's
forward, which only reads, reached 4.7 TB/s: 1.11x "the floor" (rows of +sweep=gpu at commit
08dce5c). PyTorch's own reductions are not built for that rate, so the read ceiling is timed
with this kernel: one program per BLOCK of fp32 values, 16-byte loads, one partial sum stored
per program (the store keeps the loads from being optimised away; the sums are discarded).
Imported only on CUDA, so `import harness` does not import Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 8192  # fp32 values per program: 32 KiB in flight each, as the cross-entropy kernels read
WARPS = 8


@triton.jit
def _read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 before the multiply: 1 GiB buffers and beyond
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + pid, tl.sum(x, axis=0))


def reader(x: torch.Tensor):
    """A call that reads `x` (contiguous fp32) once; returns the [programs] partial sums."""
    n = x.numel()
    programs = triton.cdiv(n, BLOCK)
    out = torch.empty(programs, dtype=torch.float32, device=x.device)

    def call() -> torch.Tensor:
        _read_kernel[(programs,)](x, out, n, BLOCK=BLOCK, num_warps=WARPS)
        return out

    return call
