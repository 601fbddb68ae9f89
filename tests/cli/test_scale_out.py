"""Launchers beyond the basic one, and crash safety under kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.results import load
from harness.vocabulary import KEY_COLUMNS

from ..conftest import REPO, run_cli, run_cli_in_process

# Accuracy-only smoke sweep: the launchers and the kill test are about rows, not timings.
ACCURACY_SMOKE = ("+sweep=smoke", "timing.enabled=false", "memory.enabled=false")
ACCURACY_COLUMNS = [
    *KEY_COLUMNS,
    "status",
    "loss",
    "loss_ref",
    "loss_rel_err",
    "grad_rel_err",
    "nan_count",
    "inf_count",
]


def _accuracy(run_dir) -> pd.DataFrame:
    rows = load(run_dir)[ACCURACY_COLUMNS]
    return rows.sort_values(list(KEY_COLUMNS)).reset_index(drop=True)


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("basic") / "run"
    proc = run_cli(*ACCURACY_SMOKE, f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _the_same_rows(got: pd.DataFrame, basic_run, **settings) -> None:
    """`got` holds exactly basic_run's accuracy rows at `settings`, and some."""
    want = _accuracy(basic_run)
    for key, value in settings.items():
        want = want[want[key] == value]
    assert len(got) > 0
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))


def test_joblib_gives_the_same_accuracy_rows(basic_run, tmp_path):
    # One dtype, eight points over two workers: each worker is a fresh interpreter (loky), and
    # every job still crosses the process boundary
    out = tmp_path / "joblib"
    narrow = ("hydra.sweeper.params.dtype=bf16",)
    launcher = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    proc = run_cli(*ACCURACY_SMOKE, *narrow, *launcher, f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _the_same_rows(_accuracy(out), basic_run, dtype="bf16")


def test_submitit_local_gives_the_same_accuracy_rows(basic_run, tmp_path):
    # Two points: submitit starts a fresh interpreter per job, which costs seconds each here.
    narrow = (
        "hydra.sweeper.params.num_classes=1000",
        "hydra.sweeper.params.dtype=fp16",
        "hydra.sweeper.params.targets=soft",
    )
    out = tmp_path / "submitit"
    proc = run_cli(*ACCURACY_SMOKE, *narrow, "hydra/launcher=submitit_local", f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _the_same_rows(_accuracy(out), basic_run, num_classes=1000, dtype="fp16", targets="soft")


def test_parallel_timing_is_refused_unless_forced(tmp_path):
    # refused before any work, so in this process (test_bad_input.py runs a few refusals in a real one)
    proc = run_cli_in_process(
        "-m", "hydra/launcher=joblib", "batch_size=8,16", f"hydra.sweep.dir={tmp_path / 'x'}"
    )
    assert proc.returncode == 2 and "timing.enabled=false" in proc.stderr
    assert not (tmp_path / "x").exists()
    proc = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        "batch_size=8,16",
        "variants=[torch_cross_entropy]",
        f"hydra.sweep.dir={tmp_path / 'y'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # one job at a time: timings are fine


def _start(out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *ACCURACY_SMOKE, f"hydra.sweep.dir={out}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


def test_kill_minus_9_at_random_moments_then_resume(basic_run, tmp_path):
    """Five kills at random points of the sweep (after a random number of finished points,
    plus a random delay that lands inside a later point or its write), each followed by a
    resume; at the end every expected row exists exactly once and every file reads."""
    rng = random.Random(20261126)
    out = tmp_path / "run"
    total = len(list(basic_run.rglob("rows.parquet")))
    deadline = time.monotonic() + 240
    for trial in range(5):
        proc = _start(out)
        wait_for = rng.randrange(0, total - 1)
        seen = 0
        while seen < wait_for and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += f"/{total}," in line and " rows " in line or "already written" in line
        time.sleep(rng.uniform(0.0, 0.4))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"trial {trial}: the sweep ended before the kill"
        for f in out.rglob("*.parquet"):
            if not any(part.startswith(".") for part in f.relative_to(out).parts):
                pq.read_table(f)  # a visible file is always whole
    done = run_cli(*ACCURACY_SMOKE, f"hydra.sweep.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{total}/{total} points written" in done.stdout
    got = _accuracy(out)
    assert not got.duplicated(list(KEY_COLUMNS)).any()
    pd.testing.assert_frame_equal(got, _accuracy(basic_run))
    # A killed write leaves a hidden temporary; the job that later wrote its point removed it.
    assert not list(out.rglob(".rows.parquet.*.tmp"))
