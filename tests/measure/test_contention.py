"""Timed under contention: the probes (load, run-queue waits, steal, GPU state), the rule that
marks a row, its console line, and a real busy machine marking every row it slows."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.measure import environment
from harness.measure.contention import WAITS, contention, reason_names, summary_line
from harness.measure.environment import CpuTimes, auto_threads, steal_fraction, throttled

from ..conftest import job_config, run_job

QUIET = dict(
    device="cpu",
    threads=1,
    cores=2,
    others=[0.0, 0.0, 1.0, 0.0],
    wall_s=1.0,
    wait_s=0.01,
    steal=0.0,
    calib_before_s=100e-6,
    calib_after_s=102e-6,
    throttle_reasons=None,
)


def test_a_quiet_row_is_not_marked():
    cols = contention(**QUIET)
    assert cols["contended"] is False and cols["contention"] == ""
    assert cols["runnable_others"] == 0.25 and cols["wait_share"] == 0.01 and cols["cpu_cores"] == 2


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"others": [2.0, 2.0]}, "load: 2.0 other runnable tasks beside 1 thread(s) on 2 cores"),
        ({"threads": 2, "others": [1.0]}, "load: 1.0 other runnable tasks beside 2 thread(s) on 2 cores"),
        ({"wait_s": 0.3}, "descheduled: the calling thread waited for a core 30% of the timed wall time"),
        ({"steal": 0.2}, "steal: 20% of CPU time stolen by the hypervisor"),
        ({"calib_after_s": 130e-6}, "drift: the calibration took x1.30 as long after the point as before"),
        ({"calib_after_s": 80e-6}, "drift: the calibration took x0.80 as long after the point as before"),
        ({"device": "cuda", "throttle_reasons": 0x4}, "throttled: GPU clocks throttled (NVML reasons 0x4)"),
    ],
)
def test_each_reason_marks_the_row_and_is_named(change, reason):
    cols = contention(**{**QUIET, **change})
    assert cols["contended"] is True and cols["contention"] == reason


def test_one_busy_loop_beside_one_thread_on_two_cores_is_not_contention():
    # Measured: one thread beside one busy loop on 2 cores ran as fast as on a quiet machine.
    assert contention(**{**QUIET, "others": [1.0] * 10})["contended"] is False


def test_idle_or_set_clocks_are_not_throttling():
    assert not throttled(None) and not throttled(0x1) and not throttled(0x2) and throttled(0x4 | 0x1)


def test_waits_are_told_from_reasons_that_slow_the_work_itself():
    assert reason_names("") == set()
    assert reason_names("load: 2.0 ...; descheduled: ... 30% ...") <= set(WAITS)
    assert reason_names("load: 2.0 ...; drift: x1.3") == {"load", "drift"}
    assert not reason_names("throttled: GPU clocks") <= set(WAITS)


def test_the_console_line_counts_marked_rows_and_gives_the_remedy():
    rows = [
        {"time_median_s": 1e-3, "contended": True, "contention": "load: 2.0 other runnable tasks"},
        {"time_median_s": 1e-3, "contended": False, "contention": ""},
        {"time_median_s": None},
    ]
    line = summary_line(rows)
    assert line.startswith("1 of 2 timed rows under contention (load: 2.0 other runnable tasks): ")
    assert "stop the other work" in line and "num_threads" in line
    assert summary_line(rows[1:]) is None


def test_steal_needs_enough_ticks_to_be_a_figure():
    a = CpuTimes(total=1000, steal=10)
    assert steal_fraction(a, CpuTimes(total=1020, steal=15)) is None  # 20 ticks: noise
    assert steal_fraction(a, CpuTimes(total=1200, steal=30)) == pytest.approx(0.1)
    assert steal_fraction(None, a) is None


@pytest.mark.parametrize(
    "others, cores, threads", [(0.0, 2, 2), (1.0, 2, 1), (0.4, 2, 1), (5.0, 2, 1), (1.0, 16, 15)]
)
def test_auto_threads_leave_the_busy_cores_alone(others, cores, threads):
    assert auto_threads(others, cores) == threads


def test_the_probes_read_this_machine():
    assert environment.cores() >= 1
    others = environment.runnable_others()
    assert others is None or others >= 0
    before = environment.queue_wait_s()
    if before is not None:  # Linux with schedstat: the wait never goes backwards
        assert environment.queue_wait_s() >= before
    assert environment.gpu_state("cpu") == (None, None)


def _busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.skipif(environment.runnable_others() is None, reason="needs /proc/loadavg")
def test_rows_timed_beside_a_busy_loop_on_every_core_are_all_marked():
    loops = _busy_loops(environment.cores())
    try:
        time.sleep(0.3)
        t = {"enabled": True, "warmup": 1, "min_reps": 7, "min_time_s": 0.02, "max_reps": 1000}
        cfg = job_config(variants=["torch_cross_entropy", "chunked"], timing={**job_config().timing, **t})
        rows = run_job(cfg, num_threads=1)
    finally:
        for p in loops:
            p.kill()
    timed = [r for r in rows if r.get("time_median_s") is not None]
    assert timed and all(r["contended"] for r in timed), [r["contention"] for r in timed]
    assert all(r["contention"].startswith("load: ") for r in timed)


def test_the_sweep_summary_says_it_in_one_line_from_the_rows():
    import pandas as pd

    from harness.callbacks import timing_noise_line

    rows = pd.DataFrame(
        {
            "time_median_s": [1e-3, 1e-3, None],
            "contended": [True, False, None],
            "contention": ["drift: the calibration took x1.30 as long after the point as before", "", None],
        }
    )
    line = timing_noise_line(rows)
    assert line.startswith("1 of 2 timed rows under contention (drift: ") and "\n" not in line
    assert timing_noise_line(rows.assign(contended=False)) is None
    assert timing_noise_line(rows.drop(columns=["contended"])) is None  # rows from before the column


def test_the_console_line_says_when_a_point_s_own_ranks_share_the_cores():
    """vocab_parallel_cross_entropy's tp ranks are processes of the point: on fewer cores than
    tp they are what rank 0 waits for, and the line says so instead of blaming other work."""
    rows = [
        {"time_median_s": 1e-3, "contended": True, "contention": "descheduled: 40%", "tp": 4, "cpu_cores": 2},
        {"time_median_s": 1e-3, "contended": True, "contention": "descheduled: 30%", "tp": 1, "cpu_cores": 2},
    ]
    line = summary_line(rows)
    assert "up to 4 ranks of a point run side by side on 2 cores" in line
    assert "compare only with rows timed the same way" in line
    assert "stop the other work (or run" not in line
    assert "stop the other work" in summary_line(rows[1:])
