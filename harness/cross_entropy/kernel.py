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

Loss options (harness/cross_entropy/options.py; `Options`, `rows(options=...)`): ignore_index,
label smoothing eps, z-loss, softcap and the reduction, on every path, through the shared helpers
(constexpr flags IGNORE, SMOOTH, ZLOSS, CAP, COUNT: with all of them off the plain kernel is
compiled, and its results are bit for bit those without options). With z' = cap tanh(z / cap)
(formed from e = exp(-2|z / cap|), sech^2 = 4e / (1 + e)^2 for the gradient), per kept row

    loss_b = (Q m - sum_c q_c z'_c) + Q log s + z_loss lse^2
    grad_bc = ((Q + 2 z_loss lse) p_c - q_c) dz'/dz
    hard: Q = 1, sum q z' = (1 - eps) z'_y + (eps / C) sum_c z'_c;  soft: q = (1 - eps) t + eps / C

so pass 1 (and each split partial, in the unused 4th slot for hard targets) also sums z'. An
ignored row (hard targets equal to ignore_index; never read as a column) gets loss 0 and
gradient exactly 0. Reduction: the gradient is written divided by B (mean) or 1 (sum, none);
under mean with an ignore_index the kernel adds the kept rows to an int32 counter (one atomic
per row) and the loss is mean * (B / kept), the backward's scale grad_output * B / kept (exactly
1 when no row is ignored, so no host sync and no change of bits; 0 gradient, NaN loss when every
row is ignored, as F.cross_entropy). "none" returns the [B] losses and scales row by row.
LAUNCH_TABLE was measured without options; the same settings are used with them (UNMEASURED).

Offsets: the row offset is row * stride in int64, so B*C > 2^31 elements address correctly
(PyTorch issues #111484, #84144); column offsets within a row stay int32 (C < 2^31).
"""

from __future__ import annotations

import math
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
# Shared arithmetic: the same helpers in the stream, onepass, cooperative and two_launch
# kernels. Loss options enter through constexpr flags (IGNORE, SMOOTH, ZLOSS, CAP, COUNT): with
# every flag off each helper is the plain loss's arithmetic, operation for operation.


@triton.jit
def _acc_scalar(x, ACC: tl.constexpr):
    """A float argument in ACC. The option scalars are annotated fp64 (a plain float argument
    arrives as fp32: label smoothing 0.1 would be off by 1e-9, outside fp64's tolerance); the
    interpreter hands them over as Python floats. Both become ACC here."""
    return (tl.full((), 1.0, ACC) * x).to(ACC)


@triton.jit
def _capped(z, cap, CAP: tl.constexpr):
    """(z', dz'/dz) under a softcap: cap * tanh(z / cap) and sech^2(z / cap), both from
    e = exp(-2 |z / cap|) <= 1: tanh|x| = (1 - e) / (1 + e), sech^2 x = 4e / (1 + e)^2 (no
    1 - tanh^2, which cancels for large |x|). z = -inf (masked lanes) gives -cap: the callers
    mask it again. Without CAP: z itself (and z again as an unused placeholder)."""
    if CAP:
        x = z / cap
        e = tl.exp(-2.0 * tl.abs(x))
        d = 1.0 + e
        th = (1.0 - e) / d
        zc = cap * tl.where(x < 0.0, -th, th)
        dz = 4.0 * e / (d * d)
    else:
        zc = z
        dz = z  # placeholder, never read
    return zc, dz


@triton.jit
def _load_chunk(
    z_row,
    t_row,
    offs,
    mask,
    keep_t,
    eps_c,
    cap,
    HARD: tl.constexpr,
    ACC: tl.constexpr,
    SMOOTH: tl.constexpr = False,
    CAP: tl.constexpr = False,
):
    """The chunk's (capped) logits z' (-inf on masked lanes: they add exp(-inf) = 0 to every
    sum), for soft targets its effective targets q = (1 - eps) t + eps / C (0 on masked lanes;
    t itself without smoothing), and under a cap dz'/dz; unused outputs are placeholders."""
    z = tl.load(z_row + offs, mask=mask, other=float("-inf")).to(ACC)
    z, dz = _capped(z, cap, CAP)
    if CAP:
        z = tl.where(mask, z, float("-inf"))
    if HARD:
        t = z  # placeholder, never read (dead code after compilation)
    else:
        t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
        if SMOOTH:
            t = tl.where(mask, keep_t * t + eps_c, 0.0)
    return z, t, dz


@triton.jit
def _chunk_partial(z, t, offs, mask, y, HARD: tl.constexpr, SMOOTH: tl.constexpr = False):
    """(m, s, zy, tsum): max, sum exp(z - m), sum t*z and sum t over one chunk. Hard targets:
    zy is the target logit if it lies in this chunk, else 0 (exactly one chunk holds it, none
    on an ignored row: y = -1 there), and tsum is unused (T = 1), or with label smoothing the
    sum of the chunk's logits."""
    m = tl.max(z, axis=0)
    s = tl.sum(tl.exp(z - m), axis=0)
    if HARD:
        zy = tl.sum(tl.where(offs == y, z, 0.0), axis=0)
        if SMOOTH:
            tsum = tl.sum(tl.where(mask, z, 0.0), axis=0)
        else:
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
def _finish_row(
    m,
    s,
    zy,
    tsum,
    keep_t,
    eps_c,
    z_coef,
    HARD: tl.constexpr,
    ACC: tl.constexpr,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
):
    """(loss, lse, coef) of a row from its statistics (_chunk_partial's meaning): loss = Q lse -
    sum q z' (+ z_loss lse^2), coef = Q (+ 2 z_loss lse), the factor of p in the gradient.
    Hard targets: Q = 1 and sum q z' = (1 - eps) z'_y + (eps / C) sum z' (tsum); soft: Q = tsum
    and sum q z' = zy, q already smoothed on load."""
    if HARD:
        total = tl.full((), 1.0, ACC)
        if SMOOTH:
            zy = keep_t * zy + eps_c * tsum
    else:
        total = tsum
    loss, lse = _row_loss(m, s, zy, total)
    coef = total
    if ZLOSS:
        loss = loss + z_coef * lse * lse
        coef = total + 2.0 * z_coef * lse
    return loss, lse, coef


@triton.jit
def _write_grad(
    g_row,
    offs,
    mask,
    z,
    t,
    y,
    lse,
    total,
    inv_b,
    HARD: tl.constexpr,
    dz=None,
    keep=None,
    keep_t=None,
    eps_c=None,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
    CAP: tl.constexpr = False,
    IGNORE: tl.constexpr = False,
):
    """g = (T p - t) / B for one chunk held in registers; p = exp(z - lse) (0 on masked lanes).
    Options: T is coef (Q + 2 z_loss lse), t is q (hard: (1 - eps) [c = y] + eps / C), times
    dz'/dz under a cap, and 0 on an ignored row (keep false)."""
    p = tl.exp(z - lse)
    if HARD:
        if SMOOTH:
            g = total * p - tl.where(offs == y, keep_t + eps_c, eps_c)
        elif ZLOSS:
            g = tl.where(offs == y, total * p - 1.0, total * p)
        else:
            g = tl.where(offs == y, p - 1.0, p)
    else:
        g = total * p - t
    if CAP:
        g = g * dz
    g = g * inv_b
    if IGNORE:
        g = tl.where(keep, g, 0.0)
    tl.store(g_row + offs, g.to(g_row.dtype.element_ty), mask=mask)


@triton.jit
def _target(t_ptr, row, ignore_index, HARD: tl.constexpr, IGNORE: tl.constexpr):
    """(y, keep): the row's class index and whether it counts. An ignored row gets y = -1,
    which matches no column whatever ignore_index is; soft targets: y = 0, keep = True."""
    if HARD:
        y = tl.load(t_ptr + row)
        if IGNORE:
            keep = y != ignore_index
            y = tl.where(keep, y, -1)
        else:
            keep = y == y
    else:
        y = 0
        keep = True
    return y, keep


@triton.jit
def _option_scalars(eps, z_loss, cap, n_cols, ACC: tl.constexpr):
    """(1 - eps, eps / C, z_loss, cap) in ACC."""
    eps_a = _acc_scalar(eps, ACC)
    return 1.0 - eps_a, eps_a / n_cols, _acc_scalar(z_loss, ACC), _acc_scalar(cap, ACC)


@triton.jit
def _finish_loss(
    loss_ptr, row, loss, keep, kept_ptr, k, IGNORE: tl.constexpr, COUNT: tl.constexpr, SPLIT: tl.constexpr
):
    """Store the row's loss (0 on an ignored row) and add the row to the kept count; SPLIT: only
    the row's chunk k = 0 does."""
    if IGNORE:
        loss = tl.where(keep, loss, 0.0)
    if SPLIT:
        tl.store(loss_ptr + row, loss, mask=k == 0)
        if COUNT:
            tl.atomic_add(kept_ptr, keep.to(tl.int32), mask=k == 0, sem="relaxed")
    else:
        tl.store(loss_ptr + row, loss)
        if COUNT:
            tl.atomic_add(kept_ptr, keep.to(tl.int32), sem="relaxed")


@triton.jit
def _store_partial(ws_ptr, row, k, m, s, zy, tsum, KP: tl.constexpr):
    base = ws_ptr + row * (4 * KP) + k
    tl.store(base, m)
    tl.store(base + KP, s)
    tl.store(base + 2 * KP, zy)
    tl.store(base + 3 * KP, tsum)


@triton.jit
def _merge_partials(
    ws_ptr,
    row,
    n_chunks,
    HARD: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
    VOLATILE: tl.constexpr,
    SMOOTH: tl.constexpr = False,
):
    """(m, s, zy, tsum) of the whole row from its K partials: M = max m_k, S = sum s_k
    exp(m_k - M); padding lanes (k >= K) carry m = -inf, s = 0 and add 0 * 0 = 0. Hard targets
    without smoothing: tsum = T = 1."""
    ks = tl.arange(0, KP)
    kmask = ks < n_chunks
    base = ws_ptr + row * (4 * KP) + ks
    m_k = tl.load(base, mask=kmask, other=float("-inf"), volatile=VOLATILE).to(ACC)
    s_k = tl.load(base + KP, mask=kmask, other=0.0, volatile=VOLATILE).to(ACC)
    zy_k = tl.load(base + 2 * KP, mask=kmask, other=0.0, volatile=VOLATILE).to(ACC)
    m = tl.max(m_k, axis=0)
    s = tl.sum(s_k * tl.exp(m_k - m), axis=0)
    zy = tl.sum(zy_k, axis=0)
    if HARD and not SMOOTH:
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
    n_rows,  # C; the divisor folded into the gradient (B for a mean, 1 for sum/none)
    kept_ptr,  # int32 [1]: += the rows not ignored (COUNT only)
    ignore_index,  # hard targets equal to it are ignored (IGNORE only)
    eps: tl.float64,  # label smoothing (SMOOTH only)
    z_loss: tl.float64,  # z-loss coefficient (ZLOSS only)
    cap: tl.float64,  # softcap (CAP only)
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
    IGNORE: tl.constexpr = False,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
    CAP: tl.constexpr = False,
    COUNT: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)  # int64 before any multiply by a stride
    z_row = z_ptr + row * z_stride
    cols = tl.arange(0, BLOCK)
    keep_t, eps_c, z_coef, cap_a = _option_scalars(eps, z_loss, cap, n_cols, ACC)

    m = tl.full((), float("-inf"), ACC)  # running max
    s = tl.zeros((), ACC)  # running sum of exp(z - m)
    y, keep = _target(t_ptr, row, ignore_index, HARD, IGNORE)
    t_row = t_ptr + row * t_stride
    if HARD:
        if IGNORE:
            zy = tl.load(z_row + tl.where(keep, y, 0)).to(ACC)  # never ignore_index as a column
        else:
            zy = tl.load(z_row + y).to(ACC)  # the target logit: one scalar read
        zy = _capped(zy, cap_a, CAP)[0]
        tsum = tl.zeros((), ACC)  # sum_c z'_bc (SMOOTH only)
    else:
        zy = tl.zeros((), ACC)  # sum_c t_bc z_bc
        tsum = tl.zeros((), ACC)  # T_b

    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        z = tl.load(z_row + offs, mask=mask, other=float("-inf")).to(ACC)
        if CAP:
            z = tl.where(mask, _capped(z, cap_a, CAP)[0], float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # exp(-inf - finite) = 0: the first block, and masked lanes, contribute nothing.
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
        if HARD:
            if SMOOTH:
                tsum += tl.sum(tl.where(mask, z, 0.0), axis=0)
        else:
            t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
            if SMOOTH:
                t = tl.where(mask, keep_t * t + eps_c, 0.0)
            tsum += tl.sum(t, axis=0)
            # A masked lane has t = 0 and z = -inf; 0 * -inf would be NaN, so zero z first.
            zy += tl.sum(t * tl.where(mask, z, 0.0), axis=0)

    loss, lse, coef = _finish_row(m, s, zy, tsum, keep_t, eps_c, z_coef, HARD, ACC, SMOOTH, ZLOSS)
    _finish_loss(loss_ptr, row, loss, keep, kept_ptr, 0, IGNORE, COUNT, False)

    if WRITE_GRAD:
        # 1/B in the accumulation precision (a float argument would arrive as fp32, which
        # is 1/B only to ~6e-8: far outside fp64's tolerance when B is not a power of two).
        inv_b = tl.full((), 1.0, ACC) / n_rows
        g_row = g_ptr + row * g_stride
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            mask = offs < n_cols
            z, t, dz = _load_chunk(z_row, t_row, offs, mask, keep_t, eps_c, cap_a, HARD, ACC, SMOOTH, CAP)
            _write_grad(
                g_row, offs, mask, z, t, y, lse, coef, inv_b, HARD,
                dz, keep, keep_t, eps_c, SMOOTH, ZLOSS, CAP, IGNORE,
            )  # fmt: skip


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
    kept_ptr,
    ignore_index,
    eps: tl.float64,
    z_loss: tl.float64,
    cap: tl.float64,
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,  # >= C: one block is the row
    ACC: tl.constexpr,
    IGNORE: tl.constexpr = False,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
    CAP: tl.constexpr = False,
    COUNT: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    keep_t, eps_c, z_coef, cap_a = _option_scalars(eps, z_loss, cap, n_cols, ACC)
    y, keep = _target(t_ptr, row, ignore_index, HARD, IGNORE)
    z, t, dz = _load_chunk(
        z_ptr + row * z_stride,
        t_ptr + row * t_stride,
        offs,
        mask,
        keep_t,
        eps_c,
        cap_a,
        HARD,
        ACC,
        SMOOTH,
        CAP,
    )
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD, SMOOTH)
    loss, lse, coef = _finish_row(m, s, zy, tsum, keep_t, eps_c, z_coef, HARD, ACC, SMOOTH, ZLOSS)
    _finish_loss(loss_ptr, row, loss, keep, kept_ptr, 0, IGNORE, COUNT, False)
    if WRITE_GRAD:
        inv_b = tl.full((), 1.0, ACC) / n_rows  # in ACC: see _ce_rows_kernel
        _write_grad(
            g_ptr + row * g_stride, offs, mask, z, t, y, lse, coef, inv_b, HARD,
            dz, keep, keep_t, eps_c, SMOOTH, ZLOSS, CAP, IGNORE,
        )  # fmt: skip


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
    kept_ptr,
    ignore_index,
    eps: tl.float64,
    z_loss: tl.float64,
    cap: tl.float64,
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,  # next_power_of_2(K), >= 2
    ACC: tl.constexpr,
    IGNORE: tl.constexpr = False,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
    CAP: tl.constexpr = False,
    COUNT: tl.constexpr = False,
):
    # Logical work id from the ticket, not program_id: see the module docstring.
    work = tl.atomic_add(sync_ptr, 1, sem="relaxed").to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    offs = k * CHUNK + tl.arange(0, CHUNK)
    mask = offs < n_cols
    keep_t, eps_c, z_coef, cap_a = _option_scalars(eps, z_loss, cap, n_cols, ACC)
    y, keep = _target(t_ptr, row, ignore_index, HARD, IGNORE)
    z, t, dz = _load_chunk(
        z_ptr + row * z_stride,
        t_ptr + row * t_stride,
        offs,
        mask,
        keep_t,
        eps_c,
        cap_a,
        HARD,
        ACC,
        SMOOTH,
        CAP,
    )
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD, SMOOTH)
    _store_partial(ws_ptr, row, k, m, s, zy, tsum, KP)
    tl.debug_barrier()  # every thread's partial stores precede the release below
    counter = sync_ptr + 1 + row
    arrived = tl.atomic_add(counter, 1, sem="acq_rel") + 1
    while arrived < n_chunks:  # K = 1: the own arrival completes the row, no wait
        arrived = tl.atomic_add(counter, 0, sem="acquire")
    tl.debug_barrier()  # the acquire (one thread) precedes every thread's loads below
    m, s, zy, tsum = _merge_partials(ws_ptr, row, n_chunks, HARD, KP, ACC, True, SMOOTH)
    loss, lse, coef = _finish_row(m, s, zy, tsum, keep_t, eps_c, z_coef, HARD, ACC, SMOOTH, ZLOSS)
    _finish_loss(loss_ptr, row, loss, keep, kept_ptr, k, IGNORE, COUNT, True)
    if WRITE_GRAD:
        inv_b = tl.full((), 1.0, ACC) / n_rows
        _write_grad(
            g_ptr + row * g_stride, offs, mask, z, t, y, lse, coef, inv_b, HARD,
            dz, keep, keep_t, eps_c, SMOOTH, ZLOSS, CAP, IGNORE,
        )  # fmt: skip


@triton.jit
def _ce_split_partials_kernel(
    z_ptr,
    z_stride,
    t_ptr,
    t_stride,
    ws_ptr,
    n_cols,
    n_chunks,
    ignore_index,
    eps: tl.float64,
    cap: tl.float64,
    HARD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
    IGNORE: tl.constexpr = False,
    SMOOTH: tl.constexpr = False,
    CAP: tl.constexpr = False,
):
    """two_launch, launch 1: each (row, chunk) program writes its partial."""
    work = tl.program_id(0).to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    offs = k * CHUNK + tl.arange(0, CHUNK)
    mask = offs < n_cols
    keep_t, eps_c, _, cap_a = _option_scalars(eps, 0.0, cap, n_cols, ACC)
    y, keep = _target(t_ptr, row, ignore_index, HARD, IGNORE)
    z, t, dz = _load_chunk(
        z_ptr + row * z_stride,
        t_ptr + row * t_stride,
        offs,
        mask,
        keep_t,
        eps_c,
        cap_a,
        HARD,
        ACC,
        SMOOTH,
        CAP,
    )
    m, s, zy, tsum = _chunk_partial(z, t, offs, mask, y, HARD, SMOOTH)
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
    kept_ptr,
    ignore_index,
    eps: tl.float64,
    z_loss: tl.float64,
    cap: tl.float64,
    HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    CHUNK: tl.constexpr,
    KP: tl.constexpr,
    ACC: tl.constexpr,
    IGNORE: tl.constexpr = False,
    SMOOTH: tl.constexpr = False,
    ZLOSS: tl.constexpr = False,
    CAP: tl.constexpr = False,
    COUNT: tl.constexpr = False,
):
    """two_launch, launch 2: merge the row's partials; chunk 0 writes the loss, every chunk
    re-reads its logits and writes its gradient."""
    work = tl.program_id(0).to(tl.int64)
    row = work // n_chunks
    k = (work % n_chunks).to(tl.int32)
    keep_t, eps_c, z_coef, cap_a = _option_scalars(eps, z_loss, cap, n_cols, ACC)
    m, s, zy, tsum = _merge_partials(ws_ptr, row, n_chunks, HARD, KP, ACC, False, SMOOTH)
    loss, lse, coef = _finish_row(m, s, zy, tsum, keep_t, eps_c, z_coef, HARD, ACC, SMOOTH, ZLOSS)
    y, keep = _target(t_ptr, row, ignore_index, HARD, IGNORE)
    _finish_loss(loss_ptr, row, loss, keep, kept_ptr, k, IGNORE, COUNT, True)
    if WRITE_GRAD:
        offs = k * CHUNK + tl.arange(0, CHUNK)
        mask = offs < n_cols
        z, t, dz = _load_chunk(
            z_ptr + row * z_stride,
            t_ptr + row * t_stride,
            offs,
            mask,
            keep_t,
            eps_c,
            cap_a,
            HARD,
            ACC,
            SMOOTH,
            CAP,
        )
        inv_b = tl.full((), 1.0, ACC) / n_rows
        _write_grad(
            g_ptr + row * g_stride, offs, mask, z, t, y, lse, coef, inv_b, HARD,
            dz, keep, keep_t, eps_c, SMOOTH, ZLOSS, CAP, IGNORE,
        )  # fmt: skip


@triton.jit
def _scale_kernel(
    g_ptr, go_ptr, n, kept_ptr, n_rows, BLOCK: tl.constexpr, ACC: tl.constexpr, COUNT: tl.constexpr = False
):
    """g[:] *= grad_output, in place, unless grad_output == 1 (then nothing is read). COUNT: a
    mean over the kept rows whose gradient was written as one over all B rows; the factor is
    B / kept (exactly 1 when no row was ignored), 0 when every row was ignored."""
    go = tl.load(go_ptr).to(ACC)
    if COUNT:
        kept = tl.load(kept_ptr).to(ACC)
        go = tl.where(kept > 0, go * (n_rows / tl.maximum(kept, 1.0)), 0.0)
    if go != 1.0:
        pid = tl.program_id(0).to(tl.int64)
        step = tl.num_programs(0).to(tl.int64) * BLOCK
        for start in range(pid * BLOCK, n, step):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            g = tl.load(g_ptr + offs, mask=mask).to(ACC)
            tl.store(g_ptr + offs, (g * go).to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scale_rows_kernel(g_ptr, go_ptr, n_cols, g_stride, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """reduction "none": row b of g *= grad_output[b], in place, unless that is 1."""
    row = tl.program_id(0).to(tl.int64)
    go = tl.load(go_ptr + row).to(ACC)
    if go != 1.0:
        g_row = g_ptr + row * g_stride
        for start in range(0, n_cols, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n_cols
            g = tl.load(g_row + offs, mask=mask).to(ACC)
            tl.store(g_row + offs, (g * go).to(g_ptr.dtype.element_ty), mask=mask)


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


class Options(NamedTuple):
    """The loss options the kernel fuses (harness/cross_entropy/options.py); every field at its
    default is the plain loss, compiled to the plain kernel. ignore_index None: no row is
    ignored and no comparison made (the variant passes -100, F.cross_entropy's default; it
    applies to hard targets only). reduction decides the divisor folded into the gradient: B
    for "mean" (made the kept rows' count by the backward's scale, see `rows`' kept), 1 for
    "sum" and "none"."""

    ignore_index: int | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    reduction: str = "mean"


PLAIN = Options()
REDUCTIONS = ("mean", "sum", "none")


def _option_args(opts: Options, hard: bool, kept: Tensor | None, dummy: Tensor) -> tuple[tuple, dict]:
    """(runtime arguments, constexpr flags) of the options for the kernels. Off options pass
    neutral values that the kernel never reads."""
    ignore = hard and opts.ignore_index is not None
    flags = dict(
        IGNORE=ignore,
        SMOOTH=opts.label_smoothing != 0.0,
        ZLOSS=opts.z_loss != 0.0,
        CAP=opts.softcap is not None,
        COUNT=ignore and kept is not None,
    )
    args = (
        kept if flags["COUNT"] else dummy,
        int(opts.ignore_index) if ignore else 0,
        float(opts.label_smoothing),
        float(opts.z_loss),
        float(opts.softcap) if opts.softcap is not None else 1.0,
    )
    return args, flags


def check_options(opts: Options) -> None:
    if opts.reduction not in REDUCTIONS:
        raise ValueError(f"reduction={opts.reduction!r}: use one of {', '.join(REDUCTIONS)}")
    if opts.softcap is not None and not (math.isfinite(opts.softcap) and opts.softcap > 0):
        raise ValueError(f"softcap={opts.softcap!r}: use a finite number > 0, or None")


def rows(
    logits: Tensor,
    targets: Tensor,
    grad: Tensor | None,
    block: int | None = None,
    num_warps: int | None = None,
    path: str | None = None,
    *,
    options: Options = PLAIN,
    kept: Tensor | None = None,
) -> Tensor:
    """Per-row losses [B] (fp32; fp64 for fp64 logits; 0 on ignored rows) and, when `grad`
    ([B, C], the logits' dtype, contiguous rows) is given, the gradient of the mean loss (the
    sum's under reduction "sum"/"none") written into it; ignored rows get exactly 0.
    logits/targets as in `check_inputs`; block/num_warps/path as in `plan` (path "split" picks
    the cooperative form on CUDA and two_launch where programs are interpreted). `options`: the
    loss options (every path fuses them). `kept`: an int32 [1] tensor to which the number of
    rows not ignored is added (hard targets with an ignore_index; under "mean" the gradient is
    written as divided by B, and B / kept is the factor that makes it the kept rows' mean)."""
    check_inputs(logits, targets)
    check_options(options)
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    hard = targets.dtype == torch.int64
    if not hard and targets.stride(1) != 1:
        targets = targets.contiguous()
    b, c = logits.shape
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss = torch.empty(b, dtype=acc_dtype, device=logits.device)
    p = plan(c, logits.dtype, hard, grad is not None, block, num_warps, path)
    divisor = b if options.reduction == "mean" else 1
    args = (
        logits,
        logits.stride(0),
        targets,
        0 if hard else targets.stride(0),
        loss,
        grad if grad is not None else logits,
        grad.stride(0) if grad is not None else 0,
    )
    opt_args, flags = _option_args(options, hard, kept, loss)
    meta = dict(HARD=hard, WRITE_GRAD=grad is not None, ACC=_acc(logits.dtype), num_warps=p.num_warps)
    # The plain call passes no flag at all: the kernels' defaults, the plain specialization.
    opt_meta = {k: v for k, v in flags.items() if v}
    if p.path == "stream":
        _ce_rows_kernel[(b,)](*args, c, divisor, *opt_args, BLOCK=p.block, **meta, **opt_meta)
        return loss
    if p.path == "onepass":
        _ce_onepass_kernel[(b,)](*args, c, divisor, *opt_args, BLOCK=p.block, **meta, **opt_meta)
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
        _ce_split_coop_kernel[grid](
            *args, ws, sync, c, divisor, n_chunks, *opt_args, CHUNK=p.block, KP=kp, **meta, **opt_meta
        )
    else:
        part_meta = {k: v for k, v in opt_meta.items() if k in ("IGNORE", "SMOOTH", "CAP")}
        _ce_split_partials_kernel[grid](
            logits,
            logits.stride(0),
            targets,
            0 if hard else targets.stride(0),
            ws,
            c,
            n_chunks,
            opt_args[1],
            opt_args[2],
            opt_args[4],
            HARD=hard,
            CHUNK=p.block,
            KP=kp,
            ACC=meta["ACC"],
            num_warps=p.num_warps,
            **part_meta,
        )
        _ce_split_finish_kernel[grid](
            *args, ws, c, divisor, n_chunks, *opt_args, CHUNK=p.block, KP=kp, **meta, **opt_meta
        )
    return loss


def scale_(grad: Tensor, grad_output: Tensor, kept: Tensor | None = None) -> Tensor:
    """grad (contiguous, any float dtype) *= grad_output (a 0-dim tensor on the same device),
    in place, without a host sync: the kernel itself skips the pass when grad_output == 1.
    `kept` (int32 [1], from `rows`): a gradient written as a mean over all B = grad.shape[0]
    rows becomes one over the kept rows (times B / kept; 0 when none was kept)."""
    n = grad.numel()
    programs = max(1, min(_SCALE_PROGRAMS, triton.cdiv(n, _SCALE_BLOCK)))
    count = kept is not None
    _scale_kernel[(programs,)](
        grad,
        grad_output.reshape(1),
        n,
        kept if count else grad_output,
        grad.shape[0] if count else 1,
        BLOCK=_SCALE_BLOCK,
        ACC=_acc(grad.dtype),
        **({"COUNT": True} if count else {}),
    )
    return grad


def scale_rows_(grad: Tensor, grad_output: Tensor) -> Tensor:
    """grad [B, C] (unit column stride) row b *= grad_output[b] ([B]), in place, no host sync;
    rows whose grad_output is 1 are not read."""
    b, c = grad.shape
    block = min(_SCALE_BLOCK, triton.next_power_of_2(c))
    go = grad_output.reshape(b)
    go = go if go.is_contiguous() else go.contiguous()
    _scale_rows_kernel[(b,)](grad, go, c, grad.stride(0), BLOCK=block, ACC=_acc(grad.dtype), num_warps=4)
    return grad


def _reduce(loss: Tensor, opts: Options, kept: Tensor | None, dtype: torch.dtype) -> Tensor:
    """The reduced loss in `dtype` from the per-row losses. Mean with ignored rows: the mean over
    all B rows times B / kept (exactly 1 when none is ignored, so the plain loss keeps its bits;
    NaN when every row is ignored, as F.cross_entropy)."""
    if opts.reduction == "none":
        return loss.to(dtype)
    if opts.reduction == "sum":
        return loss.sum().to(dtype)
    if kept is None:
        return loss.mean().to(dtype)
    return (loss.mean() * (loss.shape[0] / kept.to(loss.dtype))).reshape(()).to(dtype)


def _kept_buffer(targets: Tensor, opts: Options) -> Tensor | None:
    """An int32 [1] zero for the kept-row count where a mean needs it (hard targets, an
    ignore_index), else None."""
    if opts.reduction == "mean" and opts.ignore_index is not None and targets.dtype == torch.int64:
        return torch.zeros(1, dtype=torch.int32, device=targets.device)
    return None


class FusedCrossEntropy(torch.autograd.Function):
    """Cross-entropy (reduced as the options say) whose forward also writes the gradient;
    backward scales it.

    The saved gradient is scaled in place and handed to autograd, so the extra memory of a
    forward+backward is one gradient-sized buffer (plus B accumulators, and for split rows a
    [B, 4, K] workspace); a second backward through the same graph (retain_graph=True) is
    refused rather than scaled twice."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, block: int | None, options: Options = PLAIN) -> Tensor:  # noqa: ANN001
        grad = torch.empty((logits.shape[0], logits.shape[1]), dtype=logits.dtype, device=logits.device)
        kept = _kept_buffer(targets, options)
        loss = rows(logits, targets, grad, block, options=options, kept=kept)
        ctx.grad, ctx.kept, ctx.per_row = grad, kept, options.reduction == "none"
        return _reduce(loss, options, kept, logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001, ANN205
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("triton_fused: the stored gradient was already used by an earlier backward")
        if ctx.per_row:
            return scale_rows_(grad, grad_output.detach()), None, None, None
        return scale_(grad, grad_output.detach(), ctx.kept), None, None, None


def cross_entropy(
    logits: Tensor,
    targets: Tensor,
    block: int | None = None,
    *,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy in the logits' dtype (logits [B, C] fp16/bf16/fp32/fp64; targets [B] int64
    or [B, C] probabilities): 0-dim for reduction "mean"/"sum", [B] per-row losses for "none".
    Options as `Options` (ignore_index None: no row ignored; pass -100 for F.cross_entropy's
    default). When no gradient can be asked for (grad mode off, or logits that do not require
    grad) only the loss is computed: a forward reads L bytes and writes no gradient, so its time
    is a forward's, not a hidden forward+backward's. `block` given: the stream kernel with that
    BLOCK (see plan)."""
    opts = Options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    check_options(opts)
    if torch.is_grad_enabled() and logits.requires_grad:
        return FusedCrossEntropy.apply(logits, targets, block, opts)
    kept = _kept_buffer(targets, opts)
    return _reduce(rows(logits, targets, None, block, options=opts, kept=kept), opts, kept, logits.dtype)
