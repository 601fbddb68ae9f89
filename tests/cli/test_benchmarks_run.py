"""The pytest-benchmark suite runs as the README says, with statistics and without."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import REPO


@pytest.mark.parametrize("flag", ["--benchmark-disable", "--benchmark-min-rounds=1"])
def test_a_benchmark_case_runs(flag):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "bench",
            "tests/benchmarks",
            "-k",
            "torch_cross_entropy and C1000 and fp32 and hard and fwd_bwd",
            flag,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
