"""A sweep's progress bar, on a terminal only, and the log handler that writes around it.

The per-point log line (harness/app.py, `[3/24, 21 left, ~40 s to go] ...`) is the record: CI
logs, pipes and tests see exactly those lines. On a terminal (stderr is a TTY) a tqdm bar sits
below them for as long as the jobs run, and clears itself when they end, so the screen is left
with the same lines a log file gets.

The bar counts expected work, not points: its total is the sum of the job weights
(plan.job_weight) and a measured job advances it by its weight, while a resumed job (already
written, so it took no time) leaves the total instead of counting as instant progress. With
the average rate (smoothing=0), tqdm's remaining time is then elapsed x (work left) / (work
measured): the log line's weighted ETA. Its text still says points (`3/24 points`).

Only jobs that run in this process can advance it, so the sweeper shows it for Hydra's basic
launcher alone (hydra_plugins/harness_sweeper); HarnessCallback.on_job_end reports each job.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from contextlib import contextmanager
from typing import IO, Iterator, Sequence

from tqdm import tqdm

# `{points}` is this module's own field (_Bar.format_dict); tqdm's `{n_fmt}/{total_fmt}` would
# be weight units. `{remaining}` is tqdm's rate-based remaining time.
BAR_FORMAT = "{percentage:3.0f}%|{bar}| {points} [{elapsed}<{remaining}]"


class TqdmHandler(logging.StreamHandler):
    """logging.StreamHandler that writes above the sweep's bar while one is on the screen (on
    this stream, or on stdout/stderr when this is the other): tqdm.write clears the bar, writes
    the line and draws the bar again below it. With no bar drawn it is a StreamHandler, code
    and bytes: CI logs, pipes and tests get exactly what they got before the bar existed.

    conf/config.yaml names it for the console handler of both Hydra's logging and the jobs'."""

    def emit(self, record: logging.LogRecord) -> None:
        if not showing():
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream, end=self.terminator)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _size(fp: IO[str]) -> tuple[int, int]:
    """(columns, rows) for tqdm on fp, one column short of the terminal as tqdm's own probe
    takes it. That probe turns a terminal nobody sized (a fresh pty, `script` run without one:
    0 x 0) into -1 x -1, and tqdm then draws nothing and clears nothing; such a terminal, or a
    stream that is not one (tests), is taken as 80 x 24."""
    try:
        cols, rows = os.get_terminal_size(fp.fileno())
    except (AttributeError, OSError, ValueError):
        cols = rows = 0
    return (cols or 80) - 1, (rows or 24) - 1


class _Bar(tqdm):
    # No monitor thread: it tunes miniters for bars updated in tight loops; this one is drawn
    # at each job's end and each log line.
    monitor_interval = 0

    def __init__(self, *args, points: str = "", **kwargs) -> None:
        self.points = points  # the `{points}` field of BAR_FORMAT
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict:
        if not self.disable:  # the terminal's size at every draw, as dynamic_ncols=True would
            self.ncols, self.nrows = _size(self.fp)
        return {**super().format_dict, "points": self.points}


class SweepBar:
    """The bar of one sweep of `len(weights)` jobs, job i expected to take weights[i] (any unit).

    file: where it draws (default sys.stderr); disable: tqdm's, None = only if file is a TTY;
    start: the sweep's start (time.time()), so that elapsed and remaining time count from the
    same instant as the log line's ETA."""

    def __init__(
        self,
        weights: Sequence[float],
        *,
        file: IO[str] | None = None,
        disable: bool | None = None,
        start: float | None = None,
    ) -> None:
        self._weights = [float(w) for w in weights]
        self._pending = set(range(len(self._weights)))
        self._measured = 0.0  # weight of the jobs measured so far: tqdm's n
        self._done = self._resumed = 0
        file = file if file is not None else sys.stderr
        ncols, nrows = _size(file)
        self.bar = _Bar(
            total=math.fsum(self._weights),
            file=file,
            disable=disable,
            leave=False,  # the log lines are the record; the bar is a live view of them
            smoothing=0,  # the average rate over the whole sweep, as the log line's ETA
            bar_format=BAR_FORMAT,
            ncols=ncols,
            nrows=nrows,
            points=self._points(),
        )
        if start is not None and not self.bar.disable:
            self.bar.start_t = self.bar.last_print_t = start
        self._draw()

    def job_done(self, index: int, resumed: bool = False) -> None:
        """Job `index` (0-based, Hydra's job.num) ended: measured (or failed: it took its time
        too), or resumed from an earlier run. A job reported twice counts once."""
        if index not in self._pending:
            return
        self._pending.discard(index)
        self._done += 1
        if resumed:
            self._resumed += 1
        else:
            self._measured += self._weights[index]
        self._draw()

    def _draw(self) -> None:
        # The total is rebuilt rather than decremented, so that once every job is in, n == total
        # exactly (no float residue leaving the bar at 99.99%).
        self.bar.n = self._measured
        self.bar.total = self._measured + math.fsum(self._weights[i] for i in self._pending)
        self.bar.points = self._points()
        self.bar.refresh()

    def _points(self) -> str:
        resumed = f" ({self._resumed} resumed)" if self._resumed else ""
        return f"{self._done}/{len(self._weights)} points{resumed}"

    def close(self) -> None:
        """Clear the bar off its line, so that what is printed next starts on an empty one."""
        self.bar.close()


# The bar of the sweep this process is running, for job_done.
_current: SweepBar | None = None


@contextmanager
def sweep_bar(weights: Sequence[float], **kwargs) -> Iterator[SweepBar]:
    """A SweepBar (kwargs: its own) that job_done advances; closed however the block ends
    (finished, a job's error, Ctrl-C), before the sweep's summary or the error is printed.
    While it is open, Python's warnings are written above it too (their text unchanged)."""
    global _current
    bar = SweepBar(weights, **kwargs)
    _current = bar
    shown = warnings.showwarning

    def show_above(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if not showing():
            shown(message, category, filename, lineno, file, line)
            return
        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=file if file is not None else sys.stderr)

    warnings.showwarning = show_above
    try:
        yield bar
    finally:
        warnings.showwarning = shown
        _current = None
        bar.close()


def showing() -> bool:
    """True while this process has a sweep bar on the screen (a terminal, not yet closed)."""
    return _current is not None and not _current.bar.disable


def write(line: str, file: IO[str]) -> None:
    """print(line, file=file), above the sweep's bar if one is on the screen."""
    if showing():
        tqdm.write(line, file=file)
    else:
        print(line, file=file)


def job_done(index: int, resumed: bool = False) -> None:
    """Advance this process's sweep bar, if there is one (there is none in a worker process)."""
    if _current is not None:
        _current.job_done(index, resumed)
