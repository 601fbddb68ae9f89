"""Our fused form with the gradients computed in the forward: 3 matmuls, one chunk of tokens'
logits at a time.

  fused_linear   per chunk of n_c token rows: Z_c = H_c W^T [n_c, V] in the input dtype;
                 the loss rows and dZ_c = softmax(Z_c) - onehot written over Z_c (in place);
                 dH_c = s dZ_c W into its rows of dH; dW += s dZ_c^T H_c (s = 1 / kept rows
                 for the mean, applied as the matmuls' alpha, in fp32). The backward only
                 scales the stored dH and dW by grad_output.

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
  CUDA   harness's own Triton cross-entropy kernel (harness/cross_entropy/kernel.py `rows`),
         gradient written over the logits in place: the block is read once or twice and written
         once, with no fp32 copy;
  CPU    torch: an fp32 copy of the block, exp(z - lse), the target column minus 1.
The kernel path also runs on CPU tensors under TRITON_INTERPRET=1 (tests/test_linear_fused.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register

# The logits block's budget: at N = 8192 the chunk is 1024 rows at V = 128256 and 512 at
# V = 262144 in bf16 (half of that in fp32), against 6.3 GB materialised.
CHUNK_BYTES = 2**28


def chunk_rows(n: int, v: int, itemsize: int, budget: int | None = None) -> int:
    """Token rows per chunk: as many as fit the budget of logits (CHUNK_BYTES by default),
    a multiple of 64 (whole matmul tiles) where the budget allows, at least 1, at most N."""
    rows = (CHUNK_BYTES if budget is None else budget) // max(1, v * itemsize)
    if rows >= 64:
        rows -= rows % 64
    return max(1, min(n, rows))


def _softmax_grad_torch(z: Tensor, targets: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(per-row losses in fp32 (0 on ignored rows), dZ = softmax - onehot in z's dtype, 0 on
    ignored rows) of one block; z is not modified."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    zf = z.to(acc, copy=True)  # the fp32 block the softmax and its gradient are formed in
    lse = torch.logsumexp(zf, dim=1)
    kept = targets != ignore_index
    rows = kept.nonzero()[:, 0]
    losses = torch.zeros_like(lse)
    losses[rows] = lse[rows] - zf[rows, targets[rows]]
    grad = zf.sub_(lse[:, None]).exp_()
    grad[rows, targets[rows]] -= 1.0
    grad[~kept] = 0.0
    return losses, grad.to(z.dtype)


def _softmax_grad_kernel(z: Tensor, targets: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """As _softmax_grad_torch, by the Triton kernel, the gradient written over z."""
    from harness.cross_entropy import kernel  # triton only once a CUDA point runs

    options = kernel.Options(ignore_index=ignore_index, reduction="sum")  # divisor 1: s comes later
    losses = kernel.rows(z, targets, z, options=options)
    return losses, z


def _loss_rows_only(z: Tensor, targets: Tensor, ignore_index: int, use_kernel: bool) -> Tensor:
    """Per-row losses of one block without a gradient (the forward-only call): the kernel reads
    the block once and writes nothing."""
    if use_kernel:
        from harness.cross_entropy import kernel

        options = kernel.Options(ignore_index=ignore_index, reduction="sum")
        return kernel.rows(z, targets, None, options=options)
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    zf = z.to(acc)
    kept = targets != ignore_index
    picked = zf.gather(1, torch.where(kept, targets, 0)[:, None])[:, 0]
    return torch.where(kept, torch.logsumexp(zf, dim=1) - picked, 0.0)


def fused_linear_ce(
    hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, want_grad: bool, use_kernel: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(mean loss in the input dtype, dH, dW) of the mean loss (dH, dW None unless want_grad).
    NaN loss and zero gradients when every row is ignored, as F.cross_entropy."""
    n, v = hidden.shape[0], weight.shape[0]
    step = chunk_rows(n, v, hidden.element_size())
    kept = int((targets != ignore_index).sum().item())  # the mean's divisor, known before any dZ
    scale = 1.0 / kept if kept else 0.0
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    total = torch.zeros((), dtype=acc, device=hidden.device)
    dh = torch.empty_like(hidden) if want_grad else None
    dw = torch.empty_like(weight) if want_grad else None
    for lo in range(0, n, step):
        h, t = hidden[lo : lo + step], targets[lo : lo + step]
        z = F.linear(h, weight)  # [n_c, V] in the input dtype, as F.linear's logits
        if not want_grad:
            total += _loss_rows_only(z, t, ignore_index, use_kernel).sum()
            continue
        losses, dz = (_softmax_grad_kernel if use_kernel else _softmax_grad_torch)(z, t, ignore_index)
        total += losses.sum()
        del z  # the kernel wrote dz over it; on the CPU path it is dead
        # s folded into the matmuls' alpha: applied in their fp32 accumulators, no extra pass
        torch.addmm(dh[lo : lo + step], dz, weight, beta=0, alpha=scale, out=dh[lo : lo + step])
        # the sum over chunks, rounded to the dtype once per chunk (beta=0 first: dw is empty,
        # and addmm ignores its input, NaN included, when beta is 0)
        dw.addmm_(dz.T, h, beta=0 if lo == 0 else 1, alpha=scale)
        del dz
    loss = (total / kept) if kept else torch.full((), float("nan"), dtype=acc, device=hidden.device)
    return loss.to(hidden.dtype), dh, dw


class FusedLinearCE(torch.autograd.Function):
    """Loss in the forward with dH and dW; backward scales them by grad_output (so a second
    backward through the same graph is refused rather than scaled twice)."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
        loss, dh, dw = fused_linear_ce(hidden, weight, targets, ignore_index, True, hidden.is_cuda)
        ctx.grads = (dh, dw)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("fused_linear: the stored gradients were already used by an earlier backward")
        dh, dw = grads
        if dh.is_cuda:
            from harness.cross_entropy import kernel  # scales in place, skips the pass when g == 1

            kernel.scale_(dh, grad_out.detach())
            kernel.scale_(dw, grad_out.detach())
        elif float(grad_out) != 1.0:
            dh.mul_(grad_out.to(dh.dtype))
            dw.mul_(grad_out.to(dw.dtype))
        return dh, dw, None, None


@register(
    "fused_linear",
    targets={"hard"},
    options={"ignore_index"},
    description="chunks of token rows with the gradients in the forward (3 matmuls): dZ over the "
    "logits block (Triton kernel on CUDA), dW accumulated in the input dtype",
)
def fused_linear(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return FusedLinearCE.apply(hidden, weight, targets, ignore_index)
    return fused_linear_ce(hidden, weight, targets, ignore_index, False, hidden.is_cuda)[0]
