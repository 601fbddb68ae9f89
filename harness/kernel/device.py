"""The device code of the fused cross-entropy in Triton: the @triton.jit helpers and kernels.
One launch gives each row's loss and, optionally, the gradient of the mean loss; the backward
only scales that stored gradient. host.py launches these kernels; launch_table.py picks the
path and its settings for each shape.

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

Launch settings (path, BLOCK or CHUNK, num_warps for each shape): launch_table.py, which also
says where each path wins on an H200 and why.

Loss options (harness/loss/options.py; host.py's `Options`, `rows(options=...)`): ignore_index,
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

import triton
import triton.language as tl

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
    1 - tanh^2, which cancels for large |x|). z = -inf stays -inf (a masked class holds no
    mass under the cap: harness/loss/options.py `capped`), its dz' = 4e / (1 + e)^2 = 0.
    Without CAP: z itself (and z again as an unused placeholder)."""
    if CAP:
        x = z / cap
        e = tl.exp(-2.0 * tl.abs(x))
        d = 1.0 + e
        th = (1.0 - e) / d
        zc = tl.where(z == float("-inf"), z, cap * tl.where(x < 0.0, -th, th))
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
    z, dz = _capped(z, cap, CAP)  # -inf lanes stay -inf
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
    # A wholly masked chunk has m = -inf, and exp(-inf - -inf) is NaN: its partial is (-inf, 0),
    # which the merge weighs by exp(-inf - M) = 0 (FA #1930: NaN by where the finite logits fall).
    s = tl.sum(tl.exp(z - tl.where(m == float("-inf"), 0.0, m)), axis=0)
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
        z = _capped(z, cap_a, CAP)[0]  # -inf lanes (past the row, or masked) stay -inf
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # exp(-inf - finite) = 0: the first block, and masked lanes, contribute nothing.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: 0, not NaN (FA #1930)
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(z - shift), axis=0)
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
