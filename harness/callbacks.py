"""Hydra callbacks: validate before any directory exists, and close a sweep with a summary.

Hydra makes the run directory (and, in a multirun, the sweep directory) *after* these
`on_*_start` hooks, so a bad setting stops here with one line, exit code 2 and nothing written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from harness import progress, studies
from harness.config import SettingError
from harness.job import announce_threads, check
from harness.launchers import check_launcher, check_writable, share_cores
from harness.plan import check_sweep, task_config
from harness.vocabulary import CALL_FAILED, POINT_COLUMNS, ROWS_FILE, STATUSES

# Shared with the jobs (which may run in other processes, so through the environment).
SWEEP_SIZE_ENV = "HARNESS_SWEEP_SIZE"
SWEEP_START_ENV = "HARNESS_SWEEP_START"
SWEEP_WEIGHTS_ENV = "HARNESS_SWEEP_WEIGHTS"  # each job's expected share of the time (plan.job_weight)


def sweep_weights(total: int) -> list[float]:
    """Each job's weight as on_multirun_start shared it; equal weights if it did not."""
    weights = [float(w) for w in os.environ.get(SWEEP_WEIGHTS_ENV, "").split(",") if w]
    return weights if len(weights) == total else [1.0] * total


def fail(message: str) -> None:
    progress.write(f"harness: {message}", file=sys.stderr)  # above the sweep's bar, if one is drawn
    sys.exit(2)


def timing_noise_line(rows: Any) -> str | None:
    """The sweep's contention, in one line with the remedy, when any timed row was marked."""
    from harness.measure.contention import summary_line

    if not len(rows) or "contended" not in rows:
        return None
    timed = rows[rows["time_median_s"].notna()]
    return summary_line(timed.to_dict("records"))


class HarnessCallback(Callback):
    def __init__(self) -> None:
        self._existing: set[Path] = set()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            task = task_config(config)
            studies.check(task.study) if task.get("study") is not None else check(task)
            check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")
        except SettingError as exc:
            fail(str(exc))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            weights = check_sweep(config)
            size = len(weights)
            check_launcher(config, size)
            check_writable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
        except SettingError as exc:
            fail(str(exc))
        share_cores(config)
        threads_line = (
            announce_threads() if config.get("num_threads") is None and config.timing.enabled else ""
        )
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self._existing = set(sweep_dir.rglob(ROWS_FILE)) if sweep_dir.exists() else set()
        os.environ[SWEEP_SIZE_ENV] = str(size)
        os.environ[SWEEP_WEIGHTS_ENV] = ",".join(f"{w:.6g}" for w in weights)
        os.environ[SWEEP_START_ENV] = str(time.time())
        print(f"harness: sweep of {size} points into {sweep_dir}", flush=True)
        if threads_line:
            print(f"harness: {threads_line}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # In the job's process: the sweep's bar is there only under the basic launcher. A job
        # that failed took its time as a measured one does.
        if config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run: no bar, and no job number either
        resumed = job_return.status == JobStatus.COMPLETED and job_return.return_value == "resumed"
        progress.job_done(config.hydra.job.num, resumed=resumed)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.results import load  # pandas only once the sweep is done

        sweep_dir = Path(str(config.hydra.sweep.dir))
        files = set(sweep_dir.rglob(ROWS_FILE))
        size = int(os.environ.get(SWEEP_SIZE_ENV, len(files)))
        resumed = sum(
            1
            for f in files
            if f in self._existing and f.stat().st_mtime < float(os.environ.get(SWEEP_START_ENV, 0))
        )
        rows = load(sweep_dir)
        counts = rows["status"].value_counts() if len(rows) else {}
        by_status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
        elapsed = time.time() - float(os.environ.get(SWEEP_START_ENV, time.time()))
        missing = size - len(files)
        # A point whose every row is error/oom failed as a whole (e.g. its inputs did not fit).
        failed = 0
        if len(rows):
            failed = int(
                rows.groupby(list(POINT_COLUMNS))["status"].agg(lambda s: s.isin(CALL_FAILED).all()).sum()
            )
        print(
            f"harness: {len(files)}/{size} points written ({resumed} resumed from an earlier run"
            + (f", {missing} missing: run the same command again to resume" if missing > 0 else "")
            + (f", {failed} failed: every row error/oom" if failed else "")
            + f"), {len(rows)} rows ({by_status or 'none'}), {elapsed:.1f} s",
            flush=True,
        )
        noisy = timing_noise_line(rows)
        if noisy:
            print(f"harness: {noisy}", flush=True)
        ce_rows = rows[rows["family"] == "cross_entropy"] if len(rows) else rows
        if len(ce_rows):  # the predicted failing scales (cross-entropy's theory), for reports
            from harness.cross_entropy.theory import write_theory

            write_theory(sweep_dir, ce_rows)
        print(f"harness: results in {sweep_dir}", flush=True)
