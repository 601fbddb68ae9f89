"""A fixed operation timed before and after every point: the machine's speed at that moment.

Two runs on two machines, or on one machine under different load, differ in speed for reasons
no variant caused. Each point therefore times the same reference work twice, before and after
its variants, with the job's threads on the point's device: `calib_before_s` and
`calib_after_s` in every row of the point. compare divides each run's samples by its
calibration before judging a slowdown (a slower machine slows the calibration too), and a
point whose calibration moved by more than a quarter between the two is marked as timed under
contention (harness/measure/contention.py).

The work is a row-wise logsumexp, the heart of every cross-entropy, on a fixed tensor: on a
CPU [64, 4096] fp32 (1 MiB: in L2 on most cores, ~0.1-0.3 ms), on CUDA [4096, 32768] fp32
(512 MiB: past any L2, so it reads DRAM as the variants do, ~0.2 ms on an H200). The fastest
of 21 samples is the figure (about 5 ms per point on a CPU): other work only ever adds time, so
the minimum is the least disturbed reading (the median of 15 moved by x1.46 between two
readings a second apart on a quiet 2-core machine; the minimum by a few per cent).
"""

from __future__ import annotations

import functools

import torch

from harness.measure.timing import time_call

CPU_SHAPE = (64, 4096)
CUDA_SHAPE = (4096, 32768)
SAMPLES = 21


@functools.lru_cache(maxsize=None)
def _cpu_operand() -> torch.Tensor:
    return torch.randn(CPU_SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float32)


def _operand(device: str) -> torch.Tensor:
    """The fixed tensor; on CUDA drawn anew on the device each time rather than kept, so that its
    512 MiB is not held while the variants run (any values do: the op's time does not depend
    on them)."""
    if not device.startswith("cuda"):
        return _cpu_operand()
    return torch.empty(CUDA_SHAPE, dtype=torch.float32, device=device).normal_()


def calibrate(device: str) -> float:
    """Fastest seconds of the calibration op on `device` now. On a CPU with one intra-op
    thread, whatever the job's count: a figure of one core's speed. With two threads on a
    shared 2-core machine the op waits at the pool's barrier for a core someone else holds
    (x264 between two readings was seen): that is contention, which the load probe reports,
    not the machine's speed."""
    x = _operand(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stats = time_call(
            lambda: torch.logsumexp(x, dim=-1),
            torch.device(device),
            warmup=3,
            min_reps=SAMPLES,
            min_time_s=0.0,
            max_reps=SAMPLES,
        )
    finally:
        torch.set_num_threads(threads)
    return stats.minimum
