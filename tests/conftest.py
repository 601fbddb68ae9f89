"""Shared fixtures: a small, fast config and a way to run the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` as a subprocess; returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def python_c(code: str, *args: str) -> str:
    """What `python -c CODE ARGS` prints, in a fresh interpreter (for what a process does once:
    its imports, its collector, its heap); a failure shows the child's stderr."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` as __main__ runs it (cli_errors.run around the Hydra entry
    point), in this process: about 0.1 s where a subprocess spends 2 s importing torch and
    Hydra. For settings refused before any work; run_cli proves the same of a real process."""
    import contextlib
    import io

    from hydra.core.global_hydra import GlobalHydra

    from harness import cli_errors
    from harness.app import main

    out, err = io.StringIO(), io.StringIO()
    argv, full_error = sys.argv, os.environ.get(cli_errors.FULL_ERROR)
    sys.argv, code = ["harness", *args], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli_errors.run(main)
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        if full_error is None:
            os.environ.pop(cli_errors.FULL_ERROR, None)
        else:
            os.environ[cli_errors.FULL_ERROR] = full_error
    return subprocess.CompletedProcess(["harness", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


def smoke_run_dir(tmp_path_factory) -> Path:
    """A real `+sweep=smoke` run, made once per test session and shared (the CLI, report and
    browser tests read it; a later module finds the finished run in the session's base temp
    folder). Its console output is kept beside it: console.out, console.err."""
    run = tmp_path_factory.getbasetemp() / "smoke-run"
    done = run / ".complete"
    if not done.exists():
        proc = run_cli("+sweep=smoke", f"hydra.sweep.dir={run}", timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run / "console.out").write_text(proc.stdout)
        (run / "console.err").write_text(proc.stderr)
        done.touch()
    return run


# A job's whole config, as Hydra composes it from conf/config.yaml, for calling harness.job
# directly: tiny, timing and memory off. Tests pass what differs.
_JOB_BASE = {
    "batch_size": 4,
    "num_classes": 50,
    "dtype": "fp32",
    "logit_scale": 1.0,
    "device": "cpu",
    "targets": "hard",
    "variants": [],
    "exclude_variants": [],
    "seed": 0,
    "scan": {"logit_scale": [], "seed": []},
    "num_threads": None,
    "timing": {
        "enabled": False,
        "warmup": 0,
        "min_reps": 1,
        "min_time_s": 0.0,
        "max_reps": 1,
        "allow_parallel": False,
    },
    "memory": {"enabled": False},
}


def job_config(**settings) -> object:
    """An OmegaConf job config: the base above with `settings` replacing its keys."""
    from omegaconf import OmegaConf

    return OmegaConf.create({**_JOB_BASE, **settings})


def run_job(cfg: Any, **kwargs: Any) -> list[dict]:
    """One job in this process, as the CLI runs it after its pre-launch check: its rows."""
    from harness import job

    return job.run(*job.check(cfg), cfg.timing, cfg.memory, metadata={}, **kwargs)
