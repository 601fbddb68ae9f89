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

# Bytes copied each way: far beyond any L2/L3, so the copy runs at memory bandwidth. On CUDA
# 1 GiB, so a ~5 us launch is < 1% of the ~0.5 ms an H200 needs (2 GiB moved at ~4.3 TB/s).
COPY_BYTES = {"cpu": 256 * 1024 * 1024, "cuda": 1024 * 1024 * 1024}


def device_key(device: str) -> str:
    """One name per physical device, so "cuda" and "cuda:0" share one measurement."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(dev)


def copy_bandwidth_gbps(device: str) -> float:
    """GB/s (1e9 B/s) of a large device-to-device copy, counting bytes read plus written;
    measured on the first call for each device and cached for the process."""
    return _copy_bandwidth_gbps(device_key(device))


@functools.lru_cache(maxsize=None)
def _copy_bandwidth_gbps(device: str) -> float:
    dev = torch.device(device)
    nbytes = COPY_BYTES[dev.type]
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    stats = time_call(lambda: dst.copy_(src), dev, warmup=2, min_reps=5, min_time_s=0.05, max_reps=50)
    return copy_gbps(nbytes, stats.median)


def copy_gbps(nbytes: int, seconds: float) -> float:
    """GB/s of a copy of `nbytes`: each byte is read once and written once (2 x nbytes)."""
    return 2 * nbytes / seconds / 1e9


def exp_pass_s(logits: torch.Tensor) -> float:
    """Median time of one exp over the logits into a preallocated buffer."""
    out = torch.empty_like(logits)
    stats = time_call(
        lambda: torch.exp(logits, out=out), logits.device, warmup=1, min_reps=3, min_time_s=0.01, max_reps=100
    )
    return stats.median


def floor_time_s(bytes_moved: int, copy_gbps: float, exp_s: float | None) -> float:
    """Seconds: bytes_moved at the copy bandwidth (GB/s), or the exp pass when that is longer.
    E.g. H200, B=8192, C=128256 bf16, fwd_bwd: 2L = 4.2e9 B at ~4300 GB/s = ~0.98 ms."""
    t = bytes_moved / (copy_gbps * 1e9)
    return max(t, exp_s) if exp_s is not None else t
