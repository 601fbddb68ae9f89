"""Plausible cross-entropy bugs, written as user variants (tests.bug_variants:NAME).

Each is a mistake that has been made in real code or is one keystroke away from a correct line.
The verdict test (tests/cross_entropy/test_verdicts.py) and `python scripts/verdict_audit.py` require the
harness to flag each one wherever its error stands clear of what correct implementations make.
Every function takes logits [B, C] and targets ([B] int64 or [B, C] probabilities) and returns
the mean loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BOTH = {"soft", "hard"}


def _probs(logits: Tensor, targets: Tensor) -> Tensor:
    """Targets as [B, C] rows in the logits' dtype (one-hot for class indices)."""
    if targets.dtype == torch.int64:
        return torch.zeros_like(logits).scatter_(1, targets[:, None], 1)
    return targets


def divide_by_classes(logits: Tensor, targets: Tensor) -> Tensor:
    """The sum divided by C instead of B: a reduction over the wrong axis."""
    return F.cross_entropy(logits, targets, reduction="sum") / logits.shape[1]


def log_softmax_plus_eps(logits: Tensor, targets: Tensor) -> Tensor:
    """log(softmax + 1e-8): the usual "guard" against log(0), which biases every term."""
    t = _probs(logits, targets)
    return -(t * torch.log(torch.softmax(logits, dim=1) + 1e-8)).sum() / logits.shape[0]


def last_class_left_out(logits: Tensor, targets: Tensor) -> Tensor:
    """The normaliser sums classes 0..C-2: an off-by-one in the reduction's bound."""
    t = _probs(logits, targets)
    lse = torch.logsumexp(logits[:, :-1].float(), dim=1, keepdim=True)
    return (t.float() * (lse - logits.float())).sum().div(logits.shape[0]).to(logits.dtype)


def logits_clamped(logits: Tensor, targets: Tensor) -> Tensor:
    """Logits clamped to +-30 "for stability": right until a logit exceeds 30."""
    return F.cross_entropy(logits.clamp(-30, 30), targets)


def softmax_over_batch(logits: Tensor, targets: Tensor) -> Tensor:
    """log_softmax over dim 0 (the batch) instead of the classes."""
    t = _probs(logits, targets)
    return -(t * F.log_softmax(logits, dim=0)).sum() / logits.shape[0]


def exp_sum_in_input_dtype(logits: Tensor, targets: Tensor) -> Tensor:
    """The exp-sum accumulated in the input dtype, 32 classes at a time, as a hand-written
    kernel without an fp32 accumulator does: harmless in fp32, costly in bf16."""
    t = _probs(logits, targets)
    m = logits.amax(dim=1, keepdim=True)
    e = torch.exp(logits - m)
    s = torch.zeros_like(m)
    for lo in range(0, logits.shape[1], 32):
        s = s + e[:, lo : lo + 32].sum(dim=1, keepdim=True)  # rounded to the input dtype each step
    lse = m + torch.log(s)
    return (t * (lse - logits)).sum() / logits.shape[0]


class _WrongBackward(torch.autograd.Function):
    """Forward: the mean loss in float64; backward: a deliberately wrong gradient."""

    @staticmethod
    def forward(ctx, logits: Tensor, t: Tensor, kind: str) -> Tensor:  # noqa: ANN001
        z = logits.double()
        t64 = t.double()
        lse = torch.logsumexp(z, dim=1, keepdim=True)
        ctx.save_for_backward(logits, t)
        ctx.kind = kind
        return ((t64 * (lse - z)).sum() / z.shape[0]).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        logits, t = ctx.saved_tensors
        z = logits.double()
        t64 = t.double()
        p = torch.softmax(z, dim=1) * t64.sum(dim=1, keepdim=True)
        b = z.shape[0]
        if ctx.kind == "sign":
            g = (p + t64) / b  # the target's term with the wrong sign
        else:
            g = p - t64  # the 1/B of the mean forgotten
        return (g * grad_out.double()).to(logits.dtype), None, None


def target_gradient_sign_flipped(logits: Tensor, targets: Tensor) -> Tensor:
    """Right loss; gradient T p + t instead of T p - t."""
    return _WrongBackward.apply(logits, _probs(logits, targets), "sign")


def gradient_times_batch(logits: Tensor, targets: Tensor) -> Tensor:
    """Right loss; gradient of the sum, not of the mean (B times too large)."""
    return _WrongBackward.apply(logits, _probs(logits, targets), "scale")


def broadcast_zy(logits: Tensor, targets: Tensor) -> Tensor:
    """The notebook's line marked 错: zy [B, 1] broadcast over the C classes."""
    from harness.cross_entropy.variants.notebook import seed_lse_labels_broadcast

    return seed_lse_labels_broadcast(logits, _probs(logits, targets))


CATALOGUE = (
    divide_by_classes,
    log_softmax_plus_eps,
    last_class_left_out,
    logits_clamped,
    softmax_over_batch,
    exp_sum_in_input_dtype,
    target_gradient_sign_flipped,
    gradient_times_batch,
    broadcast_zy,
)

for _fn in CATALOGUE:
    _fn.harness_targets = BOTH
