"""Fused linear + cross-entropy kernels from other projects, registered only when installed.

  liger_fused_linear_cross_entropy  Liger-Kernel (liger_kernel.transformers.functional): chunks
                                    of rows, [chunk, V] logits in the input dtype, the CE kernel
                                    in fp32, dH and dW computed in the forward and only scaled in
                                    the backward; dW is accumulated in the weight's dtype unless
                                    accum_dtype is given (left at its default here, as callers do)
  cut_cross_entropy                 Apple's Cut Cross-Entropy (cut_cross_entropy.
                                    linear_cross_entropy, impl "cce"): the logits live only in
                                    SRAM; its backward skips softmax entries below filter_eps,
                                    left at its default ("high", eps(dtype)/32, in 25.1.1;
                                    "auto" in later versions)
  cut_cross_entropy_unfiltered      the same with filter_eps=None: no entry skipped, so what is
                                    left of its gradient error is not the filter's

Options: Liger takes every option of the family (bias, ce_weight for the class weights,
lse_square_scale for z-loss, label_smoothing, softcap, reduction); CCE takes ignore_index,
softcap, reduction and bias (linear_cross_entropy(e, c, targets, bias=..., ...)), and no label
smoothing, z-loss or class weights: each declares exactly those.

Both are Triton kernels, CUDA only. An absent package registers nothing; an installed one is
imported at its first call (Triton and the compiler stack cost seconds, which `import harness`
must not pay), and a failed import is an `error` row with its message, as the first family's
external.py does. Not exercised on the CPU machine the harness is developed on: written against
liger_kernel 0.8.5 and cut_cross_entropy 25.1.1 (their signatures, read from the wheels); the
options against their current sources (Liger's functional.py and ops/fused_linear_cross_entropy.py,
CCE's linear_cross_entropy.py and cce.py), not run.
"""

from __future__ import annotations

import importlib
import importlib.util

from torch import Tensor

from harness.linear_cross_entropy.variants import register
from harness.loss.options import Keywords, LossOptions, Unpack


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


if _installed("liger_kernel"):

    @register(
        "liger_fused_linear_cross_entropy",
        targets={"hard"},
        devices={"cuda"},
        options={"ignore_index", "label_smoothing", "z_loss", "softcap", "class_weight", "reduction", "bias"},
        description="Liger-Kernel fused linear cross-entropy (row chunks; dH, dW computed in the forward)",
    )
    def liger_fused_linear_cross_entropy(
        hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]
    ) -> Tensor:
        """hidden [N, D], weight [V, D] on CUDA; targets [N] int64. Liger's own signature:
        (input, weight, target, bias=None, ce_weight=None, ignore_index=-100,
        lse_square_scale=0.0, label_smoothing=0.0, reduction="mean", softcap=None, ...); its
        z-loss is lse_square_scale, which the harness's z_loss follows."""
        fn = importlib.import_module("liger_kernel.transformers.functional").liger_fused_linear_cross_entropy
        o = LossOptions.of_keywords(options)
        return fn(
            hidden,
            weight,
            targets,
            bias=options.get("bias"),
            ce_weight=o.weight,
            ignore_index=o.ignore_index,
            lse_square_scale=o.z_loss,
            label_smoothing=o.label_smoothing,
            reduction=o.reduction,
            softcap=o.softcap,
        )


if _installed("cut_cross_entropy"):

    def _cce_variant(name: str, description: str, **fixed) -> None:
        """Register CCE's linear_cross_entropy under `name`, with `fixed` keywords (its filter)."""

        @register(
            name,
            targets={"hard"},
            devices={"cuda"},
            options={"ignore_index", "softcap", "reduction", "bias"},
            description=description,
        )
        def cce(hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
            """CCE's names: e = hidden [N, D], c = weight [V, D], targets [N]; it has no label
            smoothing, z-loss or class weights, and takes ignore_index, softcap and reduction
            under the harness's names. `bias` is passed only when there is one, so a plain point
            still runs on a version from before CCE took it."""
            fn = importlib.import_module("cut_cross_entropy").linear_cross_entropy
            if options.get("bias") is None:
                options.pop("bias", None)
            return fn(hidden, weight, targets, **options, **fixed)

    _cce_variant(
        "cut_cross_entropy", "Apple Cut Cross-Entropy (logits in SRAM; its backward filters small entries)"
    )
    _cce_variant(
        "cut_cross_entropy_unfiltered",
        "Apple Cut Cross-Entropy with filter_eps=None (no gradient entry skipped)",
        filter_eps=None,
    )
