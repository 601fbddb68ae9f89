"""Loss-option bugs that shipped in real libraries, written as user variants
(tests.option_bugs:NAME). Each declares the options it takes, so the harness measures it, and
each computes a plausible but wrong loss that the verdict must flag."""

import torch
import torch.nn.functional as F


def smoothing_counts_ignored(logits, targets, *, ignore_index=-100, label_smoothing=0.0):
    """PyTorch #73205: the uniform (smoothing) term averaged over every row, ignored ones too."""
    log_p = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(log_p, targets, ignore_index=ignore_index)
    uniform = -log_p.mean(dim=1)  # (1/C) sum_c -log p_c, per row: ignored rows included
    return (1 - label_smoothing) * nll + label_smoothing * uniform.mean()


smoothing_counts_ignored.harness_targets = {"hard"}
smoothing_counts_ignored.harness_options = {"ignore_index", "label_smoothing"}


def weights_not_in_denominator(logits, targets, *, ignore_index=-100, weight=None):
    """A weighted mean divided by the number of rows, not by the summed weights of their targets."""
    rows = F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index, reduction="none")
    return rows.sum() / (targets != ignore_index).sum()


weights_not_in_denominator.harness_targets = {"hard"}
weights_not_in_denominator.harness_options = {"ignore_index", "weight"}


def negative_targets_ignored(logits, targets, *, ignore_index=-100):
    """ "Ignored" read as a negative class index (a mask of targets >= 0, the index clamped to 0):
    right for -100, PyTorch's default, and wrong for an ignore_index inside the classes, whose
    rows it keeps (PyTorch's own tests ignore class 1, 2 and (C-1)//2)."""
    keep = targets >= 0
    log_p = F.log_softmax(logits, dim=1)
    picked = log_p.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return -(picked * keep).sum() / keep.sum()


negative_targets_ignored.harness_targets = {"hard"}
negative_targets_ignored.harness_options = {"ignore_index"}


def smoothing_not_applied(logits, targets, *, label_smoothing=0.0):
    """Liger #243: label smoothing accepted and silently not applied."""
    return F.cross_entropy(logits, targets)


smoothing_not_applied.harness_targets = {"hard", "soft"}
smoothing_not_applied.harness_options = {"label_smoothing"}


def z_loss_of_mean_lse(logits, targets, *, z_loss=0.0):
    """z-loss on the batch's mean lse, z * (mean_b lse_b)^2, not the mean of z * lse_b^2."""
    lse = torch.logsumexp(logits, dim=1)
    return F.cross_entropy(logits, targets) + z_loss * lse.mean().square()


z_loss_of_mean_lse.harness_targets = {"hard", "soft"}
z_loss_of_mean_lse.harness_options = {"z_loss"}


def records_options(logits, targets, **options):
    """Correct, and keeps the keyword arguments it was called with (for the test to read)."""
    records_options.seen.append(options)
    return F.cross_entropy(
        logits,
        targets,
        weight=options.get("weight"),
        ignore_index=options.get("ignore_index", -100),
        label_smoothing=options.get("label_smoothing", 0.0),
        reduction=options.get("reduction", "mean"),
    )


records_options.seen = []
records_options.harness_targets = {"hard", "soft"}
records_options.harness_options = {"ignore_index", "label_smoothing", "weight", "reduction"}


class _FirstIncomingGradient(torch.autograd.Function):
    # reduction none with a backward that treats the incoming [B] gradient as a scalar: its first
    # entry scales every row (right only when every row's incoming gradient is the same)
    @staticmethod
    def forward(ctx, logits, targets):
        z = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
        grad = torch.softmax(z, dim=1)
        grad[torch.arange(len(targets)), targets] -= 1.0
        ctx.save_for_backward(grad.to(logits.dtype))
        return F.cross_entropy(logits, targets, reduction="none")

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out[0], None


def per_row_gradient_as_scalar(logits, targets, *, reduction="mean"):
    """Per-row losses whose backward scales by the first incoming gradient only."""
    assert reduction == "none"
    return _FirstIncomingGradient.apply(logits, targets)


per_row_gradient_as_scalar.harness_targets = {"hard"}
per_row_gradient_as_scalar.harness_options = {"reduction"}
