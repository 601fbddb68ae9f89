"""Device ceilings: the fastest any implementation could possibly go on this device.

The copy bandwidth is measured with one large device-to-device copy (bytes read plus bytes
written, the same accounting as the byte model) and cached for the process, so it is measured
once per run and device. On CPU a cross-entropy must also evaluate one exp per logit, which
can cost more than moving the bytes, so the floor there is the larger of the two.

floor_time_s = max(bytes_moved / copy bandwidth, exp pass time [CPU only])
pct_of_floor = floor_time_s / time_median_s      (1.0 = at the floor)
"""

from __future__ import annotations

import functools

import torch

from harness.measure.timing import time_call

# 256 MiB each way: far beyond any L2/L3, so the copy runs at memory bandwidth.
_COPY_BYTES = 256 * 1024 * 1024


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gbps(device: str) -> float:
    """GB/s of a large device-to-device copy, counting bytes read plus bytes written."""
    dev = torch.device(device)
    src = torch.empty(_COPY_BYTES, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    stats = time_call(lambda: dst.copy_(src), dev, warmup=2, min_reps=5, min_time_s=0.05, max_reps=50)
    return 2 * _COPY_BYTES / stats.median / 1e9


def exp_pass_s(logits: torch.Tensor) -> float:
    """Median time of one exp over the logits into a preallocated buffer."""
    out = torch.empty_like(logits)
    stats = time_call(lambda: torch.exp(logits, out=out), logits.device, warmup=1, min_reps=3,
                      min_time_s=0.01, max_reps=100)
    return stats.median


def floor_time_s(bytes_moved: int, copy_gbps: float, exp_s: float | None) -> float:
    t = bytes_moved / (copy_gbps * 1e9)
    return max(t, exp_s) if exp_s is not None else t
