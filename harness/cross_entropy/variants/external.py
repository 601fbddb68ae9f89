"""Cross-entropy kernels from other projects, registered only when they are installed.

  liger_cross_entropy   Liger-Kernel's Triton kernel (liger_kernel.transformers.functional),
                        CUDA only, class-index targets

An absent package registers nothing (the variant is simply not in the registry); it never
makes the harness fail to start. An installed one is imported at its first call, not when the
registry is built; if that import fails (no CUDA, an incompatible version), its rows say so as
`error` rows with the import's message. Liger's kernel writes the gradient into its input's storage
during the forward pass (it keeps memory at 1x the logits), so it is registered with
`overwrites_input`: the runner hands it a fresh copy before every call, outside the timed
interval, so its time is its own (a clone inside the call cost 3.01 ms against 2.13 ms at
B=8192, C=128256 bf16 on an H200) and every other variant still sees the original logits.
"""

from __future__ import annotations

import importlib
import importlib.util

from torch import Tensor

from harness.cross_entropy.variants import register
from harness.loss.options import Keywords, LossOptions, Unpack


def _installed(package: str) -> bool:
    """Whether `package` can be imported, without importing it: Liger imports Triton (seconds,
    and on a CUDA machine the whole compiler stack), which `import harness` must not pay for."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _liger_ce():
    """Liger's functional cross-entropy, imported at the first call (then cached by Python)."""
    return importlib.import_module("liger_kernel.transformers.functional").liger_cross_entropy


if _installed("liger_kernel"):

    @register(
        "liger_cross_entropy",
        targets={"hard"},
        devices={"cuda"},
        overwrites_input=True,
        options={"ignore_index", "label_smoothing", "z_loss", "softcap", "weight", "reduction"},
        description="Liger-Kernel Triton cross-entropy (online softmax, gradient written in forward "
        "into the logits' storage)",
    )
    def liger_cross_entropy(logits: Tensor, targets: Tensor, **options: Unpack[Keywords]) -> Tensor:
        """logits: [B, C] on CUDA (overwritten); targets: [B] int64. z_loss is Liger's
        lse_square_scale (the same definition as the reference's: README, Loss options)."""
        opts = LossOptions.of_keywords(options)
        return _liger_ce()(
            logits, targets, **opts.torch_keywords(), lse_square_scale=opts.z_loss, softcap=opts.softcap
        )
