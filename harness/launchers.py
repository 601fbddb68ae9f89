"""Checks that depend on where and how jobs run: the output directory and the launcher.

Timing several jobs at once on one device corrupts every one of those timings (they share
cores, caches and memory bandwidth), so a launcher that runs jobs side by side on this machine
(joblib with n_jobs != 1, submitit_local) is refused while timing is on, unless the user says
`timing.allow_parallel=true`. Cluster launchers (submitit_slurm) give each job its own device.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from harness.config import SettingError

_LOCAL_PARALLEL = {
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
}

# Hydra's default launcher: every job in this process, one after the other.
_IN_PROCESS = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def check_writable(path: Path, key: str) -> None:
    """The directory (or the nearest ancestor that exists) must be a directory we can write.
    The probe is a hidden folder made and removed at once: nothing is left behind."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SettingError(f"{key}={path} is not usable: {existing} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".harness-probe-", dir=existing))
    except OSError as exc:
        raise SettingError(
            f"{key}={path} is not writable ({exc.strerror}): choose a directory you can write"
        ) from None


def parallel_launcher(config: DictConfig) -> str | None:
    """The name of the launcher if it runs several jobs at once on this machine, else None."""
    launcher = config.hydra.launcher
    name = _LOCAL_PARALLEL.get(str(launcher.get("_target_", "")))
    if name == "joblib" and launcher.get("n_jobs") == 1:
        return None
    return name


def in_process(config: DictConfig) -> bool:
    """True if the launcher runs the jobs one at a time in this process: only then does this
    process see each job end (the progress bar, harness/progress.py)."""
    return str(config.hydra.launcher.get("_target_", "")) == _IN_PROCESS


def share_cores(config: DictConfig) -> int | None:
    """Give each side-by-side job its share of the cores (OMP_NUM_THREADS, read by torch when
    a worker process starts); returns that share, or None for a one-job-at-a-time launcher.

    Without it every worker runs torch's default pool of one thread per core: with 2 jobs on 2
    cores that is 4 busy threads, and each op on a small tensor then waits for a descheduled
    thread (tens of ms an op, measured here) instead of taking microseconds."""
    name = parallel_launcher(config)
    if name is None:
        return None
    jobs = config.hydra.launcher.get("n_jobs", -1) if name == "joblib" else None
    cores = os.cpu_count() or 1
    workers = cores if jobs is None or jobs < 1 else min(jobs, cores)
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def check_launcher(config: DictConfig, num_jobs: int) -> None:
    name = parallel_launcher(config)
    timing = config.timing
    if name and num_jobs > 1 and timing.enabled and not timing.allow_parallel:
        raise SettingError(
            f"hydra/launcher={name} runs jobs side by side on this machine, which corrupts timings: "
            "add timing.enabled=false for an accuracy-only sweep (or timing.allow_parallel=true to force it)"
        )
