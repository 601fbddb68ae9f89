"""A sweep folder any tool can read: the one-liners of docs/settings.md for pandas, pyarrow and duckdb
give exactly the rows, because everything else in the folder starts with "_" or "."."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, request):
    from ..conftest import run_cli

    out = tmp_path_factory.mktemp("tools") / "sweep"
    proc = run_cli(
        "+sweep=smoke",
        "num_classes=10",
        "dtype=fp32",
        "targets=hard",
        "variants=[torch_cross_entropy]",
        f"hydra.sweep.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_three_one_liners_read_the_rows_and_nothing_else(sweep):
    import duckdb
    import pyarrow.dataset as ds

    from harness.results import load

    expected = len(load(sweep))  # pandas
    assert expected == 4  # 2 points x 2 modes
    assert ds.dataset(sweep, format="parquet").count_rows() == expected  # pyarrow
    got = duckdb.sql(f"SELECT count(*) FROM read_parquet('{sweep}/**/*.parquet')").fetchall()[0][0]
    assert got == expected  # duckdb
    others = [
        p.name
        for p in sweep.rglob("*")
        if p.is_file()
        and p.name != "rows.parquet"
        and not any(part.startswith((".", "_")) for part in p.relative_to(sweep).parts)
    ]
    assert others == [], f"files a glob would meet: {others}"


def test_the_docs_show_those_one_liners():
    from ..docs_text import page

    docs = page("settings.md")
    assert "from harness.results import load" in docs and "rows = load(DIR)" in docs
    assert 'pyarrow.dataset.dataset(DIR, format="parquet")' in docs
    assert "read_parquet('DIR/**/*.parquet')" in docs
