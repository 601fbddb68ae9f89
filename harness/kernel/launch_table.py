"""Launch settings of the fused cross-entropy: for a row of C classes, which path of device.py
runs (PATHS) and with which BLOCK or CHUNK and num_warps: `plan`, from LAUNCH_TABLE.

Launch settings come from LAUNCH_TABLE (path, BLOCK or CHUNK, num_warps per C range, dtype,
targets and mode); scripts/kernel_scan.py measures them on a GPU and prints a replacement. On an
H200 (B=8192) the single read pays where a program has many bytes per element of arithmetic:
fp32 soft targets reach 1.09-1.20x of the floor by split (stream: 1.64-1.66x), fp32 hard at
C = 32000 1.15x by onepass; for bf16 hard targets stream stays fastest (1.46-1.54x; onepass
2.1x, split 2.3x and over), since one program's loads are not overlapped with its own exp and
reductions, and the table keeps stream there.

LAUNCH_TABLE was measured without loss options; the same settings are used with them
(UNMEASURED).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

# The widest row held in one program's registers (next_power_of_2(C) <= this: onepass). At
# 32768 elements and 32 warps that is 32 fp32 values per thread (64 with soft targets).
ONE_PASS_MAX_BLOCK = 32768

PATHS = ("stream", "onepass", "split", "cooperative", "two_launch")


# ----------------------------------------------------------------------------------------
# Launch settings.
#
# The stream kernel as measured on an NVIDIA H200 at B=8192, C=128256, bf16, hard targets
# (do_bench medians over the copy-bandwidth floor; scripts/gpu_check.py repeats the scan):
#
#   BLOCK x warps   fwd (x floor)   fwd_bwd (x floor)
#   16384 x 32      1.42            1.60      the earlier rule for every row of 8192+ classes
#    8192 x 4       1.03            1.58      fwd: one read of the row, nothing to hide it behind
#    8192 x 16      1.25            1.54      fwd_bwd: the second pass re-reads the row from DRAM
#
# So the forward (no gradient) streams 8192-wide blocks with 4 warps; the forward that writes
# the gradient uses the path LAUNCH_TABLE names for its shape.
_FWD_BLOCK, _FWD_WARPS = 8192, 4
_GRAD_BLOCK, _GRAD_WARPS = 8192, 16

# (largest C of the range, dtype, targets, mode) -> (path, BLOCK or CHUNK, num_warps). An entry
# governs the C above the next smaller C of its (dtype, targets, mode) up to its own C; a C
# above the largest entry takes the largest. dtype "bf16" stands for fp16/bf16 and "fp32" for
# fp32/fp64. onepass: BLOCK is next_power_of_2(C) whatever the entry says, and it applies only
# while that is <= ONE_PASS_MAX_BLOCK (else the split default below); a split entry whose CHUNK
# covers the row runs as onepass, and one with more chunks than SMs runs in the two_launch form.
# The stream BLOCK is capped at next_power_of_2(C), and below 8192 columns its warps follow the
# earlier rule (_launch_params).
#
# MEASURED: the fastest setting without a flagged error of `scripts/kernel_scan.py` on one NVIDIA
# H200 (torch 2.11, triton 3.6, B=8192; x floor in the comments, floor = bytes of
# harness/cross_entropy/traffic.py at the copy bandwidth, 4.26 TB/s). UNMEASURED: every other C
# (the entries stand for their whole range), fp16 and fp64, and the onepass/split settings
# below C = 32000. For bf16 with hard targets neither onepass nor split beat the stream kernel
# (best 2.1x and 2.3x against 1.46-1.54x): one program per row and the cooperative wait leave the
# loads of a program unoverlapped with its arithmetic; fp32 and soft targets, with more bytes
# per element, gain (fp32 soft 1.09-1.20x, fp32 hard onepass 1.15x at C = 32000).
LAUNCH_TABLE: dict[tuple[int, str, str, str], tuple[str, int, int]] = {
    (32000, "bf16", "hard", "fwd_bwd"): ("stream", 8192, 16),  # 1.456x floor
    (32000, "bf16", "hard", "fwd"): ("stream", 8192, 4),  # 1.129x floor
    (128256, "bf16", "hard", "fwd_bwd"): ("stream", 8192, 16),  # 1.537x floor
    (128256, "bf16", "hard", "fwd"): ("stream", 8192, 4),  # 1.063x floor
    (262144, "bf16", "hard", "fwd_bwd"): ("stream", 8192, 16),  # 1.533x floor
    (262144, "bf16", "hard", "fwd"): ("stream", 8192, 4),  # 0.996x floor
    (32000, "fp32", "hard", "fwd_bwd"): ("onepass", 32768, 16),  # 1.145x floor
    (32000, "fp32", "hard", "fwd"): ("stream", 16384, 8),  # 0.987x floor
    (128256, "fp32", "hard", "fwd_bwd"): ("stream", 8192, 16),  # 1.528x floor
    (128256, "fp32", "hard", "fwd"): ("stream", 16384, 8),  # 0.942x floor
    (262144, "fp32", "hard", "fwd_bwd"): ("split", 4096, 8),  # 1.513x floor
    (262144, "fp32", "hard", "fwd"): ("stream", 16384, 8),  # 0.931x floor
    (32000, "bf16", "soft", "fwd_bwd"): ("onepass", 32768, 16),  # 1.431x floor
    (32000, "bf16", "soft", "fwd"): ("stream", 8192, 8),  # 1.131x floor
    (128256, "bf16", "soft", "fwd_bwd"): ("split", 4096, 4),  # 1.516x floor
    (128256, "bf16", "soft", "fwd"): ("stream", 8192, 8),  # 1.092x floor
    (262144, "bf16", "soft", "fwd_bwd"): ("split", 4096, 4),  # 1.657x floor
    (262144, "bf16", "soft", "fwd"): ("stream", 8192, 8),  # 1.066x floor
    (32000, "fp32", "soft", "fwd_bwd"): ("split", 4096, 8),  # 1.102x floor
    (32000, "fp32", "soft", "fwd"): ("stream", 8192, 4),  # 0.982x floor
    (128256, "fp32", "soft", "fwd_bwd"): ("split", 4096, 8),  # 1.085x floor
    (128256, "fp32", "soft", "fwd"): ("stream", 8192, 4),  # 0.951x floor
    (262144, "fp32", "soft", "fwd_bwd"): ("split", 8192, 16),  # 1.204x floor
    (262144, "fp32", "soft", "fwd"): ("stream", 8192, 4),  # 0.937x floor
}
# split, when the table asks for onepass on a row too wide for it (or has no entry)
_SPLIT_DEFAULT = ("split", 8192, 16)


class Plan(NamedTuple):
    """How one call runs: path in PATHS, BLOCK (stream/onepass) or CHUNK (split), num_warps."""

    path: str
    block: int
    num_warps: int


def _launch_params(n_cols: int, block: int | None, writes_grad: bool = True) -> tuple[int, int]:
    """(BLOCK, num_warps) of the stream kernel: a power of two covering the row up to the
    measured block width. (The default path of a forward with gradient is onepass/split; see
    plan.)"""
    if block is None:
        block = min(_GRAD_BLOCK if writes_grad else _FWD_BLOCK, triton.next_power_of_2(n_cols))
    if block & (block - 1):
        raise ValueError(f"block={block} must be a power of two")
    if block >= 8192:
        num_warps = _GRAD_WARPS if writes_grad else _FWD_WARPS
    else:
        num_warps = 16 if block >= 2048 else 4
    return block, num_warps


def _onepass_warps(block: int, cap: int = 32) -> int:
    # ~16 fp32 values per thread at the widest rows, never under 4 warps (a block of 128: 1 each)
    return min(cap, max(4, block // 1024))


def _split_warps(chunk: int) -> int:
    return min(16, max(4, chunk // 512))


def dtype_key(dtype: torch.dtype) -> str:
    """LAUNCH_TABLE's dtype column: 'bf16' for 2-byte floats, 'fp32' for the rest."""
    return "bf16" if dtype.itemsize == 2 else "fp32"


def _table_entry(n_cols: int, dtype: torch.dtype, hard: bool, writes_grad: bool) -> tuple[str, int, int]:
    key = (dtype_key(dtype), "hard" if hard else "soft", "fwd_bwd" if writes_grad else "fwd")
    ranges = sorted((c, v) for (c, *k), v in LAUNCH_TABLE.items() if tuple(k) == key)
    if not ranges:
        return ("stream", _FWD_BLOCK, _FWD_WARPS) if not writes_grad else _SPLIT_DEFAULT
    return next((v for c, v in ranges if n_cols <= c), ranges[-1][1])


def plan(
    n_cols: int,
    dtype: torch.dtype,
    hard: bool,
    writes_grad: bool,
    block: int | None = None,
    num_warps: int | None = None,
    path: str | None = None,
) -> Plan:
    """The launch for a row of n_cols classes. path None and block None: LAUNCH_TABLE. path None
    and a block: the stream kernel with that BLOCK (the earlier meaning of `block`). An explicit
    path: that path, with `block` as its BLOCK (onepass, >= C) or CHUNK (split forms)."""
    if path is not None and path not in PATHS:
        raise ValueError(f"path={path!r}: expected one of {PATHS}")
    if block is not None and block & (block - 1):
        raise ValueError(f"block={block} must be a power of two")
    full = triton.next_power_of_2(n_cols)
    if path is None and block is None:
        path, blk, warps = _table_entry(n_cols, dtype, hard, writes_grad)
        if path == "onepass" and full > ONE_PASS_MAX_BLOCK:
            path, blk, warps = _SPLIT_DEFAULT
        if path in ("split", "cooperative", "two_launch") and blk >= n_cols and full <= ONE_PASS_MAX_BLOCK:
            path, blk, warps = "onepass", full, _onepass_warps(full)
        if path == "onepass":
            blk, warps = full, min(warps, _onepass_warps(full))
        elif path == "stream":
            blk = min(blk, full)
            warps = warps if blk >= 8192 else _launch_params(n_cols, blk, writes_grad)[1]
        return Plan(path, blk, num_warps or warps)
    if path is None or path == "stream":
        blk, warps = _launch_params(n_cols, block, writes_grad)
        return Plan("stream", blk, num_warps or warps)
    if path == "onepass":
        blk = full if block is None else block
        if blk < n_cols:
            raise ValueError(f"onepass needs block >= C = {n_cols}, got {blk}")
        return Plan("onepass", blk, num_warps or _onepass_warps(blk))
    chunk = _SPLIT_DEFAULT[1] if block is None else block
    return Plan(path, chunk, num_warps or _split_warps(chunk))
