"""The repeated-softmax study: the step ratio tends to 1/C, fp16 reaches exact uniformity."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.results import load
from harness.studies.flattening import COLUMNS, STUDY_FILE, study_table

SETTINGS = {
    "num_classes": [4, 10],
    "dtypes": ["fp16", "fp64"],
    "start_scales": [1.0, 10.0],
    "seeds": [0, 1],
    "iterations": 12,
}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return study_table(SETTINGS)


def test_columns_and_size(table):
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 2 * 2 * 2 * 13  # C x dtype x scale x seed x (start + 12 steps)


@pytest.mark.parametrize("c", [4, 10])
def test_step_ratio_tends_to_one_over_c_in_fp64(table, c):
    # The Jacobian at the fixed point is (1/C)(I - 11^T/C): once near uniform, each step
    # shrinks the distance by 1/C. Take the last step whose distance is still far above fp64's
    # rounding (1e-12), so the ratio measures the map, not the last ulp.
    g = table[(table.dtype == "fp64") & (table.num_classes == c)]
    for _, run in g.groupby(["start_scale", "seed"]):
        prev = run.dist_from_uniform.shift(1)
        live = run[(run.iteration >= 2) & (prev > 1e-12) & (run.dist_from_uniform > 1e-12)]
        assert abs(live.step_ratio.iloc[-1] - 1 / c) < 0.02 / c, live.step_ratio.tolist()


def test_fp16_reaches_exactly_uniform_and_stays(table):
    g = table[(table.dtype == "fp16") & (table.num_classes == 4)]
    for _, run in g.groupby(["start_scale", "seed"]):
        uniform = run.set_index("iteration").uniform
        first = uniform.idxmax()
        assert uniform[first], "never exactly uniform"
        assert uniform.loc[first:].all()
        assert run.set_index("iteration").dist_from_uniform[first] == 0.0  # 1/4 is exact in fp16


def test_fp64_does_not_reach_exactly_uniform_at_c_10(table):
    # 1/10 is not a binary fraction: fp64 approaches it but its entries keep differing in the
    # last bits for 12 steps; the uniform flag is not set by a distance threshold.
    g = table[(table.dtype == "fp64") & (table.num_classes == 10)]
    assert not g[g.iteration <= 3].uniform.any()


def test_bad_setting_is_one_line():
    from harness.config import SettingError

    with pytest.raises(SettingError, match=r"study\.dtypes"):
        study_table({**SETTINGS, "dtypes": ["fp8"]})


def test_cli_writes_the_table_and_load_skips_it(cli, tmp_path):
    out = tmp_path / "run"
    proc = cli(
        "+study=flattening",
        f"hydra.run.dir={out}",
        "study.num_classes=[4]",
        "study.dtypes=[fp16]",
        "study.seeds=[0]",
        "study.iterations=9",
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out / STUDY_FILE)
    assert set(COLUMNS) <= set(df.columns) and len(df) == 3 * 10  # 3 start scales x 10 rows
    assert "exactly uniform at step" in proc.stdout
    assert len(load(out)) == 0  # a study table is not rows
    bad = cli("+study=flattening", f"hydra.run.dir={tmp_path / 'bad'}", "study.iterations=0")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "harness: study.iterations=0 is not allowed: use an integer >= 1"
    ]
