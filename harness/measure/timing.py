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

A point's variants are timed together, interleaved (`time_interleaved`): rounds that call each
of them once, until there are `min_reps` rounds and they took `min_time_s` together (or
`max_reps`). `time_call` is the same timer with one call. `prepare`, when given, runs before
every call (warm-up and timed) outside the timed interval: it hands a variant that overwrites its
input a fresh copy (harness/measure/isolation.py).
"""

from __future__ import annotations

import atexit
import functools
import gc
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from harness.measure import deadline
from harness.measure.environment import queue_wait_s


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
    return time_call(fn, torch.device("cpu"), warmup, min_reps, min_time_s, max_reps, prepare)


def time_cuda(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    min_reps: int,
    min_time_s: float,
    max_reps: int,
    prepare: Callable[[], None] = _nothing,
) -> TimingStats:
    return time_call(fn, device, warmup, min_reps, min_time_s, max_reps, prepare)


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
    """One call timed alone: the interleaved timer with a single slot, every exception raised."""
    slot = Slot(fn=fn, prepare=prepare)
    time_interleaved([slot], device, warmup, min_reps, min_time_s, max_reps, stop=lambda exc: True)
    return TimingStats.of(slot.samples)


# --------------------------------------------------------------------------- interleaved


@dataclass
class Slot:
    """One (variant, mode) timed at a point, among the others (`time_interleaved`).

    samples      wall seconds of each call, in the order measured
    waits        seconds the calling thread waited, runnable, for a core during each call (the
                 kernel's run-queue wait, environment.queue_wait_s; CPU only, and only where the
                 kernel reports it). Wall time less this is what the call took of its own:
                 other work's share removed, while a call that sleeps or blocks keeps its time.
                 Not CPU time: a variant that sleeps 20 ms has ~0 CPU time and would look
                 unchanged; and not the process's CPU time, which Linux brings up to date for
                 another core's thread only at that core's next tick (read in lumps of 4 ms).
    rounds       the round each sample was taken in: two slots' samples of one round were
                 taken moments apart, so their ratio cancels the machine's drift
    others       runnable tasks besides this process at the start of each of its rounds
    error        what a call raised (a CallTimeout included); the slot then stops"""

    fn: Callable[[], Any]
    prepare: Callable[[], None] = _nothing
    release: Callable[[], None] = _nothing
    samples: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    error: BaseException | None = None
    fresh: bool = False  # each call gets fresh input copies (prepare): do_bench cannot do that


def _guarded(slot: Slot, body: Callable[[], Any], stop: Callable[[BaseException], bool]) -> Any:
    """prepare, body (the call, timed or not, under the per-call limit), release. Returns body's
    result, or None with `slot.error` set if anything raised that `stop` does not claim."""
    try:
        slot.prepare()
        with deadline.armed():
            out = body()
        slot.release()
        return out
    except (Exception, SystemExit, KeyboardInterrupt, deadline.CallTimeout) as exc:
        if stop(exc):
            raise
        slot.error = exc
        return None


def _alive(slots: list[Slot]) -> list[Slot]:
    return [s for s in slots if s.error is None]


def time_interleaved(
    slots: list[Slot],
    device: torch.device,
    warmup: int,
    min_reps: int,
    min_time_s: float,
    max_reps: int,
    probe: Callable[[], float | None] = lambda: None,
    stop: Callable[[BaseException], bool] = lambda exc: False,
) -> None:
    """Time every slot round-robin: each round calls every slot once, in order, so a change in
    the machine's speed (a busy loop starting, a clock dropping) falls on every variant alike
    instead of on whichever was being timed then; Liger's benchmarks alternate providers for the
    same reason. `warmup` rounds first, unrecorded; then rounds until there are `min_reps` of them
    and they took `min_time_s` together (or `max_reps` rounds), so that a 500 ms call gets as
    many samples as a 5 us one, and every slot the same number.

    Every round holds every slot: the cache a call finds depends on the calls before it, and a
    round that lost its fast members as they reached their own budget ran its remaining calls
    measurably faster (a 78 us call drifted to 48 us over 34 rounds as the round emptied).

    Fills the slots' samples in place. `probe()` is read once per round (the runnable load);
    `stop(exc)` says which exceptions end the timing (a user's Ctrl-C) rather than the slot. A
    slot whose call raises leaves the rounds with `error` set."""
    with _collector_off():
        if device.type != "cuda":
            _warm(slots, warmup, stop)
            _rounds_cpu(slots, min_reps, min_time_s, max_reps, probe, stop)
            return
        with torch.cuda.device(device):  # events and the flush on the device being measured
            flush = flush_buffer(device)
            _warm(slots, warmup, stop)
            torch.cuda.synchronize(device)
            _rounds_cuda(slots, flush, min_reps, min_time_s, max_reps, probe, stop)


@contextmanager
def _collector_off() -> Iterator[None]:
    """Python's cyclic garbage collector off while samples are taken, as timeit does: a
    collection that the calls' allocations trigger lands inside whichever sample was running (a
    whole generation is walked), and with a point's variants interleaved such pauses put a
    quarter of a fast call's samples at 1.3-3x its median. Collected once before; autograd's
    graphs are freed by reference counting, not by the collector.

    The first collection also freezes what survives it (gc.freeze: torch's, Hydra's and the
    harness's modules, about a million objects), so that later ones walk only what was made
    since: a full walk took 0.14 s, eight of them per tiny point (each timed call, each
    ceiling), a quarter of a small sweep's time. Frozen objects are still freed by reference
    counting; only a cycle among them would outlive the process's first timing."""
    was_enabled = gc.isenabled()
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()
        # back to the collector at exit, so that the interpreter's last collection frees them
        # (Triton's bindings report every object of theirs left alive then as a leak)
        atexit.register(gc.unfreeze)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _warm(slots: list[Slot], warmup: int, stop: Callable[[BaseException], bool]) -> None:
    for _ in range(warmup):
        for slot in _alive(slots):
            _guarded(slot, slot.fn, stop)


def _round_times(slots: list[Slot]) -> list[float]:
    """Seconds each recorded round took, summed over the slots that were in it."""
    total: dict[int, float] = {}
    for slot in slots:
        for r, t in zip(slot.rounds, slot.samples):
            total[r] = total.get(r, 0.0) + t
    return [total[r] for r in sorted(total)]


def _timed_cpu(fn: Callable[[], Any]) -> tuple[float, float | None]:
    """(wall, run-queue wait) seconds of one call. The wait is read outside the wall interval
    (~1 us a read), so it does not add to the wall sample."""
    w0 = queue_wait_s()
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    w1 = queue_wait_s()
    return t1 - t0, None if w0 is None or w1 is None else w1 - w0


def _rounds_cpu(slots, min_reps, min_time_s, max_reps, probe, stop) -> None:
    rnd = 0
    while _alive(slots) and not _enough(_round_times(slots), min_reps, min_time_s, max_reps):
        others = probe()
        for slot in _alive(slots):
            timed = _guarded(slot, functools.partial(_timed_cpu, slot.fn), stop)
            if timed is None:
                continue
            slot.samples.append(timed[0])
            if timed[1] is not None:
                slot.waits.append(timed[1])
            slot.rounds.append(rnd)
            if others is not None:
                slot.others.append(others)
        rnd += 1


def _rounds_cuda(slots, flush, min_reps, min_time_s, max_reps, probe, stop) -> None:
    """Rounds queued in batches, each call after an L2 flush, between two events; the host waits
    once per batch, on its last end event, so it stays ahead of the device and never leaves it
    idle inside an interval."""
    rnd = 0
    while _alive(slots) and not _enough(times := _round_times(slots), min_reps, min_time_s, max_reps):
        width = len(_alive(slots))
        queued = []
        for _ in range(max(1, min(_batch_size(times, min_reps, min_time_s, max_reps), MAX_BATCH // width))):
            others = probe()
            for slot in _alive(slots):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if _guarded(slot, functools.partial(_queued_cuda, slot.fn, flush, start, end), stop):
                    queued.append((slot, start, end, rnd, others))
            rnd += 1
        if queued:
            queued[-1][2].synchronize()
        for slot, start, end, r, others in queued:
            slot.samples.append(start.elapsed_time(end) / 1e3)  # ms -> s
            slot.rounds.append(r)
            if others is not None:
                slot.others.append(others)


def _queued_cuda(fn: Callable[[], Any], flush: torch.Tensor, start: Any, end: Any) -> bool:
    flush.zero_()  # evict the inputs from L2; queued before `start`
    start.record()
    fn()
    end.record()
    return True


def paired_ratios(slot: Slot, native: Slot) -> list[float]:
    """slot's sample over the native's sample of the same round, for every round both have: the
    relative time measured side by side, immune to drift slower than one round."""
    native_at = dict(zip(native.rounds, native.samples))
    return [t / native_at[r] for t, r in zip(slot.samples, slot.rounds) if native_at.get(r, 0) > 0]
