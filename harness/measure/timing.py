"""Wall-clock samples of one call, with the discipline each device needs.

CPU: a monotonic clock (perf_counter) around each call; PyTorch's CPU ops are synchronous.
CUDA: launches are asynchronous, so each sample is the gap between two device events recorded
around the call on the current stream. Before each sample a buffer of twice the L2 size (from
the device properties) is overwritten, outside the timed interval, so no repetition finds its
inputs left warm in L2 by the previous one. Samples are queued in batches and read after one
synchronisation per batch, as `triton.testing.do_bench` does: the host enqueues the next
sample's launches while the device runs the flush and the previous call. Waiting on each
sample's end event instead left the device idle at the start of every interval while the host
issued the call's launches (Python, autograd, a compiled graph's guards): the interval then
measured launch overhead, and on calls under ~2 ms it read 1.05-1.23x do_bench's median on an
H200 (commit 6b6f923); batched, 302 of the 310 rows of 0.2 ms or more of `+sweep=gpu` agree
within 5% (results/reference/h200/gpu). `do_bench_ratio` cross-checks the median against
do_bench (a fixed 256 MiB flush, its own median).

Samples continue until both `min_reps` and `min_time_s` are reached (or `max_reps`).
`prepare`, when given, runs before every call (warm-up and timed) outside the timed interval:
it hands a variant that overwrites its input a fresh copy (harness/measure/isolation.py).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class TimingStats:
    samples: list[float]  # seconds, in the order measured
    median: float
    iqr: float  # 75th - 25th percentile
    minimum: float

    @staticmethod
    def of(samples: list[float]) -> "TimingStats":
        a = np.asarray(samples, dtype=np.float64)
        q25, q50, q75 = np.percentile(a, [25, 50, 75])
        return TimingStats(
            samples=list(samples), median=float(q50), iqr=float(q75 - q25), minimum=float(a.min())
        )


def _enough(samples: list[float], min_reps: int, min_time_s: float, max_reps: int) -> bool:
    n = len(samples)
    return n >= max_reps or (n >= min_reps and sum(samples) >= min_time_s)


# Used only when the properties report no L2 size: Triton's do_bench flush size.
FALLBACK_FLUSH_BYTES = 256 * 1024 * 1024


def l2_flush_bytes(props: Any) -> int:
    """Bytes to overwrite between samples: twice `props.L2_cache_size` (H100/H200: 50 MiB, so
    100 MiB), so that the previous sample's working set cannot survive in L2. Twice, not once:
    L2 is not a perfect LRU, and one pass of L2's size leaves a fraction of the old lines."""
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    return 2 * l2 if l2 > 0 else FALLBACK_FLUSH_BYTES


def flush_buffer(device: torch.device) -> torch.Tensor:
    """uint8 [l2_flush_bytes] on `device`; `zero_()` on it evicts L2 (a write of every line)."""
    props = torch.cuda.get_device_properties(device)
    return torch.empty(l2_flush_bytes(props), dtype=torch.uint8, device=device)


def _nothing() -> None:
    pass


# Samples queued before one synchronisation: enough to keep the host ahead of the device, few
# enough that the events of a batch stay cheap and `min_time_s` is not overshot by much.
MAX_BATCH = 64


def _batch_size(samples: list[float], min_reps: int, min_time_s: float, max_reps: int) -> int:
    """How many samples to queue next: the first batch is `min_reps`; later ones what the median
    so far says is left of `min_time_s`, within `max_reps` and MAX_BATCH."""
    left = max_reps - len(samples)
    if not samples:
        want = min_reps
    else:
        per_sample = float(np.median(samples))
        want = int((min_time_s - sum(samples)) / per_sample) + 1 if per_sample > 0 else MAX_BATCH
    return max(1, min(want, left, MAX_BATCH))


def time_cpu(
    fn: Callable[[], Any],
    warmup: int,
    min_reps: int,
    min_time_s: float,
    max_reps: int,
    prepare: Callable[[], None] = _nothing,
) -> TimingStats:
    for _ in range(warmup):
        prepare()
        fn()
    samples: list[float] = []
    while not _enough(samples, min_reps, min_time_s, max_reps):
        prepare()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return TimingStats.of(samples)


def time_cuda(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    min_reps: int,
    min_time_s: float,
    max_reps: int,
    prepare: Callable[[], None] = _nothing,
) -> TimingStats:
    with torch.cuda.device(device):  # events and the flush on the device being measured
        flush = flush_buffer(device)
        for _ in range(warmup):
            prepare()
            fn()
        torch.cuda.synchronize(device)
        samples: list[float] = []
        while not _enough(samples, min_reps, min_time_s, max_reps):
            n = _batch_size(samples, min_reps, min_time_s, max_reps)
            pairs = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)
            ]
            for start, end in pairs:
                prepare()  # a fresh input copy, queued before `start` like the flush
                flush.zero_()  # evict the inputs from L2; queued before `start`
                start.record()
                fn()
                end.record()
            pairs[-1][1].synchronize()  # one host wait per batch, after every interval
            samples += [start.elapsed_time(end) / 1e3 for start, end in pairs]  # ms -> s
        del flush
    return TimingStats.of(samples)


def do_bench_ratio(
    fn: Callable[[], Any], device: torch.device, median_s: float, bench: Callable[..., float] | None = None
) -> float | None:
    """Our median over `triton.testing.do_bench`'s median for the same `fn` (1.0 = agreement;
    the target is within 5%). None off CUDA, without Triton, or for a zero median.
    `bench(fn, return_mode="median") -> ms` defaults to do_bench (tests pass a fake)."""
    if device.type != "cuda" or not median_s > 0:
        return None
    if bench is None:
        try:
            from triton.testing import do_bench as bench
        except ImportError:
            return None
    with torch.cuda.device(device) if device.index is not None else nullcontext():
        ms = float(bench(fn, return_mode="median"))
    return median_s / (ms / 1e3) if ms > 0 else None


def time_call(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    min_reps: int,
    min_time_s: float,
    max_reps: int,
    prepare: Callable[[], None] = _nothing,
) -> TimingStats:
    if device.type == "cuda":
        return time_cuda(fn, device, warmup, min_reps, min_time_s, max_reps, prepare)
    return time_cpu(fn, warmup, min_reps, min_time_s, max_reps, prepare)
