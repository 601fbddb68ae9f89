"""PyTorch's own forms: the materialised head, with and without an fp32 upcast, and
F.linear_cross_entropy where torch has it.

  materialized                F.linear then F.cross_entropy, in the input dtype: holds the
                              [N, V] logits and their gradient (2 x 4.3 GB in bf16 at N = 8192,
                              V = 262144); the native op of this family (err_vs_native)
  materialized_fp32           the same with the logits upcast to fp32 before the loss (what
                              Hugging Face models do): one more [N, V] fp32 copy, the softmax
                              and its gradient in fp32
  torch_linear_cross_entropy  F.linear_cross_entropy with LinearCrossEntropyOptions(): its
                              chunked path (chunks of rows, gradients computed in the forward);
                              options=None would be the materialised reference path again.
                              Registered only where torch has it (2.13 does, 2.11 does not).

Options: what F.cross_entropy takes (ignore_index, label_smoothing, the class weights as
`weight`, reduction) and F.linear's bias. z-loss and the softcap are not PyTorch's: composed
around these pieces they are another variant (composed.py). torch_linear_cross_entropy does not
declare label_smoothing: with it, torch 2.13 warns and falls back to the reference path
(F.linear + F.cross_entropy, functional.py), so its rows would measure `materialized` under
another name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.linear_cross_entropy.variants import register

CROSS_ENTROPY = {"ignore_index", "label_smoothing", "class_weight", "reduction", "bias"}


def _cross_entropy(
    logits: Tensor,
    targets: Tensor,
    ignore_index: int,
    label_smoothing: float,
    class_weight: Tensor | None,
    reduction: str,
) -> Tensor:
    """F.cross_entropy with the class weights in the logits' dtype (it refuses two dtypes; the
    cast of a rounded weight to a wider dtype is exact)."""
    return F.cross_entropy(
        logits,
        targets,
        weight=None if class_weight is None else class_weight.to(logits.dtype),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


@register(
    "materialized",
    targets={"hard"},
    options=CROSS_ENTROPY,
    description="F.linear then F.cross_entropy in the input dtype",
)
def materialized(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weight: Tensor | None = None,
    reduction: str = "mean",
    bias: Tensor | None = None,
) -> Tensor:
    return _cross_entropy(
        F.linear(hidden, weight, bias), targets, ignore_index, label_smoothing, class_weight, reduction
    )


@register(
    "materialized_fp32",
    targets={"hard"},
    options=CROSS_ENTROPY,
    description="F.linear, logits upcast with .float(), F.cross_entropy in fp32",
)
def materialized_fp32(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weight: Tensor | None = None,
    reduction: str = "mean",
    bias: Tensor | None = None,
) -> Tensor:
    logits = F.linear(hidden, weight, bias)
    # .float() on fp16/bf16/fp32; fp64 stays fp64 (an "upcast" must never round it down)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return _cross_entropy(logits, targets, ignore_index, label_smoothing, class_weight, reduction)


if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):

    @register(
        "torch_linear_cross_entropy",
        targets={"hard"},
        options=CROSS_ENTROPY - {"label_smoothing"},  # it falls back to the reference path with it
        description="F.linear_cross_entropy, chunked path (LinearCrossEntropyOptions(), torch >= 2.13)",
    )
    def torch_linear_cross_entropy(
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        *,
        ignore_index: int = -100,
        class_weight: Tensor | None = None,
        reduction: str = "mean",
        bias: Tensor | None = None,
    ) -> Tensor:
        return F.linear_cross_entropy(
            hidden,
            weight,
            targets,
            linear_bias=bias,
            weight=class_weight,
            reduction=reduction,
            ignore_index=ignore_index,
            options=torch.nn.LinearCrossEntropyOptions(),
        )
