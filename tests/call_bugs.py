"""Bugs of the call, not of the formula: right on the first backward of a graph, wrong on the
second (tests.call_bugs:NAME). Each computes the gradient in its forward, as fused kernels do,
and its backward only scales it by the incoming gradient."""

import torch
import torch.nn.functional as F


def _gradient(logits, targets):
    """d mean CE / d logits for class-index targets, in float32, cast to the logits' dtype."""
    z = logits.float()
    g = z.softmax(dim=1)
    g[torch.arange(len(targets)), targets] -= 1
    return g.div_(len(targets)).to(logits.dtype)


class _StoredGradient(torch.autograd.Function):
    """The loss in float32; the gradient made in forward and saved; backward as each subclass says."""

    @staticmethod
    def forward(ctx, logits, targets):  # noqa: ANN001
        ctx.save_for_backward(_gradient(logits, targets))
        return F.cross_entropy(logits.float(), targets).to(logits.dtype)


class _ScaledInPlace(_StoredGradient):
    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        (g,) = ctx.saved_tensors
        # in place, through .data as a kernel writing through a pointer does (autograd's version
        # counter does not see it, so nothing raises): a second backward scales it again
        g.data.mul_(grad_out)
        return g, None


def gradient_scaled_in_place(logits, targets):
    """The stored gradient multiplied by grad_output in place, to save memory (Liger-Kernel's
    cross_entropy backward does this when grad_output is not 1): one backward is right, a second
    one over the same graph returns the gradient times grad_output squared."""
    return _ScaledInPlace.apply(logits, targets)


gradient_scaled_in_place.harness_targets = {"hard"}


class _Scaled(_StoredGradient):
    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        (g,) = ctx.saved_tensors
        return g * grad_out, None


def gradient_scaled(logits, targets):
    """The same, scaled out of place: right on every backward (the control)."""
    return _Scaled.apply(logits, targets)


gradient_scaled.harness_targets = {"hard"}


class _ScaledInPlaceSeen(_StoredGradient):
    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        (g,) = ctx.saved_tensors
        return g.mul_(grad_out), None  # autograd sees this write: the second backward raises


def gradient_scaled_in_place_seen(logits, targets):
    """The in-place product on the saved tensor itself: PyTorch's version counter catches it."""
    return _ScaledInPlaceSeen.apply(logits, targets)


gradient_scaled_in_place_seen.harness_targets = {"hard"}
