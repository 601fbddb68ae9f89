"""Fused cross-entropy in Triton: one launch gives each row's loss and, optionally, the
gradient of the mean loss; the backward only scales that stored gradient.

Semantics are those of F.cross_entropy and harness/cross_entropy/reference.py (logits z [B, C], targets
class indices [B] int64 or probabilities t [B, C], T_b = sum_c t_bc):

    loss_b = T_b * lse_b - sum_c t_bc z_bc                  lse_b = log sum_c exp(z_bc)
    grad_bc = (T_b * softmax(z_b)_c - t_bc) / B              (hard: T_b = 1, t = one-hot)

Three paths; L = B*C*itemsize is the bytes of the logits, and the floor of a forward that also
writes the gradient is 2L (read the logits once, write the gradient once; README, Numerics §7).
Soft targets add one read of t (L_t bytes) to every path.

  stream    one program per row, two passes in blocks of BLOCK columns. Pass 1 keeps an online
            max/sum (Milakov & Gimelshein 2018): m <- max(m, max(block)), s <- s*exp(m_old - m)
            + sum(exp(block - m)), one exp per logit. Pass 2 (gradient wanted) reads the row
            again and writes the gradient. Forward alone: L, the floor (measured 1.03x on an
            H200). With the gradient: L + L written + the re-read, which comes from DRAM for
            large rows (measured 1.53-1.60x of 2L on an H200 at B=8192): about 3L.
  onepass   one program per row whose whole row fits in one block (next_power_of_2(C) <=
            ONE_PASS_MAX_BLOCK): the row (and t) is loaded once into registers, max, sum, lse
            and loss come from the registers and the gradient is written from them: 2L.
  split     rows too long to hold in one program: K = cdiv(C, CHUNK) programs per row, each
            loading its chunk once into registers and reducing it to a partial (m_k, s_k =
            sum exp(z - m_k), and sum t, sum t*z); the K partials of a row are exchanged
            through a [B, 4, KP] workspace (16 bytes per partial: B*K*16 written and K times
            that read, about 0.2% of L at C = 128256, CHUNK 8192) and merged into lse with the
            usual log-sum-exp rule M = max m_k, S = sum s_k exp(m_k - M). Two forms:
              cooperative  (CUDA) one launch; each program publishes its partial, then waits
                           until all K partials of its row are there and writes its chunk's
                           gradient from registers: 2L. Deadlock-free by construction (below).
              two_launch   (CPU/interpreter, or forced) launch 1 writes the partials, launch 2
                           merges them and re-reads its chunk from DRAM to write the gradient:
                           3L. The same @triton.jit helpers do the arithmetic in both forms,
                           so the interpreter tests check the cooperative kernel's numerics.

Cooperative exchange. A spin-wait can only deadlock if a waiting program holds the slot that
a sibling it waits for needs in order to start. Programs therefore take their logical work id
from an atomic ticket counter at start (as decoupled look-back scans do), not from
program_id: logical order is the order in which programs actually started, so every row but
the last partially-started one has all K programs running, and those finish without waiting on
anyone not yet started. At most K-1 resident programs can be waiting on a row that is not
fully started, so with room for K resident programs (checked: K <= the SM count, one program
per SM always fits) some program always makes progress. Publication: plain stores of the
partial, a CTA barrier (all threads' stores before thread 0's atomic), then the arrival
counter's atomic_add with release semantics (acq_rel: the last arrival also acquires); waiters
spin on atomic_add(counter, 0, acquire), then a barrier, then volatile loads (no stale L1).
Under the interpreter programs run one after another, so a program that waits would wait
forever: there the two_launch form is used, and the cooperative kernel is run only with K = 1,
where its own arrival completes the row and it never waits.

All arithmetic is fp32 (fp16/bf16 inputs are upcast on load, the gradient is rounded once on
store); fp64 inputs are computed in fp64. The merge and every reduction run in a fixed order
(Triton's reduction trees, the workspace read in chunk order), so results are bitwise
reproducible across calls whatever order the programs ran in.

Launch settings come from LAUNCH_TABLE (path, BLOCK or CHUNK, num_warps per C range, dtype,
targets and mode); scripts/kernel_scan.py measures them on a GPU and prints a replacement. On an
H200 (B=8192) the single read pays where a program has many bytes per element of arithmetic:
fp32 soft targets reach 1.09-1.20x of the floor by split (stream: 1.64-1.66x), fp32 hard at
C = 32000 1.15x by onepass; for bf16 hard targets stream stays fastest (1.46-1.54x; onepass
2.1x, split 2.3x and over), since one program's loads are not overlapped with its own exp and
reductions, and the table keeps stream there.

Offsets: the row offset is row * stride in int64, so B*C > 2^31 elements address correctly
(PyTorch issues #111484, #84144); column offsets within a row stay int32 (C < 2^31).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# Programs of the scale kernel: a grid-stride loop, so that when grad_output == 1 (every
# plain .backward()/autograd.grad of the loss) the launch is a few hundred programs that each
# read one scalar and exit, instead of B*C/BLOCK programs.
_SCALE_PROGRAMS = 1024
_SCALE_BLOCK = 4096

# The widest row held in one program's registers (next_power_of_2(C) <= this: onepass). At
# 32768 elements and 32 warps that is 32 fp32 values per thread (64 with soft targets).
ONE_PASS_MAX_BLOCK = 32768

PATHS = ("stream", "onepass", "split", "cooperative", "two_launch")

# Workspace slots per partial: m, s, sum t*z (hard: the target logit when in the chunk), sum t.
_NPART = 4


# ----------------------------------------------------------------------------------------
# Shared arithmetic: the same helpers in the onepass, cooperative and two_launch kernels.


@triton.jit
def _load_chunk(z_row, t_row, offs, mask, HARD: tl.constexpr, ACC: tl.constexpr):
    """The chunk's logits (-inf on masked lanes: they add exp(-inf) = 0 to every sum) and, for
    soft targets, its probabilities (0 on masked lanes); for hard targets t is unused."""
    z = tl.load(z_row + offs, mask=mask, other=float("-inf")).to(ACC)
    if HARD:
        t = z  # placeholder, never read (dead code after compilation)
    else:
        t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
    return z, t


@triton.jit
def _chunk_partial(z, t, offs, mask, y, HARD: tl.constexpr):
    """(m, s, zy, tsum): max, sum exp(z - m), sum t*z and sum t over one chunk. Hard targets:
    zy is the target logit if it lies in this chunk, else 0 (exactly one chunk holds it), and
    tsum is unused (T = 1)."""
    m = tl.max(z, axis=0)
    s = tl.sum(tl.exp(z - m), axis=0)
    if HARD:
        zy = tl.sum(tl.where(offs == y, z, 0.0), axis=0)
        tsum = zy * 0.0
    else:
        # A masked lane has t = 0 and z = -inf; 0 * -inf would be NaN, so zero z first.
        zy = tl.sum(t * tl.where(mask, z, 0.0), axis=0)
        tsum = tl.sum(t, axis=0)
    return m, s, zy, tsum


@triton.jit
def _row_loss(m, s, zy, total):
    """(loss, lse). T*m - zy before adding T*log(s): when the target holds the max (a
    confident, small loss) m - zy is exactly 0 for hard targets and log(s) is not cancelled
    against m."""
    log_s = tl.log(s)
    return (total * m - zy) + total * log_s, m + log_s


@triton.jit
def _write_grad(g_row, offs, mask, z, t, y, lse, total, inv_b, HARD: tl.constexpr):
    """g = (T p - t) / B for one chunk held in registers; p = exp(z - lse) (0 on masked lanes)."""
    p = tl.exp(z - lse)
    if HARD:
        g = tl.where(offs == y, p - 1.0, p)
    else:
        g = total * p - t
    tl.store(g_row + offs, (g * inv_b).to(g_row.dtype.element_ty), mask=mask)


@triton.jit
def _store_partial(ws_ptr, row, k, m, s, zy, tsum, KP: tl.constexpr):
    base = ws_ptr + row * (4 * KP) + k
    tl.store(base, m)
    tl.store(base + KP, s)
    tl.store(base + 2 * KP, zy)
    tl.store(base + 3 * KP, tsum)


@triton.jit
def _merge_partials(
    ws_ptr, row, n_chunks, HARD: tl.constexpr, KP: tl.constexpr, ACC: tl.constexpr, VOLATILE: tl.constexpr
):
    """(m, s, zy, total) of the whole row from its K partials: M = max m_k, S = sum s_k
    exp(m_k - M); padding lanes (k >= K) carry m = -inf, s = 0 and add 0 * 0 = 0."""
    ks = tl.arange(0, KP)
    kmask = ks < n_chunks
    base = ws_ptr + row * (4 * KP) + ks
    m_k = tl.load(base, mask=kmask, other=float("-inf"), volatile=VOLATILE).to(ACC)
    s_k = tl.load(base + KP, mask=kmask, other=0.0, volatile=VOLATILE).to(ACC)
    zy_k = tl.load(base + 2 * KP, mask=kmask, other=0.0, volatile=VOLATILE).to(ACC)
    m = tl.max(m_k, axis=0)
    s = tl.sum(s_k * tl.exp(m_k - m), axis=0)
    zy = tl.sum(zy_k, axis=0)
    if HARD:
        total = tl.full((), 1.0, ACC)
    else:
        total = tl.sum(tl.load(base + 3 * KP, mask=kmask, other=0.0, volatile=VOLATILE).to(ACC), axis=0)
    return m, s, zy, total


# ----------------------------------------------------------------------------------------
# stream: two passes over the row in blocks (the forward alone is at the L floor this way).


@triton.jit
def _ce_rows_kernel(
    z_ptr,
    z_stride,  # logits [B, C], row stride in elements, unit column stride
    t_ptr,
    t_stride,  # hard: [B] int64 indices (t_stride unused); soft: [B, C]
    loss_ptr,  # [B] float32/float64 out: loss_b (not divided by B)
    g_ptr,
    g_stride,  # [B, C] gradient out in the logits' dtype (WRITE_GRAD only)
    n_cols,
    n_rows,  # C; B (the mean's 1/B is folded into the gradient)
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64 before any multiply by a stride
    z_row = z_ptr + row * z_stride
    cols = tl.arange(0, BLOCK)

    m = tl.full((), float("-inf"), ACC)  # running max
    s = tl.zeros((), ACC)  # running sum of exp(z - m)
    if HARD:
        y = tl.load(t_ptr + row)
        zy = tl.load(z_row + y).to(ACC)  # the target logit: one scalar read
        total = tl.full((), 1.0, ACC)
    else:
        t_row = t_ptr + row * t_stride
        zy = tl.zeros((), ACC)  # sum_c t_bc z_bc
        total = tl.zeros((), ACC)  # T_b

    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        z = tl.load(z_row + offs, mask=mask, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # exp(-inf - finite) = 0: the first block, and masked lanes, contribute nothing.
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
        if not HARD:
            t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
            total += tl.sum(t, axis=0)
            # A masked lane has t = 0 and z = -inf; 0 * -inf would be NaN, so zero z first.
            zy += tl.sum(t * tl.where(mask, z, 0.0), axis=0)

    loss, lse = _row_loss(m, s, zy, total)
    tl.store(loss_ptr + row, loss)

    if WRITE_GRAD:
        # 1/B in the accumulation precision (a float argument would arrive as fp32, which
        # is 1/B only to ~6e-8: far outside fp64's tolerance when B is not a power of two).
        inv_b = tl.full((), 1.0, ACC) / n_rows
        g_row = g_ptr + row * g_stride
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            mask = offs < n_cols
            z = tl.load(z_row + offs, mask=mask, other=0.0).to(ACC)
            p = tl.exp(z - lse)
            if HARD:
                g = tl.where(offs == y, p - 1.0, p)
            else:
                t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
                g = total * p - t
            tl.store(g_row + offs, (g * inv_b).to(g_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------
# onepass: the whole row in one program's registers, read once (2L with the gradient).


@triton.jit
def _ce_onepass_kernel(
    z_ptr,
    z_stride,
    t_ptr,
    t_stride,
    loss_ptr,
    g_ptr,
    g_stride,
    n_cols,
    n_rows,
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,  # >= C: one block is the row
    ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    if HARD:
        y = tl.load(t_ptr + row)
    else:
        y = 0
    z, t = _load_chunk(z_ptr + row * z_stride, t_ptr + row * t_stride, offs, mask, HARD, ACC)
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD)
    if HARD:
        total = tl.full((), 1.0, ACC)
    else:
        total = tsum
    loss, lse = _row_loss(m, s, zy, total)
    tl.store(loss_ptr + row, loss)
    if WRITE_GRAD:
        inv_b = tl.full((), 1.0, ACC) / n_rows  # in ACC: see _ce_rows_kernel
        _write_grad(g_ptr + row * g_stride, offs, mask, z, t, y, lse, total, inv_b, HARD)


# ----------------------------------------------------------------------------------------
# split: K programs per row, partials exchanged through a workspace.


@triton.jit
def _ce_split_coop_kernel(
    z_ptr,
    z_stride,
    t_ptr,
    t_stride,
    loss_ptr,
    g_ptr,
    g_stride,
    ws_ptr,  # [B, 4, KP] partials in ACC
    sync_ptr,  # int32 [1 + B], zeroed: [0] the ticket counter, [1 + row] the row's arrivals
    n_cols,
    n_rows,
    n_chunks,  # K = cdiv(C, CHUNK)
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,  # next_power_of_2(K), >= 2
    ACC: tl.constexpr,
):
    # Logical work id from the ticket, not program_id: see the module docstring.
    work = tl.atomic_add(sync_ptr, 1, sem="relaxed").to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    offs = k * CHUNK + tl.arange(0, CHUNK)
    mask = offs < n_cols
    if HARD:
        y = tl.load(t_ptr + row)
    else:
        y = 0
    z, t = _load_chunk(z_ptr + row * z_stride, t_ptr + row * t_stride, offs, mask, HARD, ACC)
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD)
    _store_partial(ws_ptr, row, k, m, s, zy, tsum, KP)
    tl.debug_barrier()  # every thread's partial stores precede the release below
    counter = sync_ptr + 1 + row
    arrived = tl.atomic_add(counter, 1, sem="acq_rel") + 1
    while arrived < n_chunks:  # K = 1: the own arrival completes the row, no wait
        arrived = tl.atomic_add(counter, 0, sem="acquire")
    tl.debug_barrier()  # the acquire (one thread) precedes every thread's loads below
    m, s, zy, total = _merge_partials(ws_ptr, row, n_chunks, HARD, KP, ACC, True)
    loss, lse = _row_loss(m, s, zy, total)
    tl.store(loss_ptr + row, loss, mask=k == 0)
    if WRITE_GRAD:
        inv_b = tl.full((), 1.0, ACC) / n_rows
        _write_grad(g_ptr + row * g_stride, offs, mask, z, t, y, lse, total, inv_b, HARD)


@triton.jit
def _ce_split_partials_kernel(
    z_ptr,
    z_stride,
    t_ptr,
    t_stride,
    ws_ptr,
    n_cols,
    n_chunks,
    HARD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
):
    """two_launch, launch 1: each (row, chunk) program writes its partial."""
    work = tl.program_id(0).to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    offs = k * CHUNK + tl.arange(0, CHUNK)
    mask = offs < n_cols
    if HARD:
        y = tl.load(t_ptr + row)
    else:
        y = 0
    z, t = _load_chunk(z_ptr + row * z_stride, t_ptr + row * t_stride, offs, mask, HARD, ACC)
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD)
    _store_partial(ws_ptr, row, k, m, s, zy, tsum, KP)


@triton.jit
def _ce_split_finish_kernel(
    z_ptr,
    z_stride,
    t_ptr,
    t_stride,
    loss_ptr,
    g_ptr,
    g_stride,
    ws_ptr,
    n_cols,
    n_rows,
    n_chunks,
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
):
    """two_launch, launch 2: merge the row's partials; chunk 0 writes the loss, every chunk
    re-reads its logits and writes its gradient."""
    work = tl.program_id(0).to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    m, s, zy, total = _merge_partials(ws_ptr, row, n_chunks, HARD, KP, ACC, False)
    loss, lse = _row_loss(m, s, zy, total)
    tl.store(loss_ptr + row, loss, mask=k == 0)
    if WRITE_GRAD:
        offs = k * CHUNK + tl.arange(0, CHUNK)
        mask = offs < n_cols
        if HARD:
            y = tl.load(t_ptr + row)
        else:
            y = 0
        z, t = _load_chunk(z_ptr + row * z_stride, t_ptr + row * t_stride, offs, mask, HARD, ACC)
        inv_b = tl.full((), 1.0, ACC) / n_rows
        _write_grad(g_ptr + row * g_stride, offs, mask, z, t, y, lse, total, inv_b, HARD)


@triton.jit
def _scale_kernel(g_ptr, go_ptr, n, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """g[:] *= grad_output, in place, unless grad_output == 1 (then nothing is read)."""
    go = tl.load(go_ptr).to(ACC)
    if go != 1.0:
        pid = tl.program_id(0).to(tl.int64)
        step = tl.num_programs(0).to(tl.int64) * BLOCK
        for start in range(pid * BLOCK, n, step):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            g = tl.load(g_ptr + offs, mask=mask).to(ACC)
            tl.store(g_ptr + offs, (g * go).to(g_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


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


def _interpreted(t: Tensor) -> bool:
    """True where programs run one after another: CPU tensors, or TRITON_INTERPRET=1."""
    return t.device.type != "cuda" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _resident_capacity(device: torch.device) -> int:
    """Programs of the cooperative kernel that are surely resident at once: one per SM (each
    launches at all only if one fits on an SM)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def check_inputs(logits: Tensor, targets: Tensor) -> None:
    """logits: [B, C] fp16/bf16/fp32/fp64; targets: [B] int64 or [B, C] like the logits."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, C], got shape {list(logits.shape)}")
    if targets.dtype == torch.int64:
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"class-index targets must be [B]={list(logits.shape[:1])}, got {list(targets.shape)}"
            )
    elif targets.shape != logits.shape:
        raise ValueError(
            f"probability targets must be [B, C]={list(logits.shape)}, got {list(targets.shape)}"
        )


def rows(
    logits: Tensor,
    targets: Tensor,
    grad: Tensor | None,
    block: int | None = None,
    num_warps: int | None = None,
    path: str | None = None,
) -> Tensor:
    """Per-row losses [B] (fp32; fp64 for fp64 logits) and, when `grad` ([B, C], the logits'
    dtype, contiguous rows) is given, the gradient of the mean loss written into it.
    logits/targets as in `check_inputs`; block/num_warps/path as in `plan` (path "split" picks
    the cooperative form on CUDA and two_launch where programs are interpreted)."""
    check_inputs(logits, targets)
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    hard = targets.dtype == torch.int64
    if not hard and targets.stride(1) != 1:
        targets = targets.contiguous()
    b, c = logits.shape
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss = torch.empty(b, dtype=acc_dtype, device=logits.device)
    p = plan(c, logits.dtype, hard, grad is not None, block, num_warps, path)
    args = (
        logits,
        logits.stride(0),
        targets,
        0 if hard else targets.stride(0),
        loss,
        grad if grad is not None else logits,
        grad.stride(0) if grad is not None else 0,
    )
    meta = dict(HARD=hard, WRITE_GRAD=grad is not None, ACC=_acc(logits.dtype), num_warps=p.num_warps)
    if p.path == "stream":
        _ce_rows_kernel[(b,)](*args, c, b, BLOCK=p.block, **meta)
        return loss
    if p.path == "onepass":
        _ce_onepass_kernel[(b,)](*args, c, b, BLOCK=p.block, **meta)
        return loss

    n_chunks = triton.cdiv(c, p.block)
    kp = max(2, triton.next_power_of_2(n_chunks))
    form = p.path
    if form == "split":
        native_ok = not _interpreted(logits) and n_chunks <= _resident_capacity(logits.device)
        form = "cooperative" if native_ok else "two_launch"
    if form == "cooperative" and n_chunks > 1:
        if _interpreted(logits):
            raise ValueError(
                f"the cooperative form with K={n_chunks} chunks waits on programs that the "
                "interpreter runs only later: use path='two_launch' (or K = 1)"
            )
        if n_chunks > _resident_capacity(logits.device):
            raise ValueError(
                f"K={n_chunks} chunks per row exceeds the programs surely resident at once "
                f"({_resident_capacity(logits.device)}): a larger CHUNK, or path='two_launch'"
            )
    ws = torch.empty((b, _NPART, kp), dtype=acc_dtype, device=logits.device)
    grid = (b * n_chunks,)
    if form == "cooperative":
        sync = torch.zeros(b + 1, dtype=torch.int32, device=logits.device)
        _ce_split_coop_kernel[grid](*args, ws, sync, c, b, n_chunks, CHUNK=p.block, KP=kp, **meta)
    else:
        _ce_split_partials_kernel[grid](
            logits,
            logits.stride(0),
            targets,
            0 if hard else targets.stride(0),
            ws,
            c,
            n_chunks,
            HARD=hard,
            CHUNK=p.block,
            KP=kp,
            ACC=meta["ACC"],
            num_warps=p.num_warps,
        )
        _ce_split_finish_kernel[grid](*args, ws, c, b, n_chunks, CHUNK=p.block, KP=kp, **meta)
    return loss


def scale_(grad: Tensor, grad_output: Tensor) -> Tensor:
    """grad (contiguous, any float dtype) *= grad_output (a 0-dim tensor on the same device),
    in place, without a host sync: the kernel itself skips the pass when grad_output == 1."""
    n = grad.numel()
    programs = max(1, min(_SCALE_PROGRAMS, triton.cdiv(n, _SCALE_BLOCK)))
    _scale_kernel[(programs,)](grad, grad_output.reshape(1), n, BLOCK=_SCALE_BLOCK, ACC=_acc(grad.dtype))
    return grad


class FusedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy whose forward also writes the gradient; backward scales it.

    The saved gradient is scaled in place and handed to autograd, so the extra memory of a
    forward+backward is one gradient-sized buffer (plus B accumulators, and for split rows a
    [B, 4, K] workspace); a second backward through the same graph (retain_graph=True) is
    refused rather than scaled twice."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, block: int | None) -> Tensor:  # noqa: ANN001
        grad = torch.empty((logits.shape[0], logits.shape[1]), dtype=logits.dtype, device=logits.device)
        loss = rows(logits, targets, grad, block)
        ctx.grad = grad
        return loss.mean().to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001, ANN205
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("triton_fused: the stored gradient was already used by an earlier backward")
        return scale_(grad, grad_output.detach()), None, None


def cross_entropy(logits: Tensor, targets: Tensor, block: int | None = None) -> Tensor:
    """Mean cross-entropy, 0-dim in the logits' dtype (logits [B, C] fp16/bf16/fp32/fp64;
    targets [B] int64 or [B, C] probabilities). When no gradient can be asked for (grad mode
    off, or logits that do not require grad) only the loss is computed: a forward reads L bytes
    and writes no gradient, so its time is a forward's, not a hidden forward+backward's. `block`
    given: the stream kernel with that BLOCK (see plan)."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return FusedCrossEntropy.apply(logits, targets, block)
    return rows(logits, targets, None, block).mean().to(logits.dtype)
