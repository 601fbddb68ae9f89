"""Families as siblings on one loss core: no family imports another, every row names its family,
a setting the chosen family does not read is refused, and a third family (tests/third_family.py,
one module) runs through sweep, rows, report and compare with no edit to the harness."""

from __future__ import annotations

import ast
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import job
from harness.config import SettingError
from harness.results import load, write_rows

from ..conftest import REPO, job_config, run_cli, run_job

FAMILY_PACKAGES = {name: REPO / module.replace(".", "/") for name, module in job.FAMILIES.items()}


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("family", sorted(FAMILY_PACKAGES))
def test_no_family_imports_another(family):
    others = [job.FAMILIES[f] for f in FAMILY_PACKAGES if f != family]
    for path in FAMILY_PACKAGES[family].rglob("*.py"):
        bad = [n for n in _imports(path) if any(n == o or n.startswith(o + ".") for o in others)]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: share it through harness/loss/"


def test_the_shared_layers_import_no_family_at_module_level():
    """The runner, rows, core and kernel know no family: they reach one only through a Family."""
    shared = [*(REPO / "harness" / "loss").glob("*.py"), *(REPO / "harness" / "kernel").glob("*.py")]
    shared += [REPO / "harness" / f for f in ("runner.py", "results.py", "family.py", "vocabulary.py")]
    for path in shared:
        top = {
            n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
            for n in ast.parse(path.read_text()).body
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        bad = [m for m in top if m and any(m.startswith(p) for p in job.FAMILIES.values())]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_no_module_is_over_700_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "harness").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 700
    }
    assert not long, f"split these along their seams: {long}"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"hidden_size": 512}, "hidden_size=512 is not read by family=cross_entropy"),
        ({"bias": True}, "bias=true is not read by family=cross_entropy"),
        (
            {"family": "linear_cross_entropy", "targets": "hard", "logits": "zipf"},
            "logits='zipf' is not read by family=linear_cross_entropy",
        ),
    ],
)
def test_a_setting_the_family_does_not_read_is_refused(settings, message):
    with pytest.raises(SettingError, match=message) as err:
        job.points(job_config(**settings))
    assert "\n" not in str(err.value)
    assert "leave it at its default" in str(err.value)


def test_a_setting_at_its_default_is_not_refused():
    # hidden_size 256 and bias false are the schema's defaults: every cross-entropy run has them
    assert job.points(job_config(hidden_size=256, bias=False))
    assert job.points(
        job_config(family="linear_cross_entropy", targets="hard", hidden_size=8, logits="normal")
    )


def test_every_row_names_its_family_and_older_files_load_with_theirs(tmp_path):
    cfg = job_config(variants=["torch_cross_entropy"])
    rows = run_job(cfg)
    assert {r["family"] for r in rows} == {"cross_entropy"}
    lin = job_config(family="linear_cross_entropy", targets="hard", variants=["materialized"], hidden_size=8)
    lin_rows = run_job(lin)
    assert {r["family"] for r in lin_rows} == {"linear_cross_entropy"}
    # files written before the column: a row with a hidden size is the linear family's
    for name, batch in (("ce", rows), ("lin", lin_rows)):
        path = write_rows(batch, tmp_path / name, name)
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["family"]), path)
    loaded = load(tmp_path)
    by_hidden = loaded.groupby(loaded["hidden_size"] > 0)["family"].unique()
    assert list(by_hidden[False]) == ["cross_entropy"]
    assert list(by_hidden[True]) == ["linear_cross_entropy"]
    # and a file from before hidden_size as well: the first family's
    path = tmp_path / "ce" / "rows.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["hidden_size"]), path)
    assert set(load(tmp_path / "ce")["family"]) == {"cross_entropy"}
    assert isinstance(pq.read_schema(tmp_path / "lin" / "rows.parquet").field("variant").type, pa.DataType)


def test_a_family_named_by_a_bad_import_path_is_one_line():
    out = run_cli("family=tests.no_such_family")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "harness: family='tests.no_such_family' does not import (No module named "
        "'tests.no_such_family'): check the module path"
    ]
    out = run_cli("family=tests.conftest")
    assert out.returncode == 2 and "has no FAMILY" in out.stderr


def test_a_third_family_runs_through_sweep_rows_report_and_compare(tmp_path):
    """tests/third_family.py, loaded by import path: two runs of a two-point sweep, the rows,
    the HTML report, and compare between the runs."""
    args = [
        "-m",
        "family=tests.third_family",
        "batch_size=4",
        "num_classes=16",
        "logit_scale=1,200",
        "timing.warmup=0",
        "timing.min_reps=3",
        "timing.min_time_s=0",
    ]
    for run in ("a", "b"):
        out = run_cli(*args, f"hydra.sweep.dir={tmp_path / run}")
        assert out.returncode == 0, out.stderr[-2000:]
    rows = load(tmp_path / "a")
    assert set(rows["family"]) == {"softmax"} and len(rows) == 8
    status = rows.set_index(["variant", "mode", "logit_scale"])["status"]
    # exp / sum overflows at scale 200 (a score past ln(max) = 88.7 in fp32); the native op holds
    assert (status.xs("exp_over_sum", level="variant").xs(200.0, level="logit_scale") == "nonfinite").all()
    assert (status.xs("torch_softmax", level="variant") == "ok").all()
    assert rows["time_median_s"].notna().all() and rows["err_vs_native"].notna().any()

    report = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path / "a"), "--out", str(tmp_path / "report")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report" / "index.html").read_text()
    assert "exp_over_sum" in html and "nonfinite" in html

    compared = subprocess.run(
        [
            sys.executable,
            "scripts/compare.py",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--gate",
            "accuracy",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0, compared.stdout[-2000:] + compared.stderr[-2000:]
    assert "no regression (8 rows compared" in compared.stdout
