"""What the machine was doing while a row was timed: other runnable work, stolen CPU, GPU clocks.

A timing is only as good as the machine it was taken on. On a shared 2-core machine with other
work running, two intra-op threads made F.cross_entropy's backward at B=16, C=32768 take 60 ms
instead of 0.4 ms (each op waits at the thread pool's barrier for a thread that is not
scheduled), with a tight IQR: a wrong figure that looks precise. These probes let every row say
what it was timed under, and let `auto_threads` choose a thread count that fits the free cores.

  runnable_others   tasks ready to run besides this process's own running threads: the
                    kernel's instantaneous count in /proc/loadavg (field 4, "R/T", the reader
                    included) less this process's threads in state R (/proc/self/task/*/stat;
                    an intra-op pool's threads spin for a while after each op, then sleep, so
                    their number cannot be assumed). The 1-minute load average lags by a
                    minute; the instantaneous count, read at a point's start and at most every
                    PROBE_EVERY_S during its rounds, follows a busy loop that starts or stops.
  queue_wait_s      how long the calling thread has waited, runnable, for a core (the kernel's
                    run-queue wait, /proc/thread-self/schedstat field 2): exactly the time other
                    work took from a call, and nothing a call spends asleep or blocked of its
                    own accord. One pread on a kept descriptor, ~1 us.
  steal             CPU time the hypervisor gave to other guests (/proc/stat, 8th field), as a
                    share of all CPU time between two readings. Zero where the OS has no such
                    counter.
  gpu_state         the SM clock (MHz) and NVML's clock-throttle reasons, as nvbench records
                    them: a GPU capped by power or heat runs every kernel slower.

Nothing here is needed for correctness; each probe answers None where the platform has no
such counter, and the row then says nothing rather than something false.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

LOADAVG = "/proc/loadavg"
SCHEDSTAT = "/proc/thread-self/schedstat"
PROC_STAT = "/proc/stat"


def cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or taskset narrows;
    os.cpu_count() would report the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _running_tasks() -> int | None:
    try:
        with open(LOADAVG) as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


# Processes that work for this one and are not "other work": the helper ranks of
# vocab_parallel_cross_entropy (harness/vocab_parallel_cross_entropy/ranks.py registers them
# while they live). Their runnable threads are the measurement's own, not load beside it; a
# rank 0 that waits for a core they hold is still descheduled (timing.md: ranks that share
# cores are timed under contention, correctly so).
OWN_PROCESSES: set[int] = set()


def _running_threads(pid: str) -> int:
    """Threads of process `pid` ("self" or a number) in state R (running or runnable)."""
    count = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces)
                count += f.read().rsplit(b")", 1)[1].split()[0] == b"R"
        except (OSError, IndexError):
            continue
    return count


def _own_running() -> int:
    """This process's threads in state R (running or runnable), the caller among them, and
    those of the processes working for it (OWN_PROCESSES)."""
    if not os.path.isdir("/proc/self/task"):
        return 1
    own = _running_threads("self")
    return max(1, own) + sum(_running_threads(str(pid)) for pid in list(OWN_PROCESSES))


def runnable_others() -> float | None:
    """Runnable tasks besides this process's own; None without /proc."""
    running = _running_tasks()
    return None if running is None else float(max(0, running - _own_running()))


# At most this often during the timing rounds (and once at a point's start). A reading is
# outside every timed interval, yet the call after it paid for it: read every 5 ms, a 0.16 ms
# call at B=64, C=4096 had a quarter of its samples stalled at 1.5-3x its median (its fwd_bwd's
# q75 rose from 310 to 443 us); every 100 ms the stalls are a sample in hundreds.
PROBE_EVERY_S = 0.1


class LoadProbe:
    """runnable_others, read at most every PROBE_EVERY_S; between readings the last value."""

    def __init__(self) -> None:
        self._at = -1.0
        self._value: float | None = None

    def __call__(self) -> float | None:
        import time

        now = time.perf_counter()
        if now - self._at >= PROBE_EVERY_S:
            self._value, self._at = runnable_others(), now
        return self._value


def sampled_others(samples: int = 20, interval_s: float = 0.005) -> float | None:
    """The median of `samples` readings of runnable_others, `interval_s` apart: one reading is a
    snapshot that a short-lived process (a `cat`, a compiler) can inflate."""
    import time

    readings = []
    for _ in range(samples):
        r = runnable_others()
        if r is None:
            return None
        readings.append(r)
        time.sleep(interval_s)
    readings.sort()
    return readings[len(readings) // 2]


_thread = threading.local()  # each thread's own schedstat descriptor (thread-self is per thread)


def queue_wait_s() -> float | None:
    """Seconds the calling thread has spent runnable but waiting for a core, since it started;
    None where the kernel has no schedstat. Differences of two readings are what count."""
    fd = getattr(_thread, "schedstat", None)
    if fd is None:
        try:
            fd = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            fd = -1
        _thread.schedstat = fd
    if fd < 0:
        return None
    try:
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def auto_threads(others: float | None = None, available: int | None = None) -> int:
    """Intra-op threads that do not oversubscribe the free cores: the cores less the other
    runnable work (rounded up: a task half the time on a core still takes its turns), at least
    one. On a quiet 2-core machine 2; with one busy loop beside it 1."""
    available = cores() if available is None else available
    others = sampled_others() if others is None else others
    if others is None:
        return available
    return max(1, available - int(-(-others // 1)))


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU jiffies from /proc/stat's first line: (all, steal)."""

    total: int
    steal: int

    @staticmethod
    def read() -> "CpuTimes | None":
        try:
            with open(PROC_STAT) as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu" or len(fields) < 9:
            return None
        values = [int(v) for v in fields[1:]]
        # guest and guest_nice (fields 9, 10) are already counted in user and nice
        return CpuTimes(total=sum(values[:8]), steal=values[7])


# The counters tick at 100 Hz per core: over less than a second of CPU time a few ticks are
# the whole figure (5 ticks of steal in 20 read as 25% over a 0.1 s point on 2 cores).
MIN_TICKS = 100


def steal_fraction(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """Share of all CPU time between two readings that the hypervisor stole; None if either
    reading is missing or fewer than MIN_TICKS ticks passed."""
    if before is None or after is None or after.total - before.total < MIN_TICKS:
        return None
    return (after.steal - before.steal) / (after.total - before.total)


# NVML's "no throttle" reasons: the GPU idles, or applications clocks were set on purpose.
# Anything else (power cap, thermal, sync boost, ...) slows every kernel down.
_BENIGN_THROTTLE = 0x1 | 0x2  # GpuIdle | ApplicationsClocksSetting


@functools.lru_cache(maxsize=None)
def _nvml_handle(index: int):
    try:
        import pynvml  # nvidia-ml-py; optional

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no package, no driver, no such device: nothing to record
        return None


def gpu_state(device: str) -> tuple[float | None, int | None]:
    """(SM clock in MHz, NVML clock-throttle reasons bitmask) of a CUDA device; (None, None)
    off CUDA or without NVML."""
    if not device.startswith("cuda"):
        return None, None
    index = int(device.split(":")[1]) if ":" in device else 0
    handle = _nvml_handle(index)
    if handle is None:
        return None, None
    pynvml, h = handle
    try:
        clock = float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
        reasons = int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h))
    except Exception:
        return None, None
    return clock, reasons


def throttled(reasons: int | None) -> bool:
    return reasons is not None and bool(reasons & ~_BENIGN_THROTTLE)
