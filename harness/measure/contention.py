"""Was a row timed under contention? One rule, from the probes of harness/measure/environment.py.

A row is marked `contended` (with the reasons in `contention`) when any of these held while its
samples were taken; each is a way other work makes a call slower without the call changing:

  load         the other runnable tasks and this job's intra-op threads outnumber the cores (by
               more than half a task, the mean over the row's rounds): someone waits for a
               core. On 2 cores, 1 thread beside one busy loop is fine (measured: no slowdown);
               2 threads beside it, or 1 beside two, is not (2 threads: 0.34 -> 60 ms).
  descheduled  on a CPU, the calling thread waited, runnable, for a core for more than
               WAIT_SHARE of the timed wall time (the kernel's run-queue wait): it was
               time-sliced with other work.
  steal        the hypervisor gave more than STEAL_SHARE of the CPU time to other guests.
  drift        the calibration (harness/measure/calibration.py) took more than DRIFT times as
               long after the point as before, or less than 1/DRIFT: the machine's speed
               changed while the point ran.
  throttled    NVML reports a clock-throttle reason other than idle or set application clocks
               (power cap, heat): every kernel runs slower.

Each reason starts with its name and a colon. The first three are waits for a core: wall
time grows by the time the call spent queued, which the kernel reports, so compare can still
judge a row timed with one thread from its wall time less that wait (WAITS). Drift slows the
work itself (a co-runner thrashing the shared caches slows the call even while it runs): compare
judges such a row only beyond the factor times the drift. Throttling is not judged.

The thresholds are deliberately loose: a mark means "these times are not to be compared",
and it must stay rare on a quiet machine (scripts/compare_noise.py measures both rates).
"""

from __future__ import annotations

import math

from harness.measure.environment import throttled

LOAD_MARGIN = 0.5  # tasks: others + threads > cores + this
WAIT_SHARE = 0.1  # run-queue wait over wall time of the timed calls
STEAL_SHARE = 0.05
DRIFT = 1.15  # a quiet 2-core machine: after/before within 0.975-1.02 over 528 rows


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def contention(
    *,
    device: str,
    threads: int,
    cores: int,
    others: list[float],
    wall_s: float,
    wait_s: float | None,
    steal: float | None,
    calib_before_s: float | None,
    calib_after_s: float | None,
    throttle_reasons: int | None,
) -> dict:
    """The environment columns of one timed row: runnable_others, cpu_cores, wait_share,
    and `contended` with `contention` (the reasons, '; '-joined; '' when none)."""
    reasons = []
    load = _mean(others)
    if load is not None and load + threads > cores + LOAD_MARGIN:
        reasons.append(f"load: {load:.1f} other runnable tasks beside {threads} thread(s) on {cores} cores")
    share = wait_s / wall_s if wait_s is not None and wall_s > 0 else None
    if share is not None and share > WAIT_SHARE:
        reasons.append(
            f"descheduled: the calling thread waited for a core {share:.0%} of the timed wall time"
        )
    if steal is not None and steal > STEAL_SHARE:
        reasons.append(f"steal: {steal:.0%} of CPU time stolen by the hypervisor")
    if calib_before_s and calib_after_s and math.isfinite(calib_after_s / calib_before_s):
        drift = calib_after_s / calib_before_s
        if drift > DRIFT or drift < 1 / DRIFT:
            reasons.append(f"drift: the calibration took x{drift:.2f} as long after the point as before")
    if throttled(throttle_reasons):
        reasons.append(f"throttled: GPU clocks throttled (NVML reasons {throttle_reasons:#x})")
    return {
        "runnable_others": load,
        "cpu_cores": cores,
        "wait_share": share,
        "contended": bool(reasons),
        "contention": "; ".join(reasons),
    }


WAITS = ("load", "descheduled", "steal")  # reasons that add wall time but not CPU time


def reason_names(contention_text: str) -> set[str]:
    """The names of the reasons in a row's `contention` ('load', 'drift', ...)."""
    return {part.split(":", 1)[0].strip() for part in contention_text.split(";") if part.strip()}


REMEDY = (
    "their times are not comparable: stop the other work (or run where nothing else does), "
    "or lower num_threads; accuracy and memory are unaffected"
)


def summary_line(rows: list[dict]) -> str | None:
    """One line for the console when rows of a job were timed under contention, else None."""
    timed = [r for r in rows if r.get("time_median_s") is not None]
    marked = [r for r in timed if r.get("contended")]
    if not marked:
        return None
    tp = max(int(r.get("tp") or 1) for r in marked)
    remedy = REMEDY if tp == 1 else _ranks_remedy(tp, marked[0].get("cpu_cores"))
    return f"{len(marked)} of {len(timed)} timed rows under contention ({marked[0]['contention']}): {remedy}"


def _ranks_remedy(tp: int, cores: int | None) -> str:
    """The remedy where a point's own ranks (vocab_parallel_cross_entropy's tp processes) may
    be what shares the cores: their load is not counted as other work, but rank 0 still waits
    for a core a helper holds, and stopping other work does not change that."""
    on = f" on {cores} cores" if cores else ""
    return (
        f"up to {tp} ranks of a point run side by side{on}, so these times compare only with rows "
        "timed the same way (tp no more than the free cores, with num_threads=1, times each rank "
        "alone); stop any other work; accuracy and memory are unaffected"
    )
