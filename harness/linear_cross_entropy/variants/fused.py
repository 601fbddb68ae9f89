"""Our fused form with the gradients computed in the forward: 3 matmuls, one chunk of tokens'
logits at a time.

  fused_linear   per chunk of n_c token rows: Z_c = H_c W^T (+ b) [n_c, V] in the input
                 dtype; the loss rows and dZ_c = softmax(Z_c) - onehot (with the options'
                 terms) written over Z_c (in place); dH_c = s dZ_c W into its rows of dH;
                 dW += s dZ_c^T H_c; db += s colsum(dZ_c) in fp32 (s = 1 / kept rows, the
                 mean's, applied as the matmuls' alpha, in fp32). The backward only scales
                 the stored gradients by grad_output.

Options: ignored rows, label smoothing, z-loss and softcap, by the first family's formulas
(harness/loss/options.py), and the bias. Not class weights (the kernel has none) and
not reduction "sum"/"none": only the mean is built, and under "none" dW would need each row's
incoming gradient, which arrives after the forward that already summed the rows into dW.

Why this shape. The other fused forms trade something:
  - materialised: [N, V] logits and their gradient (6.3 GB at N = 8192, V = 128256 bf16);
  - chunked_linear: vocabulary chunks need every row's lse before any dZ, so its backward
    computes the logits a second time: 8 N D V FLOPs against the 6 N D V floor;
  - token chunks (this form, Liger's): each chunk's rows see all V classes at once, so the
    softmax is complete and dZ_c is final in the forward: 6 N D V FLOPs, the floor's count.
The price is dW: it is the sum over the N / n_c chunks of dZ_c^T H_c, and accumulating it in
the input dtype (to hold no fp32 [V, D] copy: 2 GB at V = 262144, D = 4096) rounds it once per
chunk instead of once. The chunk is therefore as large as the logits budget allows
(CHUNK_BYTES: 2^28 B of logits, 1024 rows at V = 128256 in bf16, so 8 roundings at N = 8192);
the rows' error columns measure what those roundings cost against float64.

Extra memory of a forward + backward: dH + dW (the outputs, held from the forward to the
backward) and one [n_c, V] block of logits in the input dtype, plus its fp32 softmax on the
CPU path: the stretch target of README "Fused linear + cross-entropy" is dH + dW + one chunk.

Two paths for the per-chunk softmax gradient, the same arithmetic (fp32, one rounding on store):
  CUDA   harness's own Triton cross-entropy kernel (harness/kernel, `rows`),
         gradient written over the logits in place: the block is read once or twice and written
         once, with no fp32 copy;
  CPU    torch: an fp32 copy of the block, exp(z - lse) with the options' terms.
The kernel path also runs on CPU tensors under TRITON_INTERPRET=1
(tests/linear_cross_entropy/test_linear_fused.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register
from harness.loss.options import Keywords, LossOptions, Unpack

# The logits block's budget: at N = 8192 the chunk is 1024 rows at V = 128256 and 512 at
# V = 262144 in bf16 (half of that in fp32), against 6.3 GB materialised.
CHUNK_BYTES = 2**28
# On a CPU a smaller one: the block (and the torch path's fp32 copy of it, 3x its bytes in bf16)
# is best kept within the cores' caches, and the many small matmuls that costs are cheap there.
# 2^22 B: 64 rows at V = 32000 in bf16, so at N = 1024 sixteen roundings of dW (0.17x its
# bound, README); with 2^28 a CPU held every row in one chunk (279 MB at N = 1024, D = 256,
# V = 32000, against chunked_linear's 197 MB).
CPU_CHUNK_BYTES = 2**22


def chunk_rows(n: int, v: int, itemsize: int, budget: int | None = None) -> int:
    """Token rows per chunk: as many as fit `budget` bytes of logits (CHUNK_BYTES unless given;
    read at each call: the tests shrink it), a multiple of 64 (whole matmul tiles) where it
    allows, at least 1, at most N."""
    rows = (CHUNK_BYTES if budget is None else budget) // max(1, v * itemsize)
    if rows >= 64:
        rows -= rows % 64
    return max(1, min(n, rows))


def _kernel_options(opts: LossOptions) -> Any:
    """The kernel's options, reduced as a sum: the mean's 1 / kept comes in the matmuls."""
    from harness import kernel  # triton only once a CUDA point runs

    return kernel.Options(opts.ignore_index, opts.label_smoothing, opts.z_loss, opts.softcap, "sum")


def _softmax_grad_torch(
    z: Tensor, targets: Tensor, opts: LossOptions, want_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """(per-row losses in fp32, 0 on ignored rows; dZ of their sum in z's dtype, 0 on ignored
    rows, or None) of one block, by the formula of harness/loss/options.py with z'
    = softcap(z):  loss = (1 - eps)(lse - z'_y) + eps (lse - mean_v z'_v) + z_loss lse^2,
    dZ = ((1 + 2 z_loss lse) p - q) dz'/dz,  q = (1 - eps) onehot(y) + eps / V.
    z is not modified."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    zf = z.to(acc, copy=True)  # the fp32 block the softmax and its gradient are formed in
    v, eps, cap = z.shape[1], opts.label_smoothing, opts.softcap
    chain = None
    if cap is not None:
        t = zf.div_(cap).tanh_()
        chain = 1.0 - t * t if want_grad else None  # sech^2(z / cap) = dz'/dz
        t.mul_(cap)
    lse = torch.logsumexp(zf, dim=1)
    kept = targets != opts.ignore_index
    safe_t = torch.where(kept, targets, 0)
    losses = (1.0 - eps) * (lse - zf.gather(1, safe_t[:, None])[:, 0])
    if eps:
        losses = losses + eps * (lse - zf.mean(dim=1))
    if opts.z_loss:
        losses = losses + opts.z_loss * lse.square()
    losses = torch.where(kept, losses, 0.0)
    if not want_grad:
        return losses, None
    grad = zf.sub_(lse[:, None]).exp_()
    if opts.z_loss:
        grad.mul_((1.0 + 2.0 * opts.z_loss * lse)[:, None])
    if eps:
        grad.sub_(eps / v)
    rows = kept.nonzero()[:, 0]
    grad[rows, targets[rows]] -= 1.0 - eps
    if chain is not None:
        grad.mul_(chain)
    grad[~kept] = 0.0
    return losses, grad.to(z.dtype)


def _block(z: Tensor, targets: Tensor, opts: LossOptions, want_grad: bool, use_kernel: bool):
    """(losses, dZ or None) of one block: by the kernel (dZ written over z, which is then
    spent), or by torch."""
    if not use_kernel:
        return _softmax_grad_torch(z, targets, opts, want_grad)
    from harness import kernel

    losses = kernel.rows(z, targets, z if want_grad else None, options=_kernel_options(opts))
    return losses, z if want_grad else None


def fused_linear_ce(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    opts: LossOptions,
    want_grad: bool,
    use_kernel: bool,
) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """(the mean loss over the rows not ignored, in the input dtype; (dH, dW) or (dH, dW, db) of
    it, or None unless want_grad). NaN loss and zero gradients when every row is ignored, as
    F.cross_entropy. Only the mean: under reduction="none" dW would need each row's incoming
    gradient, which arrives after the forward that formed it (the option is not declared)."""
    n, v = hidden.shape[0], weight.shape[0]
    budget = CHUNK_BYTES if hidden.is_cuda else min(CHUNK_BYTES, CPU_CHUNK_BYTES)
    step = chunk_rows(n, v, hidden.element_size(), budget)
    kept = int((targets != opts.ignore_index).sum().item())  # the mean's divisor, before any dZ
    scale = 1.0 / kept if kept else 0.0
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    total = torch.zeros((), dtype=acc, device=hidden.device)
    dh = torch.empty_like(hidden) if want_grad else None
    dw = torch.empty_like(weight) if want_grad else None
    # db in fp32 across the chunks: [V] is small, and its rows' sum would otherwise round per chunk
    db = torch.zeros(v, dtype=acc, device=hidden.device) if want_grad and bias is not None else None
    for lo in range(0, n, step):
        h, t = hidden[lo : lo + step], targets[lo : lo + step]
        z = F.linear(h, weight, bias)  # [n_c, V] in the input dtype, as F.linear's logits
        losses, dz = _block(z, t, opts, want_grad, use_kernel)
        del z  # the kernel wrote dz over it; on the CPU path it is dead
        total += losses.sum()
        if dz is None:
            continue
        # s folded into the matmuls' alpha: applied in their fp32 accumulators, no extra pass
        torch.addmm(dh[lo : lo + step], dz, weight, beta=0, alpha=scale, out=dh[lo : lo + step])
        # the sum over chunks, rounded to the dtype once per chunk (beta=0 first: dw is empty,
        # and addmm ignores its input, NaN included, when beta is 0)
        dw.addmm_(dz.T, h, beta=0 if lo == 0 else 1, alpha=scale)
        if db is not None:
            db.add_(dz.sum(dim=0, dtype=acc), alpha=scale)
        del dz
    loss = (total / kept) if kept else torch.full((), float("nan"), dtype=acc, device=hidden.device)
    if not want_grad:
        return loss.to(hidden.dtype), None
    grads = (dh, dw) if db is None else (dh, dw, db.to(bias.dtype))
    return loss.to(hidden.dtype), grads


class FusedLinearCE(torch.autograd.Function):
    """Loss in the forward with dH, dW (and db); backward scales them by grad_output (so a
    second backward through the same graph is refused rather than scaled twice)."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, opts: LossOptions
    ) -> Tensor:
        loss, grads = fused_linear_ce(hidden, weight, bias, targets, opts, True, hidden.is_cuda)
        ctx.grads = grads
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("fused_linear: the stored gradients were already used by an earlier backward")
        if grads[0].is_cuda:
            from harness import kernel  # scales in place, skips the pass when g == 1

            for g in grads:
                kernel.scale_(g, grad_out.detach())
        elif float(grad_out) != 1.0:
            for g in grads:
                g.mul_(grad_out.to(g.dtype))
        dh, dw, *db = grads
        return dh, dw, db[0] if db else None, None, None


@register(
    "fused_linear",
    targets={"hard"},
    options={"ignore_index", "label_smoothing", "z_loss", "softcap", "bias"},
    description="chunks of token rows with the gradients in the forward (3 matmuls): dZ over the "
    "logits block (Triton kernel on CUDA), dW accumulated in the input dtype",
)
def fused_linear(hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    opts, bias = LossOptions.of_keywords(options), options.get("bias")
    params = (hidden, weight) if bias is None else (hidden, weight, bias)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return FusedLinearCE.apply(hidden, weight, bias, targets, opts)
    return fused_linear_ce(hidden, weight, bias, targets, opts, False, hidden.is_cuda)[0]
