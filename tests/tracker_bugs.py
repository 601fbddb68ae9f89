"""Cross-entropy bugs from public trackers, reproduced as user variants (tests.tracker_bugs:NAME),
each with its source. tests/cross_entropy/test_tracker_bugs.py runs each at the input that
triggers it and requires the harness to flag it there; the README's table lists them, with the
ones the harness cannot flag and why."""

import torch
import torch.nn.functional as F

from tests.call_bugs import gradient_scaled_in_place
from tests.option_bugs import smoothing_counts_ignored, smoothing_not_applied


class _UnitBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):  # noqa: ANN001
        ctx.save_for_backward(logits, targets)
        return F.cross_entropy(logits, targets)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        logits, targets = ctx.saved_tensors
        p = logits.float().softmax(dim=1)
        p[torch.arange(len(targets)), targets] -= 1
        return (p / len(targets)).to(logits.dtype), None  # grad_output never read


def backward_ignores_grad_output(logits, targets):
    """Megatron-LM #1750 / TransformerEngine PR #2139: the backward read the wrong grad_output;
    its tests passed because they skipped the backward kernel when the grad output was 1."""
    return _UnitBackward.apply(logits, targets)


backward_ignores_grad_output.harness_targets = {"hard"}


def online_without_a_masked_guard(logits, targets):
    """flash-attention #1930: an online softmax whose running max is -inf while every logit so
    far is masked, so that its rescale exp(-inf - -inf) is NaN, depending on where the finite
    logits fall in the blocks (blocks of 2048 here)."""
    z = logits.float()
    m = torch.full((z.shape[0],), -torch.inf)
    d = torch.zeros(z.shape[0])
    for lo in range(0, z.shape[1], 2048):
        blk = z[:, lo : lo + 2048]
        m_new = torch.maximum(m, blk.amax(dim=1))
        d = d * torch.exp(m - m_new) + torch.exp(blk - m_new[:, None]).sum(dim=1)
        m = m_new
    lse = m + torch.log(d)
    return (lse - z.gather(1, targets[:, None])[:, 0]).mean().to(logits.dtype)


online_without_a_masked_guard.harness_targets = {"hard"}


def lse_minus_target_logit(logits, targets):
    """PyTorch PR #195829 (a fused linear cross-entropy) and MLX PR #4188: loss = lse - z_y with
    lse formed whole, so a large common offset rounds the gap away (MLX: [[1e8, 1e8]] gave 0)."""
    z = logits.float()
    return (torch.logsumexp(z, dim=1) - z.gather(1, targets[:, None])[:, 0]).mean().to(logits.dtype)


lse_minus_target_logit.harness_targets = {"hard"}


class _RoundedBeforeSubtracting(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):  # noqa: ANN001
        ctx.save_for_backward(logits, targets)
        return F.cross_entropy(logits.float(), targets).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        logits, targets = ctx.saved_tensors
        n, rows = len(targets), torch.arange(len(targets))
        g = (logits.float().softmax(dim=1) / n).to(logits.dtype)  # p / N, rounded to the dtype
        g[rows, targets] -= 1.0 / n  # then 1/N subtracted in the dtype: (p_y - 1)/N cancels
        return g * grad_output.to(g.dtype), None


def target_gradient_rounded_before_subtracting(logits, targets):
    """Liger-Kernel PR #1329: a bf16 kernel that rounds p_y / N before subtracting 1 / N; where
    the target is confident, (p_y - 1) / N is a small difference of two rounded numbers."""
    return _RoundedBeforeSubtracting.apply(logits, targets)


target_gradient_rounded_before_subtracting.harness_targets = {"hard"}


def num_items_dropped(logits, targets, *, ignore_index=-100, num_items_in_batch=None):
    """transformers PR #34191: the model's forward took num_items_in_batch and did not pass it to
    its loss, so each micro-batch fell back to its own mean: the accumulated loss is the sum of
    the micro-batches' means, not the batch's mean (and weighs a micro-batch with many padded
    tokens like any other)."""
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


num_items_dropped.harness_targets = {"hard"}
num_items_dropped.harness_options = {"ignore_index", "num_items_in_batch"}


def softcap_over_masked_lanes(logits, targets, *, softcap=None):
    """Unsloth PR #10616: the Gemma-2 softcap applied to every lane of a padded vocabulary,
    padding included: softcap * tanh(-inf) = -softcap, so each padded class takes exp(-softcap)
    of the probability mass (0.48 of it at V = 65537, in the PR)."""
    z = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(z, targets)


softcap_over_masked_lanes.harness_targets = {"hard"}
softcap_over_masked_lanes.harness_options = {"softcap"}


def spatial_sum_in_half(logits, targets):
    """PyTorch #85791: F.cross_entropy on fp16 CUDA logits (N, C, d) summed the N d per-position
    losses of its mean in fp16, where the flattened [N d, C] call summed them in fp32: past 65504
    the mean is inf (20 x 1025 positions of 9.6 each in the issue). Here the losses are right in
    fp32 and rounded to the dtype, then summed there."""
    losses = F.cross_entropy(logits.float(), targets, reduction="none").to(logits.dtype)
    return losses.sum(dtype=logits.dtype) / losses.numel()


spatial_sum_in_half.harness_targets = {"hard"}
spatial_sum_in_half.harness_spatial = True

# (name, source, what triggers it, a correct variant that is not flagged there) for the README's
# table and the test; the settings are the harness's command-line settings of the point. The
# control at confident bf16 rows is `chunked`: CPU bf16 F.cross_entropy is flagged there itself
# (its softmax is rounded to bf16, so p_y rounds to 1: docs/findings.md).
CATALOGUE = [
    (
        "smoothing_counts_ignored", "PyTorch #73205",
        {"ignore_fraction": 0.25, "label_smoothing": 0.1}, "torch_cross_entropy",
    ),
    ("smoothing_not_applied", "Liger-Kernel #243", {"label_smoothing": 0.1}, "torch_cross_entropy"),
    (
        "backward_ignores_grad_output", "Megatron-LM #1750, TransformerEngine PR #2139",
        {}, "torch_cross_entropy",
    ),
    (
        "online_without_a_masked_guard", "flash-attention #1930",
        {"mask_fraction": 0.999, "num_classes": 8192}, "torch_cross_entropy",
    ),
    ("gradient_scaled_in_place", "Unsloth #5002, QuACK PR #209", {}, "torch_cross_entropy"),
    (
        "lse_minus_target_logit", "PyTorch PR #195829, MLX PR #4188",
        {"logit_offset": 1e8}, "torch_cross_entropy",
    ),
    (
        "num_items_dropped", "transformers PR #34191",
        {"micro_batches": 4, "ignore_fraction": 0.3}, "chunked",
    ),
    (
        "target_gradient_rounded_before_subtracting", "Liger-Kernel PR #1329",
        {"dtype": "bf16", "target_confidence": 0.999}, "chunked",
    ),
    (
        "spatial_sum_in_half", "PyTorch #85791",
        {"dtype": "fp16", "spatial_size": 1024, "batch_size": 16384, "num_classes": 64}, "chunked",
    ),
    (
        "softcap_over_masked_lanes", "Unsloth PR #10616",
        {"pad_vocab_to": 1024, "softcap": 5.0}, "torch_composed",
    ),
]  # fmt: skip
__all__ = [
    "backward_ignores_grad_output",
    "gradient_scaled_in_place",
    "lse_minus_target_logit",
    "num_items_dropped",
    "online_without_a_masked_guard",
    "smoothing_counts_ignored",
    "smoothing_not_applied",
    "softcap_over_masked_lanes",
    "spatial_sum_in_half",
    "target_gradient_rounded_before_subtracting",
]
