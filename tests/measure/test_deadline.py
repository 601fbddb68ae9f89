"""A per-call time limit: a variant that hangs gives a `timeout` row and the job goes on."""

from __future__ import annotations

import time

import pytest

from harness import job
from harness.config import SettingError
from harness.measure import deadline

from ..conftest import job_config, run_job

FAULTS = "tests.fault_variants"


def test_an_armed_call_past_its_limit_raises_and_the_handler_is_restored():
    import signal

    before = signal.getsignal(signal.SIGALRM)
    with deadline.installed(0.2):
        t0 = time.perf_counter()
        with pytest.raises(deadline.CallTimeout, match="timing.call_timeout_s=0.2"):
            with deadline.armed():
                time.sleep(5)
        assert time.perf_counter() - t0 < 2
        with deadline.armed():  # a call within the limit is untouched
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGALRM) is before
    with deadline.armed():  # nothing installed: no limit, no alarm
        time.sleep(0.01)


def test_a_variant_catching_exception_cannot_swallow_the_timeout():
    def stubborn():
        try:
            time.sleep(5)
        except Exception:  # what a careless variant writes
            return "swallowed"

    with deadline.installed(0.2), pytest.raises(deadline.CallTimeout), deadline.armed():
        stubborn()


def _rows(variants: list[str], **timing) -> list[dict]:
    t = {"enabled": True, "warmup": 0, "min_reps": 3, "min_time_s": 0.0, "max_reps": 3}
    t.update(timing)
    cfg = job_config(variants=variants, timing={**job_config().timing, **t, "call_timeout_s": 0.5})
    return run_job(cfg, num_threads=1)


def test_a_hanging_variant_gives_a_timeout_row_and_the_others_are_measured():
    t0 = time.perf_counter()
    rows = _rows([f"hang@{FAULTS}:hangs", "torch_cross_entropy"])
    assert time.perf_counter() - t0 < 20  # two calls of 0.5 s, not an hour
    by = {(r["variant"], r["mode"]): r for r in rows}
    for mode in ("fwd", "fwd_bwd"):
        assert by["hang", mode]["status"] == "timeout"
        assert "timing.call_timeout_s=0.5" in by["hang", mode]["message"]
        assert by["torch_cross_entropy", mode]["status"] == "ok"
        assert by["torch_cross_entropy", mode]["time_median_s"] > 0


def test_a_variant_that_hangs_only_when_timed_keeps_its_accuracy_and_gets_timeout():
    rows = _rows([f"late@{FAULTS}:hangs_when_timed", "torch_cross_entropy"])
    late = [r for r in rows if r["variant"] == "late"]
    assert [r["status"] for r in late] == ["timeout", "timeout"]
    assert late[0]["loss_rel_err"] is not None  # measured before it hung: kept
    assert all(r["status"] == "ok" for r in rows if r["variant"] == "torch_cross_entropy")


@pytest.mark.parametrize("bad", [0, -1, "x", True, float("inf")])
def test_a_bad_limit_is_one_line_naming_the_setting(bad):
    cfg = job_config(timing={**job_config().timing, "call_timeout_s": bad})
    with pytest.raises(SettingError, match=r"^timing.call_timeout_s=.* is not allowed: use a number > 0"):
        job.check(cfg)
