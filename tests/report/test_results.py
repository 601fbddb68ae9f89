"""The results format: atomic writes, resume keys, and a `load` that survives bad files."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.results import SCHEMA, load, stored_key, write_rows


def _row(variant="torch_cross_entropy", status="ok"):
    return {
        "variant": variant,
        "targets": "soft",
        "batch_size": 2,
        "num_classes": 3,
        "dtype": "fp32",
        "logit_scale": 1.0,
        "device": "cpu",
        "mode": "fwd",
        "seed": 0,
        "status": status,
        "time_samples_s": [1e-3, 2e-3],
    }


def test_write_is_atomic_and_tagged(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / ".rows.parquet.123.tmp").write_bytes(b"half a file")  # a killed write
    path = write_rows([_row()], tmp_path / "job", "abc123")
    assert path.name == "rows.parquet" and stored_key(tmp_path / "job") == "abc123"
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["rows.parquet"]  # stale temp gone
    assert pq.read_schema(path).remove_metadata().equals(SCHEMA)


def test_load_skips_corrupt_foreign_and_hidden_files_and_names_them(tmp_path, capsys):
    write_rows([_row("a")], tmp_path / "good", "k1")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "rows.parquet").write_bytes(b"PAR1 not really parquet")
    (tmp_path / "foreign").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign" / "data.parquet")
    (tmp_path / ".hidden").mkdir()
    write_rows([_row("hidden")], tmp_path / ".hidden", "k2")
    rows = load(tmp_path)
    assert list(rows.variant) == ["a"]
    assert set(SCHEMA.names) <= set(rows.columns)
    err = capsys.readouterr().err
    assert "corrupt/rows.parquet" in err and "foreign/data.parquet" in err and "hidden" not in err


def test_load_of_an_older_file_fills_newer_columns_with_nulls(tmp_path):
    old = pa.Table.from_pylist([_row()], schema=SCHEMA).drop_columns(["pct_of_floor", "err_vs_native"])
    (tmp_path / "old").mkdir()
    pq.write_table(old, tmp_path / "old" / "rows.parquet")
    rows = load(tmp_path)
    assert len(rows) == 1 and rows.pct_of_floor.isna().all() and "err_vs_native" in rows


def test_load_of_an_empty_directory_has_the_schema(tmp_path):
    rows = load(tmp_path)
    assert len(rows) == 0 and list(rows.columns) == SCHEMA.names
    assert isinstance(rows, pd.DataFrame)
