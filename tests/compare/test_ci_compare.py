"""The CI comparison end to end (scripts/ci_compare.sh, the script the GitHub workflow calls)
and the history it feeds (scripts/history.py): two worktrees of this repository's HEAD,
interleaved and repeated, compared, a markdown report within 40 lines; then a history store."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from ..conftest import REPO

# Two tiny points of the smoke sweep, one variant: the plumbing, not the statistics.
TINY = ["num_classes=10", "dtype=fp32", "targets=hard", "variants=[torch_cross_entropy]"]

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None
    or subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode != 0,
    reason="needs a git checkout with a commit (worktrees of HEAD)",
)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci") / "out"
    proc = subprocess.run(
        ["bash", "scripts/ci_compare.sh", "HEAD", "HEAD", str(out), *TINY],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        # time is printed, not gated: this tests the plumbing; the statistics' false-alarm rate is
        # scripts/compare_noise.py's (README, Measured noise)
        env={
            **__import__("os").environ,
            "PYTHON": sys.executable,
            "REPEATS": "2",
            "COMPARE_ARGS": "--gate accuracy,memory",
        },
    )
    return proc, out


def test_the_same_commit_twice_compares_clean(compared):
    proc, out = compared
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for side in ("base", "head"):
        for k in ("1", "2"):
            assert list((out / side / k).rglob("rows.parquet")), f"{side}/{k} has no rows"
    md = (out / "comparison.md").read_text()
    assert md.startswith("### Comparison: no regression (4 rows compared")
    assert len(md.splitlines()) <= 40


def test_bad_arguments_are_one_line():
    proc = subprocess.run(["bash", "scripts/ci_compare.sh", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_history_appends_each_run_once_and_draws_it(compared, tmp_path):
    _, out = compared
    store = tmp_path / "history.parquet"

    def history(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "scripts/history.py", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    for run in (out / "base" / "1", out / "head" / "1"):
        assert "rows added" in history("append", str(run), "--store", str(store)).stdout
    assert "already in" in history("append", str(out / "base" / "1"), "--store", str(store)).stdout
    assert len(pd.read_parquet(store)) == 8  # 2 runs x 2 points x 2 modes
    drawn = history("plot", "--store", str(store), "--out", str(tmp_path / "plots"))
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "plots" / "history.png").read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(tmp_path / "plots" / "history.csv")
    assert set(csv.columns) >= {"commit", "variant", "time_vs_first", "share_ok"}
    assert (csv["share_ok"] == 1.0).all()
    assert history("append", str(tmp_path / "nowhere"), "--store", str(store)).returncode == 2
    # and the report shows it as its last section
    report = subprocess.run(
        [
            sys.executable,
            "scripts/report.py",
            str(out / "head" / "1"),
            "--history",
            str(tmp_path / "plots"),
            "--figures",  # the history section is what this reads; it is not one of the figures
            "statuses",
            "--out",
            str(tmp_path / "report"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'src="history.png"' in page and (tmp_path / "report" / "history.svg").is_file()
