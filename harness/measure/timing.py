"""Wall-clock samples of one call, with the discipline each device needs.

CPU: a monotonic clock (perf_counter) around each call; PyTorch's CPU ops are synchronous.
CUDA: launches are asynchronous, so each sample is the gap between two device events recorded
around the call, read after a synchronisation. Before each sample a buffer of twice the L2
size is overwritten, so no repetition finds its inputs left warm in L2 by the previous one.

Samples continue until both `min_reps` and `min_time_s` are reached (or `max_reps`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class TimingStats:
    samples: list[float]   # seconds, in the order measured
    median: float
    iqr: float             # 75th - 25th percentile
    minimum: float

    @staticmethod
    def of(samples: list[float]) -> "TimingStats":
        a = np.asarray(samples, dtype=np.float64)
        q25, q50, q75 = np.percentile(a, [25, 50, 75])
        return TimingStats(samples=list(samples), median=float(q50), iqr=float(q75 - q25), minimum=float(a.min()))


def _enough(samples: list[float], min_reps: int, min_time_s: float, max_reps: int) -> bool:
    n = len(samples)
    return n >= max_reps or (n >= min_reps and sum(samples) >= min_time_s)


def l2_flush_bytes(props: Any) -> int:
    """Bytes to overwrite between samples: twice the L2 size from the device properties
    (H200: 2 x 60 MiB), so that the previous sample's working set cannot survive in L2."""
    return 2 * int(props.L2_cache_size)


def time_cpu(fn: Callable[[], Any], warmup: int, min_reps: int, min_time_s: float, max_reps: int) -> TimingStats:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while not _enough(samples, min_reps, min_time_s, max_reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return TimingStats.of(samples)


def time_cuda(fn: Callable[[], Any], device: torch.device, warmup: int, min_reps: int,
              min_time_s: float, max_reps: int) -> TimingStats:
    flush = torch.empty(l2_flush_bytes(torch.cuda.get_device_properties(device)), dtype=torch.uint8, device=device)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    samples: list[float] = []
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    while not _enough(samples, min_reps, min_time_s, max_reps):
        flush.zero_()            # evict the inputs from L2; outside the timed interval
        start.record()
        fn()
        end.record()
        end.synchronize()        # host waits; the interval itself has no host sync
        samples.append(start.elapsed_time(end) / 1e3)
    return TimingStats.of(samples)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, min_reps: int,
              min_time_s: float, max_reps: int) -> TimingStats:
    if device.type == "cuda":
        return time_cuda(fn, device, warmup, min_reps, min_time_s, max_reps)
    return time_cpu(fn, warmup, min_reps, min_time_s, max_reps)
