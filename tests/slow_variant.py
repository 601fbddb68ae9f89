"""A deliberately slowed torch_cross_entropy, for the comparison's end-to-end test.

    python -m harness variants=[torch_cross_entropy@tests.slow_variant:slow_cross_entropy] ...

runs it under the native op's name, so `scripts/compare.py` joins it with the real one and
must flag the time regression while the accuracy (same op, same result) stays identical.
"""

from __future__ import annotations

import time

import torch.nn.functional as F
from torch import Tensor

# Wait this fraction of the call's own duration after it: +50% time on any machine, however
# fast, instead of a fixed delay that is noise on a slow machine and 100x on a fast one. The
# wait spins rather than sleeps: time.sleep's wake-up latency (tens of us) would dwarf a 20 us
# call. The backward is not slowed, so fwd_bwd rows grow by less than 50%.
EXTRA = 0.5


def slow_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """F.cross_entropy(logits [B, C], targets [B] int64 or [B, C]), then a spin of EXTRA x its time."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(logits, targets)
    t1 = time.perf_counter()
    until = t1 + EXTRA * (t1 - t0)
    while time.perf_counter() < until:
        pass
    return loss


slow_cross_entropy.harness_targets = {"soft", "hard"}  # receives class indices on hard points
