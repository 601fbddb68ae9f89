"""Fused cross-entropy in Triton: one launch gives each row's loss and, optionally, the
gradient of the mean loss; the backward only scales that stored gradient.

Semantics are those of F.cross_entropy and harness/cross_entropy/reference.py (logits z [B, C], targets
class indices [B] int64 or probabilities t [B, C], T_b = sum_c t_bc):

    loss_b = T_b * lse_b - sum_c t_bc z_bc                  lse_b = log sum_c exp(z_bc)
    grad_bc = (T_b * softmax(z_b)_c - t_bc) / B              (hard: T_b = 1, t = one-hot)

One program per row. Pass 1 streams the row in blocks of BLOCK columns with an online
max/sum (Milakov & Gimelshein 2018): m <- max(m, max(block)), s <- s*exp(m_old - m) +
sum(exp(block - m)), one exp per logit. Pass 2 (only when the gradient is wanted) reads the
row again, which was read moments before by the same program and is still in L2 for all but
the largest rows, and writes the gradient. So fwd_bwd moves L from DRAM + L (the gradient
write), plus whatever of the second read misses L2: the 2L floor of README, Numerics §7 when the
rows in flight fit in L2. All arithmetic is fp32 (fp16/bf16 inputs are upcast on load, the
gradient is rounded once on store); fp64 inputs are computed in fp64.

Offsets: the row offset is row * stride in int64, so B*C > 2^31 elements address correctly
(PyTorch issues #111484, #84144); column offsets within a row stay int32 (C < 2^31).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# Programs of the scale kernel: a grid-stride loop, so that when grad_output == 1 (every
# plain .backward()/autograd.grad of the loss) the launch is a few hundred programs that each
# read one scalar and exit, instead of B*C/BLOCK programs.
_SCALE_PROGRAMS = 1024
_SCALE_BLOCK = 4096


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

    lse = m + tl.log(s)
    # T*m - zy before adding T*log(s): when the target holds the max (a confident, small
    # loss) m - zy is exactly 0 for hard targets and log(s) is not cancelled against m.
    tl.store(loss_ptr + row, (total * m - zy) + total * tl.log(s))

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


# Launch settings, measured on an NVIDIA H200 at B=8192, C=128256, bf16, hard targets
# (do_bench medians over the copy-bandwidth floor; `python scripts/gpu_check.py` repeats the scan):
#
#   BLOCK x warps   fwd (x floor)   fwd_bwd (x floor)
#   16384 x 32      1.42            1.60      the earlier rule for every row of 8192+ classes
#    8192 x 4       1.03            1.58      fwd: one read of the row, nothing to hide it behind
#    8192 x 16      1.25            1.54      fwd_bwd: the second pass re-reads the row from DRAM
#
# So the forward uses 8192-wide blocks with 4 warps, and the forward that also writes the
# gradient 16 warps. Blocks narrower than 8192 (rows under 8192 classes: one block per row)
# keep the earlier warps rule; other shapes and dtypes are unmeasured.
_FWD_BLOCK, _FWD_WARPS = 8192, 4
_GRAD_BLOCK, _GRAD_WARPS = 8192, 16


def _launch_params(n_cols: int, block: int | None, writes_grad: bool = True) -> tuple[int, int]:
    """(BLOCK, num_warps): a power of two covering the row up to the measured block width."""
    if block is None:
        block = min(_GRAD_BLOCK if writes_grad else _FWD_BLOCK, triton.next_power_of_2(n_cols))
    if block & (block - 1):
        raise ValueError(f"block={block} must be a power of two")
    if block >= 8192:
        num_warps = _GRAD_WARPS if writes_grad else _FWD_WARPS
    else:
        num_warps = 16 if block >= 2048 else 4
    return block, num_warps


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
) -> Tensor:
    """Launch the row kernel once: per-row losses [B] (fp32; fp64 for fp64 logits) and, when
    `grad` ([B, C], the logits' dtype, contiguous rows) is given, the gradient of the mean
    loss written into it. logits/targets as in `check_inputs`."""
    check_inputs(logits, targets)
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    hard = targets.dtype == torch.int64
    if not hard and targets.stride(1) != 1:
        targets = targets.contiguous()
    b, c = logits.shape
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss = torch.empty(b, dtype=acc_dtype, device=logits.device)
    blk, warps = _launch_params(c, block, writes_grad=grad is not None)
    warps = num_warps or warps  # the settings scan (scripts/gpu_check.py) tries others
    _ce_rows_kernel[(b,)](
        logits,
        logits.stride(0),
        targets,
        0 if hard else targets.stride(0),
        loss,
        grad if grad is not None else logits,
        grad.stride(0) if grad is not None else 0,
        c,
        b,
        HARD=hard,
        WRITE_GRAD=grad is not None,
        BLOCK=blk,
        ACC=_acc(logits.dtype),
        num_warps=warps,
    )
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
    forward+backward is one gradient-sized buffer (plus B accumulators); a second backward
    through the same graph (retain_graph=True) is refused rather than scaled twice."""

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
    off, or logits that do not require grad) only pass 1 runs: a forward reads L bytes and
    writes no gradient, so its time is a forward's, not a hidden forward+backward's."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return FusedCrossEntropy.apply(logits, targets, block)
    return rows(logits, targets, None, block).mean().to(logits.dtype)
