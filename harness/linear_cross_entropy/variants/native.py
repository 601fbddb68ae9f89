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
from harness.loss.options import Keywords, LossOptions, Unpack

CROSS_ENTROPY = {"ignore_index", "label_smoothing", "class_weight", "reduction", "bias"}


@register(
    "materialized",
    targets={"hard"},
    options=CROSS_ENTROPY,
    description="F.linear then F.cross_entropy in the input dtype",
)
def materialized(hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    logits = F.linear(hidden, weight, options.get("bias"))
    return F.cross_entropy(logits, targets, **LossOptions.of_keywords(options).torch_keywords(logits.dtype))


@register(
    "materialized_fp32",
    targets={"hard"},
    options=CROSS_ENTROPY,
    description="F.linear, logits upcast with .float(), F.cross_entropy in fp32",
)
def materialized_fp32(hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
    logits = F.linear(hidden, weight, options.get("bias"))
    # .float() on fp16/bf16/fp32; fp64 stays fp64 (an "upcast" must never round it down)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, targets, **LossOptions.of_keywords(options).torch_keywords(logits.dtype))


if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):

    @register(
        "torch_linear_cross_entropy",
        targets={"hard"},
        options=CROSS_ENTROPY - {"label_smoothing"},  # it falls back to the reference path with it
        description="F.linear_cross_entropy, chunked path (LinearCrossEntropyOptions(), torch >= 2.13)",
    )
    def torch_linear_cross_entropy(
        hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]
    ) -> Tensor:
        opts = LossOptions.of_keywords(options)
        return F.linear_cross_entropy(
            hidden,
            weight,
            targets,
            linear_bias=options.get("bias"),
            weight=opts.weight,
            reduction=opts.reduction,
            ignore_index=opts.ignore_index,
            options=torch.nn.LinearCrossEntropyOptions(),
        )
