"""Cross-entropy kernels from other projects, registered only when they import.

  liger_cross_entropy   Liger-Kernel's Triton kernel (liger_kernel.transformers.functional),
                        CUDA only, class-index targets

An absent package registers nothing (the variant is simply not in the registry); it never
makes the harness fail to start. Liger's kernel writes the gradient into its input's storage
during the forward pass (it keeps memory at 1x the logits), so it is given a copy: the copy's
2L bytes (read + write) are part of its measured time, and the benchmark's input stays intact.
"""

from __future__ import annotations

import importlib

from torch import Tensor

from harness.variants import register


def _liger():
    try:
        return importlib.import_module("liger_kernel.transformers.functional").liger_cross_entropy
    except Exception:  # not installed, no CUDA/Triton, or an incompatible version: not registered
        return None


_liger_ce = _liger()

if _liger_ce is not None:
    @register("liger_cross_entropy", targets={"hard"}, devices={"cuda"},
              description="Liger-Kernel Triton cross-entropy (online softmax, gradient written in forward); "
                          "given a copy of the logits, since it overwrites its input")
    def liger_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
        """logits: [B, C] on CUDA; targets: [B] int64."""
        return _liger_ce(logits.clone(), targets)
