"""scripts/compare.py and harness/compare.py: regressions found, noise ignored, bad input refused.

Most tests build rows in memory (the statistics need controlled samples, not a busy machine's);
the end-to-end tests run the harness and the CLI as subprocesses on one tiny point.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.compare import (
    Thresholds,
    UnusableInput,
    compare,
    compare_dirs,
    load_run,
)
from harness.dtypes import DTYPES, unit_roundoff
from harness.report.compare import console, markdown, plot
from harness.results import SCHEMA, write_rows

from ..conftest import REPO, run_cli

SCRIPT = REPO / "scripts" / "compare.py"
U32 = unit_roundoff(DTYPES["fp32"])

ENV = {
    "device_name": "CPU model A",
    "torch_version": "2.13.0",
    "num_threads": 2,
    "git_commit": "abc123",
    "git_dirty": False,
    "python_version": "3.11.7",
}


def row(
    variant: str = "v",
    mode: str = "fwd",
    samples=None,
    status: str = "ok",
    loss_err: float = 10 * U32,
    grad_err: float | None = 10 * U32,
    mem: int = 4096,
    **env,
) -> dict:
    """One results row (SCHEMA columns a comparison reads) at a fixed fp32 point."""
    samples = list(samples) if samples is not None else [1e-3] * 10
    return {
        "variant": variant,
        "targets": "soft",
        "batch_size": 32,
        "num_classes": 10,
        "dtype": "fp32",
        "logit_scale": 1.0,
        "device": "cpu",
        "mode": mode,
        "seed": 0,
        "status": status,
        "loss_rel_err": loss_err,
        "grad_rel_err": grad_err if mode == "fwd_bwd" else None,
        "time_median_s": float(np.median(samples)),
        "time_samples_s": samples,
        "reps": len(samples),
        "peak_mem_bytes": mem,
        **{**ENV, **env},
    }


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def draws(seed: int, n: int, median: float, sigma: float) -> np.ndarray:
    """n log-normal timing samples [s] around `median`: the right-skewed shape of real timings."""
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


# ---------------------------------------------------------------- time: the samples' intervals


def test_identical_runs_report_no_regression():
    base = frame(
        row("a", samples=draws(0, 20, 1e-3, 0.05)), row("b", "fwd_bwd", samples=draws(1, 20, 2e-3, 0.05))
    )
    c = compare(base, base.copy())
    assert c.exit_code == 0
    assert (
        set(c.rows["time"]) == {"same"}
        and set(c.rows["accuracy"]) == {"same"}
        and set(c.rows["memory"]) == {"same"}
    )
    assert "no regression" in console(c)


def test_fifty_percent_slower_is_flagged_with_its_ratio():
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.05)))
    new = frame(row("a", samples=draws(1, 20, 1.5e-3, 0.05)))
    c = compare(base, new)
    assert c.exit_code == 1
    (finding,) = c.regressions.itertuples()
    assert finding.kind == "time" and finding.variant == "a"
    assert 1.35 < c.rows["time_ratio"].iloc[0] < 1.65
    assert "REGRESSION" in console(c) and "x1.5" in console(c)


def test_faster_is_listed_as_an_improvement_not_a_failure():
    base = frame(row("a", samples=draws(0, 20, 1.5e-3, 0.05)))
    new = frame(row("a", samples=draws(1, 20, 1e-3, 0.05)))
    c = compare(base, new)
    assert c.exit_code == 0
    assert list(c.findings["role"]) == ["improvement"] and c.rows["time"].iloc[0] == "faster"


# The rest of the time rule (spread, few samples, calibration, waits, relative samples, strict):
# tests/compare/test_compare_time.py.


# ---------------------------------------------------------------- accuracy and memory


def test_status_flip_to_nonfinite_is_a_regression_across_devices():
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.05)))
    new = frame(
        row(
            "a",
            status="nonfinite",
            loss_err=float("nan"),
            samples=draws(1, 20, 3e-3, 0.05),
            device_name="CPU model B",
            num_threads=8,
        )
    )
    c = compare(base, new)
    assert c.exit_code == 1
    assert list(c.regressions["kind"]) == ["accuracy"]
    assert "ok -> nonfinite" in c.regressions["change"].iloc[0]
    # 3x slower, on another machine: shown, but as information
    assert "time" in c.demoted
    assert list(c.findings.loc[c.findings["kind"] == "time", "role"]) == ["information"]


@pytest.mark.parametrize(
    "old_status,new_status,regressed",
    [
        ("ok", "inaccurate", True),
        ("inaccurate", "nonfinite", True),
        ("nonfinite", "error", True),
        ("nonfinite", "ok", False),
        ("ok", "ok", False),
    ],
)
def test_status_changes_are_ranked(old_status, new_status, regressed):
    c = compare(frame(row("a", status=old_status)), frame(row("a", status=new_status)))
    assert c.exit_code == int(regressed)


def test_error_growth_beyond_twice_is_a_regression():
    c = compare(frame(row("a", "fwd_bwd", grad_err=10 * U32)), frame(row("a", "fwd_bwd", grad_err=25 * U32)))
    assert c.exit_code == 1 and "grad err x2.5" in c.regressions["change"].iloc[0]
    c = compare(frame(row("a", loss_err=10 * U32)), frame(row("a", loss_err=19 * U32)))
    assert c.exit_code == 0 and c.rows["accuracy"].iloc[0] == "same"


def test_error_growth_below_one_rounding_is_not_a_regression():
    # 0.1u -> 0.9u is a 9x ratio of two results that are both exact to one rounding
    c = compare(frame(row("a", loss_err=0.1 * U32)), frame(row("a", loss_err=0.9 * U32)))
    assert c.exit_code == 0


def test_memory_growth_is_flagged_past_its_factor():
    assert compare(frame(row("a", mem=1000)), frame(row("a", mem=1200))).exit_code == 1
    assert compare(frame(row("a", mem=1000)), frame(row("a", mem=1050))).exit_code == 0
    other_torch = compare(frame(row("a", mem=1000)), frame(row("a", mem=1200, torch_version="2.14.0")))
    assert other_torch.exit_code == 0 and "memory" in other_torch.demoted


def test_gate_accuracy_prints_time_as_information():
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.05)))
    new = frame(row("a", samples=draws(1, 20, 2e-3, 0.05)))
    c = compare(base, new, gates=("accuracy",))
    assert c.exit_code == 0
    assert list(c.findings["role"]) == ["information"]
    assert "Information" in console(c)


def test_rows_in_one_run_only_are_information():
    base = frame(row("a"), row("gone"))
    new = frame(row("a"), row("added"), row("added", "fwd_bwd"))
    c = compare(base, new)
    assert c.exit_code == 0
    assert list(c.only_base["variant"]) == ["gone"] and sorted(c.only_new["variant"]) == ["added", "added"]
    assert "Rows in only one run: 3 (information, not a regression)" in console(c)


def test_markdown_and_plot_show_the_regression(tmp_path):
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.05)), row("b", samples=draws(2, 20, 1e-3, 0.05)))
    new = frame(row("a", samples=draws(1, 20, 1.5e-3, 0.05)), row("b", samples=draws(3, 20, 1e-3, 0.05)))
    c = compare(base, new)
    md = markdown(c)
    assert md.startswith("### Comparison: REGRESSION") and "| a " in md and "#### Regressions: 1" in md
    out = plot(c, tmp_path / "ratios.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- unusable input: exit 2


def _write(directory: Path, *rows: dict) -> Path:
    write_rows(list(rows), directory, "test")
    return directory


def test_load_run_reads_what_write_rows_wrote(tmp_path):
    df = load_run(_write(tmp_path / "run", row("a", samples=[1e-3] * 8)))
    assert len(df) == 1 and len(df["time_samples_s"].iloc[0]) == 8


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: d / "absent", "no such directory"),
        (lambda d: d, "no parquet files"),
        (lambda d: _drop_column(d, "status"), "schema mismatch"),
        (lambda d: _retype_column(d, "batch_size"), "schema mismatch"),
        (lambda d: _write(d, row("a"), row("a")), "repeat a configuration key"),
    ],
)
def test_unusable_input_is_one_line(tmp_path, make, reason):
    with pytest.raises(UnusableInput) as err:
        load_run(make(tmp_path))
    assert reason in str(err.value) and "\n" not in str(err.value)


def _corrupt(d: Path) -> Path:
    (d / "corrupt").mkdir(parents=True)
    (d / "corrupt" / "rows.parquet").write_bytes(b"PAR1 not really parquet")
    return d / "corrupt" / "rows.parquet"


def _foreign(d: Path) -> Path:
    (d / "foreign").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), d / "foreign" / "data.parquet")
    return d / "foreign" / "data.parquet"


def test_corrupt_and_foreign_files_are_named_and_skipped_the_rest_compared(tmp_path, capsys):
    # docs/operations.md: "Corrupt or foreign parquet files in a results directory are named on stderr and
    # skipped": one bad file must not void a run.
    run = _write(tmp_path / "run" / "good", row("a")).parent
    bad = [_corrupt(run), _foreign(run)]
    df = load_run(run)
    assert list(df["variant"]) == ["a"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(str(f) in line for f, line in zip(bad, err))


def test_a_run_of_only_unusable_files_is_one_line(tmp_path):
    _corrupt(tmp_path)
    _foreign(tmp_path)
    with pytest.raises(UnusableInput, match=r"no usable rows \(2 parquet file\(s\)") as err:
        load_run(tmp_path)
    assert "\n" not in str(err.value)


def _drop_column(d: Path, col: str) -> Path:
    t = pa.Table.from_pylist([row("a")], schema=SCHEMA)
    pq.write_table(t.drop_columns([col]), d / "rows.parquet")
    return d


def _retype_column(d: Path, col: str) -> Path:
    t = pa.Table.from_pylist([row("a")], schema=SCHEMA)
    i = t.schema.get_field_index(col)
    pq.write_table(t.set_column(i, col, t[col].cast(pa.string())), d / "rows.parquet")
    return d


def compare_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "new,extra,reason",
    [
        ("empty", [], "no parquet files"),
        ("bad", [], "missing column(s) time_samples_s"),
        (
            "good",
            ["--gate", "speed"],
            "--gate=speed is not allowed: use all, none, or a comma list of accuracy, time, memory",
        ),
        ("good", ["--time-factor", "0.9"], "--time-factor=0.9 is not allowed: use a number > 1"),
        ("retyped", [], "column batch_size is string, expected int64"),
    ],
)
def test_cli_exit_2_with_one_line_reason(tmp_path, new, extra, reason):
    good = _write(tmp_path / "good", row("a"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    _drop_column(tmp_path / "bad", "time_samples_s")
    # a rows file with a needed column of another type is a schema mismatch, not a file to skip
    (tmp_path / "retyped").mkdir()
    _retype_column(tmp_path / "retyped", "batch_size")
    p = compare_cli(good, tmp_path / new, *extra)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert reason in p.stderr and p.stdout == ""


def test_cli_skips_a_corrupt_file_and_compares_the_rest(tmp_path):
    base = _write(tmp_path / "base", row("a"))
    new = _write(tmp_path / "new" / "good", row("a")).parent
    corrupt = _corrupt(new)
    p = compare_cli(base, new)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and str(corrupt) in p.stderr and "Traceback" not in p.stderr


def test_cli_exits_2_when_only_unusable_files_remain(tmp_path):
    base = _write(tmp_path / "base", row("a"))
    corrupt = _corrupt(tmp_path / "new")
    p = compare_cli(base, tmp_path / "new")
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    named, last = p.stderr.strip().splitlines()
    assert str(corrupt) in named and last.startswith(f"compare: {tmp_path / 'new'}: no usable rows")


def _compare_script():
    spec = importlib.util.spec_from_file_location("compare_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stated_defaults(text: str) -> dict[str, float]:
    """Every "[--option NUMBER]" of a usage text: the number a reader takes for the default."""
    return {m[1]: float(m[2]) for m in re.finditer(r"\[(--[a-z-]+) ([0-9.]+)\]", text)}


def _usages(text: str) -> list[str]:
    """Each code block's lines from "python scripts/compare.py BASE_DIR" to the block's end."""
    out, start = [], text.find("python scripts/compare.py BASE_DIR")
    while start >= 0:
        out.append(text[start : text.index("```", start)])
        start = text.find("python scripts/compare.py BASE_DIR", start + 1)
    return out


def test_the_usage_texts_state_the_defaults_the_code_has():
    # The script's docstring once said --time-factor 1.10 while the default was 1.30. The full
    # usage is in docs/timing.md; the README shows commands, and any default it states must hold.
    from ..docs_text import page, readme

    script = _compare_script()
    defaults = vars(script.parse_args(["base", "new"]))
    timing = page("timing.md")
    assert any(_stated_defaults(u) for u in _usages(timing)), "docs/timing.md's usage shows the defaults"
    for text in (script.__doc__, *_usages(timing), *_usages(readme())):
        for option, value in _stated_defaults(text).items():
            key = option[2:].replace("-", "_")
            assert key in defaults, f"{option} is not an option of scripts/compare.py"
            assert value == defaults[key], f"{option} {value:g}: the default is {defaults[key]}"
    assert f"The default factor, {Thresholds().time_factor:g}," in timing


def test_the_docs_name_the_key_compare_joins_on():
    # The key once grew from 9 columns to 19 while the text still listed nine.
    from harness.vocabulary import KEY_COLUMNS

    from ..docs_text import page

    text = page("timing.md")
    m = re.search(r"Joins the two runs on the (\d+) key columns.*?`KEY_COLUMNS`[^`]*`([^`]+)`", text, re.S)
    assert m, "docs/timing.md names the key columns"
    assert int(m[1]) == len(KEY_COLUMNS) and m[2].split() == list(KEY_COLUMNS), m[0]


# ---------------------------------------------------------------- end to end


# One point (B=64, C=4096, fp32) with enough samples for the rank test to reach alpha,
# sampled for 0.2 s per mode so that a passing burst of load elsewhere moves the median less.
# Large enough (64 x 4096) that F.cross_entropy itself, which the slowed copy stretches 4x,
# dominates each timed call rather than the harness's few microseconds of call overhead.
POINT = ["batch_size=64", "num_classes=4096", "timing.min_reps=20", "timing.min_time_s=0.2"]
SLOW = "torch_cross_entropy@tests.slow_variant:slow_cross_entropy"
# One multirun of four jobs, back to back in one process: the plain op twice, then the slowed
# one (timing.warmup=3,4 only makes two output folders of the same configuration key); adjacent
# jobs see the most similar load from whatever else the machine runs.
SWEEP = ["-m", *POINT, f"variants=[torch_cross_entropy],[{SLOW}]", "timing.warmup=3,4"]
# One intra-op thread: on an oversubscribed machine two threads wait for each other's time
# slices, and a 20 us call takes 10 ms in some samples and not in others.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"base", "again", "slowed"}: the job folders of SWEEP (each a run directory)."""
    root = tmp_path_factory.mktemp("compare-e2e")
    p = run_cli(*SWEEP, f"hydra.sweep.dir={root}", env=ONE_THREAD)
    assert p.returncode == 0, p.stderr[-2000:]
    jobs = {}
    for rows in root.rglob("rows.parquet"):
        name = rows.parent.name
        jobs[("slowed" if "slow_variant" in name else "plain", "warmup=3" in name)] = rows.parent
    assert len(jobs) == 4, sorted(jobs)
    return {"base": jobs["plain", True], "again": jobs["plain", False], "slowed": jobs["slowed", True]}


@pytest.mark.slow
def test_two_runs_of_the_same_point_report_no_regression(runs):
    # Time is printed but not gated here: on a machine shared with other jobs two runs of the
    # same point differ by the load between them (measured on 2 shared cores: 218 us vs 137 us
    # for fwd_bwd, p < 1e-60, in adjacent jobs), which no test on the samples can tell from a
    # slowdown. That noise within a run is ignored is tested on controlled samples above.
    p = compare_cli(runs["base"], runs["again"], "--gate", "accuracy,memory")
    assert p.returncode == 0, p.stdout
    assert "no regression (2 rows compared, gates: accuracy, memory" in p.stdout
    assert "accuracy  2 same" in p.stdout and "memory    2 same" in p.stdout


@pytest.mark.slow
def test_slowed_variant_under_the_same_name_is_flagged(runs, tmp_path):
    # A 4x slowdown (tests/slow_variant.py says why not 1.5x in one try) is never "same": it is
    # slower, or, when the evidence does not bear the separation out, ambiguous with the reason,
    # which --strict fails as well. Accuracy and memory (the same op) never regress.
    from harness.compare import compare_dirs

    c = compare_dirs(runs["again"], runs["slowed"])
    fwd = c.rows[c.rows["mode"] == "fwd"].iloc[0]
    assert fwd["time_ratio"] > c.thresholds.time_factor, fwd
    assert fwd["time"] in ("slower", "ambiguous"), fwd["time_note"]
    assert fwd["time"] == "slower" or fwd["time_note"], "an ambiguous row says why"
    assert set(c.rows["accuracy"]) == {"same"} and set(c.rows["memory"]) == {"same"}
    md = tmp_path / "comment.md"
    p = compare_cli(runs["again"], runs["slowed"], "--markdown", md, "--strict")
    assert p.returncode == 1, p.stdout
    if fwd["time"] == "slower":
        regressions = md.read_text().split("#### Regressions")[1].split("<details>")[0]
        assert "torch_cross_entropy" in regressions and "| fwd " in regressions and "| time " in regressions
        assert "| accuracy " not in regressions and "| memory " not in regressions


# ---------------------------------------------------------------- a busy machine


def test_a_disturbed_row_is_not_a_regression():
    # Half the new samples hit a stall: its interval spans both, so nothing separates.
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.02)))
    new = frame(row("a", samples=[*draws(1, 10, 1e-3, 0.02), *draws(2, 11, 4e-3, 0.02)]))
    c = compare(base, new)
    assert c.rows["time"].iloc[0] == "ambiguous" and c.exit_code == 0


def test_best_of_repeats_keeps_the_fastest_times_and_the_worst_accuracy():
    from harness.compare import best_of_repeats

    quick, stalled = draws(0, 20, 1e-3, 0.02), draws(1, 20, 5e-3, 0.02)
    runs = frame(
        row("a", samples=stalled, status="ok", loss_err=1e-7),
        row("a", samples=quick, status="inaccurate", loss_err=3e-6),
    )
    (best,) = best_of_repeats(runs).to_dict("records")
    assert np.allclose(best["time_samples_s"], quick)
    assert best["status"] == "inaccurate" and best["loss_rel_err"] == 3e-6


def test_markdown_fits_forty_lines_with_the_largest_regressions_first():
    base, new = [], []
    for i in range(60):  # 60 variants: 30 slower by a growing factor, 30 faster
        factor = 1.5 + i / 10 if i < 30 else 0.5
        base.append(row(f"v{i:02d}", samples=draws(2 * i, 20, 1e-3, 0.01)))
        new.append(row(f"v{i:02d}", samples=draws(2 * i + 1, 20, factor * 1e-3, 0.01)))
    c = compare(frame(*base), frame(*new))
    md = markdown(c)
    lines = md.splitlines()
    assert len(lines) <= 40, len(lines)
    assert lines[0].startswith("### Comparison: REGRESSION: 30 finding(s)")
    assert any(line.startswith("All rows below:") and "device cpu" in line for line in lines)
    table = [line for line in lines if line.startswith("| v") and not line.startswith("| variant")]
    assert table[0].startswith("| v29") and table[1].startswith("| v28")  # largest first
    assert "more: see the console report" in md
    assert len(markdown(c, max_lines=0).splitlines()) > 40  # no limit: everything


def test_nothing_in_common_exits_2(tmp_path):
    a = _write(tmp_path / "a", row("a", samples=draws(0, 20, 1e-3, 0.02)))
    b = _write(tmp_path / "b", row("b", samples=draws(1, 20, 1e-3, 0.02)))
    p = compare_cli(a, b)
    assert p.returncode == 2 and "nothing to compare" in p.stderr and p.stderr.count("\n") == 1


def test_a_run_from_before_the_loss_options_compares_with_a_new_one(tmp_path):
    # results/baseline was written before the option columns and hidden_size existed: it loads
    # with their defaults and joins the new rows on every key (the CI step compares exactly this).
    from harness.vocabulary import COLUMN_DEFAULTS

    old = tmp_path / "old"
    old.mkdir()
    t = pa.Table.from_pylist([row("a", samples=[1e-3] * 8)], schema=SCHEMA)
    pq.write_table(t.drop_columns(list(COLUMN_DEFAULTS)), old / "rows.parquet")
    new = _write(tmp_path / "new", row("a", samples=[1e-3] * 8))
    c = compare_dirs(old, new)
    assert len(c.rows) == 1 and c.only_base.empty and c.only_new.empty


def test_shared_key_columns_are_said_once_and_default_options_as_the_plain_loss():
    base = pd.DataFrame([row(v, samples=[1e-3] * 10) for v in ("a", "b")])
    new = pd.DataFrame([row(v, samples=[3e-3] * 10) for v in ("a", "b")])
    text = console(compare(base, new))
    assert "All rows below:" in text and "the plain loss (no option on)" in text
    assert "ignore_fraction" not in text and "label_smoothing" not in text
