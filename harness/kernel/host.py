"""The host side of the fused cross-entropy: checks, loss options, launches and autograd.

  check_inputs, check_options  the logits' and targets' shapes, the options' values
  Options, PLAIN               the loss options the kernels fuse (PLAIN: every one at its default)
  rows                         per-row losses and, when asked, the gradient written into a buffer,
                               by the path `plan` (launch_table.py) picks, on device.py's kernels
  scale_, scale_rows_          the backward: the stored gradient scaled in place, no host sync
  FusedCrossEntropy            the autograd Function: the forward writes the gradient, backward
                               scales it
  cross_entropy                the reduced loss (or the per-row losses), with the options

The numerics, the paths and the cooperative exchange: device.py's docstring.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from harness.kernel.device import (
    _ce_onepass_kernel,
    _ce_rows_kernel,
    _ce_split_coop_kernel,
    _ce_split_finish_kernel,
    _ce_split_partials_kernel,
    _scale_kernel,
    _scale_rows_kernel,
)
from harness.kernel.launch_table import plan
from harness.loss.declared import REDUCTIONS

# Programs of the scale kernel: a grid-stride loop, so that when grad_output == 1 (every
# plain .backward()/autograd.grad of the loss) the launch is a few hundred programs that each
# read one scalar and exit, instead of B*C/BLOCK programs.
_SCALE_PROGRAMS = 1024
_SCALE_BLOCK = 4096

# Workspace slots per partial: m, s, sum t*z (hard: the target logit when in the chunk), sum t
# (the [B, 4, KP] layout of device.py's _store_partial and _merge_partials).
_NPART = 4


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


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
    """The loss options the kernel fuses (harness/loss/options.py); every field at its
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
