"""Plausible fused linear + cross-entropy bugs, written as user variants (tests.linear_bugs:NAME).

Each is a mistake that has been made in real code or is one keystroke away from a correct line,
in the loss, in a hand-written backward, or in an option.
tests/linear_cross_entropy/test_linear_bugs.py runs each through the harness and requires the
flag on the column it breaks (and, where the bug leaves something right, that column left alone).
Every function takes hidden [N, D], weight [V, D], targets [N] and the options it declares, and
returns the loss.

  mean_over_all_rows            the mean divides by N, not by the rows that are kept
  ignored_rows_in_dh            dH from a dZ whose ignored rows were not zeroed (dW's was)
  ignored_rows_in_dw            dW from a dZ whose ignored rows were not zeroed (dH's was)
  bias_grad_zero                a custom backward that returns no bias gradient (zeros)
  bias_grad_mean                the bias gradient averaged over the tokens instead of summed
  smoothing_over_v_minus_1      label smoothing spread over the V - 1 other classes, not all V
  smoothing_on_ignored_rows     the smoothing term averaged over every row, ignored ones too
  z_loss_of_max                 z-loss on the row max instead of the lse
  softcap_after_loss            the cap applied to the loss instead of the logits
  last_chunk_missing            dW's loop over vocabulary chunks stops one chunk early
  dw_accumulated_in_bf16        dW summed over row chunks in the weight's dtype (correct, but
                                rounded once per chunk: the test says whether that is flagged)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

HARD = {"hard"}


def _up(z: Tensor) -> Tensor:
    """fp32 for fp16/bf16/fp32 logits; fp64 stays fp64 (so that a bug is the only error in fp64)."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _plain(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, ignore_index: int):
    """(loss, dZ [N, V] in fp32 or fp64, kept [N]) of the plain mean: dZ = (softmax - onehot) / n
    on the kept rows."""
    z = _up(F.linear(hidden, weight, bias))
    kept = targets != ignore_index
    loss = F.cross_entropy(z, targets, ignore_index=ignore_index)
    dz = torch.softmax(z, dim=1)
    rows = kept.nonzero()[:, 0]
    dz[rows, targets[rows]] -= 1.0
    return loss, dz / kept.sum(), kept


class _HandBackward(torch.autograd.Function):
    """The plain mean loss with a hand-written backward; `grads(dz, kept, h, w) -> (dH, dW, db)`
    is where each bug lives. dZ arrives unmasked on ignored rows (softmax / n) and with the
    mask `kept`: a correct backward multiplies by it."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, grads):
        loss, dz, kept = _plain(hidden, weight, bias, targets, ignore_index)
        unmasked = torch.softmax(_up(F.linear(hidden, weight, bias)), dim=1) / kept.sum()
        dz = torch.where(kept[:, None], dz, unmasked)
        ctx.save_for_backward(hidden, weight, dz, kept)
        ctx.grads, ctx.has_bias = grads, bias is not None
        return loss.to(hidden.dtype)

    @staticmethod
    def backward(ctx, g):
        hidden, weight, dz, kept = ctx.saved_tensors
        dh, dw, db = ctx.grads(dz * g.to(dz.dtype), kept, hidden, weight)
        return dh, dw, (db if ctx.has_bias else None), None, None, None


def _hand(grads, hidden, weight, targets, ignore_index, bias):
    return _HandBackward.apply(hidden, weight, bias, targets, ignore_index, grads)


def _masked(dz: Tensor, kept: Tensor) -> Tensor:
    return dz * kept[:, None]


def mean_over_all_rows(hidden, weight, targets, *, ignore_index=-100):
    """The summed loss over the kept rows divided by N, as if no row were ignored."""
    losses = F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=ignore_index, reduction="none")
    return losses.sum() / targets.shape[0]


def ignored_rows_in_dh(hidden, weight, targets, *, ignore_index=-100):
    """dZ masked for dW but not for dH: the ignored rows' softmax leaks into their dH rows."""

    def grads(dz, kept, h, w):
        return (dz.to(h.dtype) @ w), (_masked(dz, kept).to(h.dtype).T @ h), None

    return _hand(grads, hidden, weight, targets, ignore_index, None)


def ignored_rows_in_dw(hidden, weight, targets, *, ignore_index=-100):
    """dZ masked for dH but not for dW: the ignored rows' softmax leaks into every row of dW."""

    def grads(dz, kept, h, w):
        return (_masked(dz, kept).to(h.dtype) @ w), (dz.to(h.dtype).T @ h), None

    return _hand(grads, hidden, weight, targets, ignore_index, None)


def bias_grad_zero(hidden, weight, targets, *, ignore_index=-100, bias=None):
    """A hand-written backward that returns dH and dW and a zero bias gradient."""

    def grads(dz, kept, h, w):
        d = _masked(dz, kept).to(h.dtype)
        return d @ w, d.T @ h, torch.zeros(w.shape[0], dtype=h.dtype, device=h.device)

    return _hand(grads, hidden, weight, targets, ignore_index, bias)


def bias_grad_mean(hidden, weight, targets, *, ignore_index=-100, bias=None):
    """The bias gradient as dZ.mean(0), the tokens averaged where they must be summed."""

    def grads(dz, kept, h, w):
        d = _masked(dz, kept)
        return d.to(h.dtype) @ w, d.to(h.dtype).T @ h, d.mean(dim=0).to(h.dtype)

    return _hand(grads, hidden, weight, targets, ignore_index, bias)


for _fn in (mean_over_all_rows, ignored_rows_in_dh, ignored_rows_in_dw, bias_grad_zero, bias_grad_mean):
    _fn.harness_targets = HARD
    _fn.harness_options = {"ignore_index"} | ({"bias"} if _fn.__name__.startswith("bias") else set())


def smoothing_over_v_minus_1(hidden, weight, targets, *, ignore_index=-100, label_smoothing=0.0):
    """eps spread over the V - 1 classes other than the target (1 - eps on the target): PyTorch
    and the harness spread it over all V, the target included."""
    z = _up(F.linear(hidden, weight))
    v = z.shape[1]
    kept = targets != ignore_index
    safe = torch.where(kept, targets, 0)
    q = torch.full_like(z, label_smoothing / (v - 1)).scatter_(1, safe[:, None], 1.0 - label_smoothing)
    rows = -(q * F.log_softmax(z, dim=1)).sum(dim=1)
    return (rows * kept).sum() / kept.sum()


def smoothing_on_ignored_rows(hidden, weight, targets, *, ignore_index=-100, label_smoothing=0.0):
    """PyTorch #73205 on the head: the uniform term averaged over every row, ignored ones too."""
    log_p = F.log_softmax(_up(F.linear(hidden, weight)), dim=1)
    nll = F.nll_loss(log_p, targets, ignore_index=ignore_index)
    return (1 - label_smoothing) * nll + label_smoothing * (-log_p.mean(dim=1)).mean()


def z_loss_of_max(hidden, weight, targets, *, ignore_index=-100, z_loss=0.0):
    """z-loss on max_v z_v, the stabiliser's shift, instead of log sum_v exp(z_v)."""
    z = _up(F.linear(hidden, weight))
    kept = targets != ignore_index
    rows = z_loss * z.amax(dim=1).square() * kept
    return F.cross_entropy(z, targets, ignore_index=ignore_index) + rows.sum() / kept.sum()


def softcap_after_loss(hidden, weight, targets, *, ignore_index=-100, softcap=None):
    """softcap * tanh(loss / softcap): the cap on the wrong tensor."""
    loss = F.cross_entropy(_up(F.linear(hidden, weight)), targets, ignore_index=ignore_index)
    return loss if softcap is None else softcap * torch.tanh(loss / softcap)


smoothing_over_v_minus_1.harness_options = {"ignore_index", "label_smoothing"}
smoothing_on_ignored_rows.harness_options = {"ignore_index", "label_smoothing"}
z_loss_of_max.harness_options = {"ignore_index", "z_loss"}
softcap_after_loss.harness_options = {"ignore_index", "softcap"}


def last_chunk_missing(hidden, weight, targets, *, ignore_index=-100):
    """A hand-chunked dW whose loop stops one chunk early: range(0, V - CHUNK, CHUNK) where
    range(0, V, CHUNK) was meant, so dW of the last vocabulary chunk stays zero."""

    def grads(dz, kept, h, w):
        d = _masked(dz, kept).to(h.dtype)
        dw = torch.zeros_like(w)
        chunk = 1024
        for lo in range(0, w.shape[0] - chunk, chunk):
            dw[lo : lo + chunk] = d[:, lo : lo + chunk].T @ h
        return d @ w, dw, None

    return _hand(grads, hidden, weight, targets, ignore_index, None)


def last_class_dw_halved(hidden, weight, targets, *, ignore_index=-100):
    """dW right but for the last class's row, halved (a tail tile scaled twice): at V = 32000 it
    is 1/32000 of dW, far below the norm-wise bound in bf16, and all of that class's row."""

    def grads(dz, kept, h, w):
        d = _masked(dz, kept).to(h.dtype)
        dw = d.T @ h
        dw[-1] *= 0.5
        return d @ w, dw, None

    return _hand(grads, hidden, weight, targets, ignore_index, None)


# Rows per chunk of dw_accumulated_in_bf16: 16 chunks at N = 256, as a row-chunked fused kernel
# splits the tokens (Liger-Kernel sizes its chunks so that [chunk, V] is about [N, D]).
ROW_CHUNK = 16


def dw_accumulated_in_bf16(hidden, weight, targets, *, ignore_index=-100):
    """dW += dZ_k^T H_k over chunks of rows, the sum kept in the weight's dtype: each chunk's
    product is exact to fp32 accumulation, then rounded into a bf16 (or fp32) running sum, as
    Liger-Kernel's fused linear cross-entropy does with accum_dtype left at None."""

    def grads(dz, kept, h, w):
        d = _masked(dz, kept).to(h.dtype)
        dw = torch.zeros_like(w)
        for lo in range(0, h.shape[0], ROW_CHUNK):
            dw += d[lo : lo + ROW_CHUNK].T @ h[lo : lo + ROW_CHUNK]
        return d @ w, dw, None

    return _hand(grads, hidden, weight, targets, ignore_index, None)


for _fn in (
    smoothing_over_v_minus_1,
    smoothing_on_ignored_rows,
    z_loss_of_max,
    softcap_after_loss,
    last_chunk_missing,
    last_class_dw_halved,
    dw_accumulated_in_bf16,
):
    _fn.harness_targets = HARD
for _fn in (last_chunk_missing, last_class_dw_halved, dw_accumulated_in_bf16):
    _fn.harness_options = {"ignore_index"}


class _DwScaledAfterTheSum(torch.autograd.Function):
    # Per-row losses (reduction none) with the gradients formed in the forward, as fused kernels
    # do: dH per row, dW already summed over the rows. The backward scales dH's rows by their
    # incoming gradients, right, and dW by their mean, which is right only when they are all
    # equal (Liger-Kernel's fused linear cross-entropy once did the like for reduction="none").
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index):
        z = _up(F.linear(hidden, weight))
        kept = targets != ignore_index
        losses = F.cross_entropy(z, targets, ignore_index=ignore_index, reduction="none")
        dz = torch.softmax(z, dim=1)
        rows = kept.nonzero()[:, 0]
        dz[rows, targets[rows]] -= 1.0
        dz = _masked(dz, kept).to(hidden.dtype)
        ctx.grads = (dz @ weight, dz.T @ hidden)
        return losses.to(hidden.dtype)

    @staticmethod
    def backward(ctx, g):
        dh, dw = ctx.grads
        return dh * g[:, None].to(dh.dtype), dw * g.mean().to(dw.dtype), None, None


def dw_scaled_after_the_sum(hidden, weight, targets, *, ignore_index=-100, reduction="mean"):
    """reduction none only: per-row losses, dW scaled by the mean incoming gradient."""
    assert reduction == "none"
    return _DwScaledAfterTheSum.apply(hidden, weight, targets, ignore_index)


dw_scaled_after_the_sum.harness_targets = HARD
dw_scaled_after_the_sum.harness_options = {"ignore_index", "reduction"}
