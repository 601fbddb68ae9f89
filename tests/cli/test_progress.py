"""The progress line's ETA: the time so far scaled by the expected work left over the work done;
and the bar a terminal shows beside it, whose remaining time is that same ETA."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf
from tqdm import tqdm

from harness import app, progress
from harness.callbacks import SWEEP_START_ENV, SWEEP_WEIGHTS_ENV, HarnessCallback
from harness.cross_entropy.point import Point
from harness.plan import job_weight

from ..conftest import REPO, run_cli


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.setattr(app, "_resumed_weight", 0.0)

    def start(weights, seconds_ago):
        monkeypatch.setenv(SWEEP_WEIGHTS_ENV, ",".join(map(str, weights)))
        monkeypatch.setenv(SWEEP_START_ENV, str(time.time() - seconds_ago))

    return start


def _eta(text: str) -> float:
    return float(text.split("~")[1].split(" s")[0])


def test_eta_weighs_the_work_left_not_the_points_left(sweep):
    # a small first point took 10 s; the one left is 4x its size: 40 s, not 10
    sweep([1, 4], seconds_ago=10)
    assert _eta(app._progress(1, 2)) == pytest.approx(40, abs=1)
    assert app._progress(2, 2).startswith("[2/2, 0 left, ~0 s")


def test_resumed_jobs_do_not_count_as_work_done(sweep):
    sweep([1, 1, 1, 1], seconds_ago=5)
    assert "to go" not in app._progress(1, 4, resumed=True)
    assert "to go" not in app._progress(2, 4, resumed=True)
    assert _eta(app._progress(3, 4)) == pytest.approx(5, abs=1)  # one measured job: 5 s each


def test_job_weight_grows_with_bytes_and_keeps_a_fixed_cost():
    tiny = Point(2, 10, "fp32", 1.0, "cpu", "hard", 0)
    big = Point(64, 100_000, "fp32", 1.0, "cpu", "hard", 0)
    assert job_weight([tiny]) > 0 and job_weight([tiny, tiny]) == 2 * job_weight([tiny])
    assert job_weight([big]) > 3 * job_weight([tiny])


# `+sweep=gpu` on an H200 (results/reference/h200/sweep_gpu.log): each job's (C, dtype, targets)
# in launch order and the seconds it took.
H200_GPU_SWEEP = [
    (32000, "bf16", "hard", 16.1),
    (32000, "bf16", "soft", 12.9),
    (32000, "fp32", "hard", 10.9),
    (32000, "fp32", "soft", 12.2),
    (128256, "bf16", "hard", 12.5),
    (128256, "bf16", "soft", 14.0),
    (128256, "fp32", "hard", 16.2),
    (128256, "fp32", "soft", 15.0),
    (262144, "bf16", "hard", 21.7),
    (262144, "bf16", "soft", 22.9),
    (262144, "fp32", "hard", 27.1),
    (262144, "fp32", "soft", 25.3),
]


def test_the_eta_replayed_on_a_measured_gpu_sweep_is_within_30_percent(sweep):
    weights = [job_weight([Point(8192, c, d, 1.0, "cuda", t, 0)]) for c, d, t, _ in H200_GPU_SWEEP]
    seconds = [s for *_, s in H200_GPU_SWEEP]
    for done in range(2, len(seconds)):  # "after the first few points": from the second on
        sweep(weights, seconds_ago=sum(seconds[:done]))
        predicted, actual = _eta(app._progress(done, len(seconds))), sum(seconds[done:])
        assert abs(predicted / actual - 1) < 0.3, (done, predicted, actual)


# --- The progress bar (harness/progress.py): on a terminal only, the same ETA as the line ---


def _remaining_s(bar: progress.SweepBar) -> float:
    """tqdm's own remaining time for what the bar shows (its `{remaining}`, unrounded)."""
    return float(tqdm.format_meter(**{**bar.bar.format_dict, "bar_format": "{remaining_s}"}))


@contextmanager
def _bar_on(stream, weights, clock) -> Iterator[progress.SweepBar]:
    """The sweep's bar, drawn on stream as on a terminal; its clock reads clock[0], the seconds
    since the sweep started. Closed at the end: a bar left open would push the next one down a
    line (tqdm stacks the bars it has open)."""
    with progress.sweep_bar(weights, file=stream, disable=False, start=0.0) as bar:
        bar.bar._time = lambda: clock[0]
        yield bar


def test_the_bars_eta_is_the_lines_weighted_eta_on_the_replayed_gpu_sweep(sweep):
    weights = [job_weight([Point(8192, c, d, 1.0, "cuda", t, 0)]) for c, d, t, _ in H200_GPU_SWEEP]
    seconds = [s for *_, s in H200_GPU_SWEEP]
    clock = [0.0]
    with _bar_on(io.StringIO(), weights, clock) as bar:
        for done in range(1, len(seconds) + 1):
            clock[0] = sum(seconds[:done])
            bar.job_done(done - 1)
            sweep(weights, seconds_ago=clock[0])
            assert _remaining_s(bar) == pytest.approx(_eta(app._progress(done, len(seconds))), abs=0.5)
            assert bar.bar.format_dict["points"] == f"{done}/{len(seconds)} points"
        assert bar.bar.n == bar.bar.total  # 100%, not 99.99% from float residue


def test_resumed_jobs_leave_the_bars_total_instead_of_counting_as_progress(sweep):
    weights, clock = [1.0, 2.0, 3.0, 4.0], [0.1]
    with _bar_on(io.StringIO(), weights, clock) as bar:
        bar.job_done(0, resumed=True)
        bar.job_done(1, resumed=True)
        assert (bar.bar.n, bar.bar.total) == (0, 7.0)
        clock[0] = 6.1
        bar.job_done(2)
        sweep(weights, seconds_ago=clock[0])
        for index in (1, 2):
            app._progress(index, 4, resumed=True)
        assert _remaining_s(bar) == pytest.approx(6.1 * 4 / 3)  # 3 units took 6.1 s; 4 are left
        assert _remaining_s(bar) == pytest.approx(_eta(app._progress(3, 4)), abs=0.5)
        assert bar.bar.format_dict["points"] == "3/4 points (2 resumed)"
        bar.job_done(2)  # a job reported twice counts once
        assert (bar.bar.n, bar.bar.total) == (3.0, 7.0)


def _log_to(stream, handler_class) -> logging.Logger:
    handler = handler_class(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logger = logging.Logger(f"test-{handler_class.__name__}")  # not registered: no global state
    logger.addHandler(handler)
    return logger


def test_nothing_is_drawn_on_a_stream_that_is_not_a_terminal():
    # CI logs, pipes: tqdm's disable=None leaves them alone, and the handler writes what
    # logging.StreamHandler writes, byte for byte.
    bar_stream, through_tqdm, plain = io.StringIO(), io.StringIO(), io.StringIO()
    loggers = [_log_to(through_tqdm, progress.TqdmHandler), _log_to(plain, logging.StreamHandler)]
    with progress.sweep_bar([1.0, 2.0], file=bar_stream):
        for index in range(2):
            for logger in loggers:
                logger.warning("[%d/2] a point", index + 1)
            progress.job_done(index)
    assert bar_stream.getvalue() == ""
    assert through_tqdm.getvalue() == plain.getvalue() != ""


def _screen(text: str) -> list[str]:
    """What a terminal shows for text: within a line, '\\r' goes back to its first column and
    what follows overwrites what was there."""
    screen = []
    for line in text.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
                continue
            cells[col : col + 1] = [ch]
            col += 1
        screen.append("".join(cells).rstrip())
    return screen


def test_on_a_terminal_log_lines_go_above_the_bar_never_into_it():
    stream, clock = io.StringIO(), [0.0]
    logger = _log_to(stream, progress.TqdmHandler)
    lines = []
    with _bar_on(stream, [1.0, 1.0, 2.0], clock):  # the same stream: a terminal's one screen
        for index, seconds in enumerate([2.0, 2.0, 4.0]):
            clock[0] += seconds
            lines.append(f"[{index + 1}/3] point {index} measured")
            logger.warning(lines[-1])
            progress.job_done(index)
            if index == 1:  # mid-sweep: the lines so far, then the bar on the last line
                screen = _screen(stream.getvalue())
                assert [s.split(" ", 1)[1] for s in screen[:-1]] == lines
                assert re.fullmatch(r" 50%\|#+ +\| 2/3 points \[00:04<00:04\]", screen[-1]), screen[-1]
    screen = _screen(stream.getvalue())
    assert [s.split(" ", 1)[1] for s in screen[:-1]] == lines and screen[-1] == ""  # bar gone
    assert "points" in stream.getvalue()  # it was drawn


def test_on_a_terminal_a_python_warning_goes_above_the_bar_too(monkeypatch):
    stream, clock = io.StringIO(), [0.0]
    monkeypatch.setattr(sys, "stderr", stream)  # warnings go to stderr, where the bar is drawn
    with _bar_on(stream, [1.0, 1.0], clock):
        clock[0] = 1.0
        progress.job_done(0)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # catch_warnings restores showwarning on exit: the bar's is the one it found
            warnings.showwarning = progress.warnings.showwarning
            warnings.warn_explicit("a warning mid-sweep", UserWarning, "job.py", 7)
        screen = _screen(stream.getvalue())
        assert screen[-2] == "job.py:7: UserWarning: a warning mid-sweep", screen
        assert re.fullmatch(r" 50%\|#+ +\| 1/2 points \[00:01<00:01\]", screen[-1]), screen[-1]
    assert warnings.showwarning is not None and "show_above" not in warnings.showwarning.__name__


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_the_bar_closes_when_a_job_fails_or_on_ctrl_c(stop):
    stream = io.StringIO()
    with pytest.raises(stop):
        with progress.sweep_bar([1.0, 1.0], file=stream, disable=False) as bar:
            progress.job_done(0)
            raise stop
    assert progress._current is None and bar.bar.disable  # closed: job_done is a no-op again
    progress.job_done(1)
    assert _screen(stream.getvalue()) == [""]  # nothing left on the line where it was


def test_the_callback_reports_each_job_and_whether_it_was_resumed(monkeypatch):
    done = []
    monkeypatch.setattr(progress, "job_done", lambda index, resumed: done.append((index, resumed)))
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "job": {"num": 3}}})
    for status, value in [(JobStatus.COMPLETED, "resumed"), (JobStatus.COMPLETED, "measured")]:
        HarnessCallback().on_job_end(config, JobReturn(status=status, _return_value=value))
    HarnessCallback().on_job_end(config, JobReturn(status=JobStatus.FAILED, _return_value=ValueError()))
    assert done == [(3, True), (3, False), (3, False)]
    single = OmegaConf.create({"hydra": {"mode": RunMode.RUN, "job": {"num": "???"}}})  # no number
    HarnessCallback().on_job_end(single, JobReturn(status=JobStatus.COMPLETED, _return_value="measured"))
    assert len(done) == 3


# --- The real CLI: the same lines off a terminal as before the bar; on one, the bar as well ---

TINY = ("-m", "batch_size=4", "num_classes=10,20", "variants=[torch_cross_entropy]")
TINY += ("timing.enabled=false", "memory.enabled=false")


def _expected_lines(out) -> list[str]:
    """The CLI's lines for TINY, as regexes: what CI logs and tests read."""
    stamp, hydra, secs = r"\d\d:\d\d:\d\d", r"\[[\d\- :,]+\]\[HYDRA\]", r"\d+\.\d s"
    point = r"B=4 C={c} fp32 scale=1 soft cpu seed=0: 2 rows \(2 ok\) in " + secs
    job = hydra + r" \t#{i} : batch_size=4 num_classes={c} variants=\[torch_cross_entropy\] "
    job += r"timing.enabled=False memory.enabled=False"
    return [
        rf"harness: sweep of 2 points into {re.escape(str(out))}",
        hydra + " Launching 2 jobs locally",
        job.format(i=0, c=10),
        stamp + r" \[1/2, 1 left, ~\d+ s to go\] " + point.format(c=10),
        job.format(i=1, c=20),
        stamp + r" \[2/2, 0 left, ~0 s to go\] " + point.format(c=20),
        r"harness: 2/2 points written \(0 resumed from an earlier run\), 4 rows \(4 ok\), " + secs,
        rf"harness: results in {re.escape(str(out))}",
    ]


def _assert_lines(lines: list[str], patterns: list[str]) -> None:
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns):
        assert re.fullmatch(pattern, line), (line, pattern)


@pytest.mark.slow
def test_off_a_terminal_a_sweep_prints_the_per_point_lines_only(tmp_path):
    proc = run_cli(*TINY, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    _assert_lines(proc.stdout.splitlines(), _expected_lines(tmp_path))


def _on_a_terminal(*args: str, interrupt_at: bytes = b"", timeout: float = 120) -> tuple[int, str]:
    """`python -m harness ARGS` with stdout and stderr on one pseudo-terminal, as in a user's
    shell (its size left 0 x 0, the odd case); SIGINT once interrupt_at was written. Returns the
    exit code and everything written, raw."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    os.close(slave)
    raw, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
                if interrupt_at and interrupt_at in raw:
                    proc.send_signal(signal.SIGINT)
                    interrupt_at = b""
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.time())), raw.decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_on_a_terminal_the_bar_is_drawn_and_the_screen_keeps_the_same_lines(tmp_path):
    rc, raw = _on_a_terminal(*TINY, f"hydra.sweep.dir={tmp_path}")
    assert rc == 0, raw[-2000:]
    assert re.search(r"100%\|\S+\| 2/2 points \[", raw), raw  # the bar at its end
    _assert_lines(_screen(raw)[:-1], _expected_lines(tmp_path))  # and then gone

    rc, raw = _on_a_terminal(*TINY, f"hydra.sweep.dir={tmp_path}")  # again: both resumed
    assert rc == 0 and "| 2/2 points (2 resumed) [" in raw, raw[-2000:]


@pytest.mark.slow
def test_ctrl_c_on_a_terminal_clears_the_bar_before_its_line(tmp_path):
    grid = ("-m", "batch_size=4", "num_classes=10,20,30,40,50,60", "timing.enabled=false")
    rc, raw = _on_a_terminal(*grid, f"hydra.sweep.dir={tmp_path}", interrupt_at=b"1/6 points")
    screen = [line for line in _screen(raw) if line]
    assert rc == 130, raw[-2000:]
    assert re.fullmatch(
        r"harness: interrupted after \d of 6 points; run the same command to resume", screen[-1]
    )
    assert not any("points [" in line for line in screen), screen  # no bar left on the screen


def test_a_long_point_says_where_it_is_before_its_line(monkeypatch, caplog):
    # A point's line comes when it is done; past HEARTBEAT_S one says which variant it has
    # judged (here every call, with the interval at 0), so a slow point is never silent.
    from types import SimpleNamespace

    from harness import runner
    from harness.cross_entropy.variants import REGISTRY

    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.0)
    off = SimpleNamespace(enabled=False)
    point = Point(4, 10, "fp32", 1.0, "cpu", "hard", seed=0)
    with caplog.at_level(logging.INFO, logger="harness"):
        runner.run_point(point, [REGISTRY["torch_cross_entropy"], REGISTRY["chunked"]], off, off, {})
    said = [r.getMessage() for r in caplog.records if "into the point" in r.getMessage()]
    assert len(said) == 4, said
    assert said[0].startswith(f"  {point.label()}: torch_cross_entropy fwd judged, 1 of 2 variants")
    assert said[-1].startswith(f"  {point.label()}: chunked fwd_bwd judged, 2 of 2 variants")
