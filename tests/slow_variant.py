"""A deliberately slowed torch_cross_entropy, for the comparison's end-to-end test.

    python -m harness variants=[torch_cross_entropy@tests.slow_variant:slow_cross_entropy] ...

runs it under the native op's name, so `scripts/compare.py` joins it with the real one and
must flag the time regression while the accuracy (same op, same result) stays identical.
"""

from __future__ import annotations

import time

import torch.nn.functional as F
from torch import Tensor

# Wait a multiple of the call's own duration after it: the same slowdown on any machine, however
# fast, instead of a fixed delay that is noise on a slow machine and 100x on a fast one. The
# wait spins rather than sleeps: time.sleep's wake-up latency (tens of us) would dwarf a 20 us
# call. The backward is not slowed, so fwd_bwd rows grow by less.
# 1.5x: what scripts/compare_noise.py measures the catch rate of, over many tries.
EXTRA = 0.5
# 4x for the end-to-end test, which has one try: on 2 shared cores the unchanged op's fwd
# median was measured at 166 us and 249 us in adjacent jobs of one sweep (steady calibration,
# no wait for a core), so a single pair of runs can hide a 1.5x slowdown but not a 4x one.
EXTRA_ONE_TRY = 3.0


def _spun(loss_fn, logits: Tensor, targets: Tensor, extra: float = EXTRA) -> Tensor:
    t0 = time.perf_counter()
    loss = loss_fn(logits, targets)
    t1 = time.perf_counter()
    until = t1 + extra * (t1 - t0)
    while time.perf_counter() < until:
        pass
    return loss


def slow_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """F.cross_entropy(logits [B, C], targets [B] int64 or [B, C]), then a spin of EXTRA_ONE_TRY x
    its time (4x in all)."""
    return _spun(F.cross_entropy, logits, targets, EXTRA_ONE_TRY)


slow_cross_entropy.harness_targets = {"soft", "hard"}  # receives class indices on hard points


def slow_log1p_shifted(logits: Tensor, targets: Tensor) -> Tensor:
    """The registered log1p_shifted (a variant that is not the native op), slowed the same way:
    relative to the native op timed beside it, it is 1.5x slower too."""
    from harness.cross_entropy.variants.shifted import log1p_shifted

    return _spun(log1p_shifted, logits, targets)


slow_log1p_shifted.harness_targets = {"soft", "hard"}


def _spin_for(ms: int):
    """A variant whose call spins for `ms` milliseconds (compare_noise.py long: 10x at each
    length), then returns F.cross_entropy's loss so that its rows are ok."""

    def spin(logits: Tensor, targets: Tensor) -> Tensor:
        until = time.perf_counter() + ms / 1e3
        while time.perf_counter() < until:
            pass
        return F.cross_entropy(logits, targets)

    spin.harness_targets = {"soft", "hard"}
    return spin


for _ms in (20, 100, 500):
    globals()[f"spin_{_ms}ms"] = _spin_for(_ms)
    globals()[f"spin_{10 * _ms}ms"] = _spin_for(10 * _ms)
