"""The real CLI, end to end, as a subprocess: sweeps compose, smoke writes the rows it should,
resume recomputes exactly what is missing, faults become rows, bad settings stop at once."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode

import harness.app  # noqa: F401  (registers the config schema)
from harness.app import CONF_DIR
from harness.cross_entropy.variants import resolve
from harness.results import SCHEMA, load

from ..conftest import run_cli, smoke_run_dir

SWEEPS = sorted(p.stem for p in (Path(CONF_DIR) / "sweep").glob("*.yaml"))


def _compose(sweep: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_and_names_its_command(sweep):
    cfg = _compose(sweep)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.params, "a sweep file must set hydra.sweeper.params"
    comments = [
        line
        for line in (Path(CONF_DIR) / "sweep" / f"{sweep}.yaml").read_text().splitlines()
        if line.startswith("#") and "@package" not in line
    ]
    assert comments[0].startswith(f"# python -m harness +sweep={sweep}")


def _expected_rows(sweep: str) -> int:
    """Rows a sweep must write: per point, every variant that supports it, in two modes."""
    cfg = _compose(sweep)
    axes = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    total = 0
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        targets, device = point.get("targets", cfg.targets), point.get("device", cfg.device)
        chosen = resolve(list(cfg.variants), targets, device, list(cfg.exclude_variants))
        # the smoke sweep is the plain loss: variants that only compose options sit it out
        total += 2 * len([v for v in chosen if cfg.variants or not v.plain_equivalent])
    return total


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The session's smoke run (tests/conftest.py), and what it printed."""
    out = smoke_run_dir(tmp_path_factory)
    proc = SimpleNamespace(stdout=(out / "console.out").read_text(), stderr=(out / "console.err").read_text())
    return out, proc


def test_smoke_writes_every_row_with_the_schema(smoke):
    out, proc = smoke
    files = sorted(out.rglob("rows.parquet"))
    assert len(files) == math.prod(
        len(str(v).split(",")) for v in _compose("smoke").hydra.sweeper.params.values()
    )
    for f in files:
        assert pq.read_schema(f).remove_metadata().equals(SCHEMA), f
    rows = load(out)
    assert len(rows) == _expected_rows("smoke")
    assert "24/24 points written" in proc.stdout
    assert "[24/24, 0 left" in proc.stdout + proc.stderr  # progress, readable without a TTY


def test_smoke_fills_every_column_of_a_measured_row(smoke):
    rows = load(smoke[0])
    ok = rows[(rows.status == "ok") & (rows["mode"] == "fwd_bwd")]
    assert len(ok) > 0
    always = [
        "loss",
        "loss_ref",
        "loss_rel_err",
        "grad_rel_err",
        "nan_count",
        "inf_count",
        "time_median_s",
        "time_iqr_s",
        "time_min_s",
        "reps",
        "peak_mem_bytes",
        "bytes_moved",
        "gbps",
        "run_id",
        "sweep",
        "timestamp",
        "git_commit",
        "torch_version",
        "python_version",
        "device_name",
        "num_threads",
        "harness_version",
        "loss_rel_err_total",
        "err_vs_native",
        "device_copy_gbps",
        "pct_of_floor",
    ]
    assert ok[always].notna().all().all(), ok[always].isna().sum()[lambda s: s > 0]
    assert (ok.reps == ok.time_samples_s.map(len)).all()
    assert (ok.sweep == "smoke").all() and ok.run_id.nunique() == 1


def test_naive_exp_breaks_in_fp16_where_the_native_op_does_not(smoke):
    rows = load(smoke[0])
    at = rows[(rows.dtype == "fp16") & (rows.logit_scale == 100) & (rows.num_classes == 1000)]
    naive = at[at.variant == "naive_exp"]
    native = at[at.variant == "torch_cross_entropy"]
    assert len(naive) and (naive.status == "nonfinite").all()
    assert len(native) and (native.status == "ok").all()


def test_resume_recomputes_exactly_the_missing_point(smoke, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke[0], run)
    files = sorted(run.rglob("rows.parquet"))
    victim = files[5]
    before = {f: f.stat().st_mtime_ns for f in files if f != victim}
    n_victim = pq.read_metadata(victim).num_rows
    victim.unlink()
    proc = run_cli("+sweep=smoke", f"hydra.sweep.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert victim.exists() and pq.read_metadata(victim).num_rows == n_victim
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())  # nothing else rewritten
    assert f"({len(files) - 1} resumed" in proc.stdout
    rows = load(run)
    assert len(rows) == len(load(smoke[0]))
    assert not rows.duplicated(
        ["variant", "targets", "num_classes", "dtype", "logit_scale", "mode", "seed"]
    ).any()


def test_faulty_variants_become_rows_and_the_rest_still_runs(tmp_path):
    out = tmp_path / "run"
    variants = ",".join(
        f"tests.fault_variants:{n}" for n in ("raises", "not_scalar", "detached", "out_of_memory")
    )
    proc = run_cli(
        f"variants=[{variants},torch_cross_entropy]",
        "timing.enabled=false",
        f"hydra.run.dir={out}",
        "num_classes=10",
        "batch_size=4",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = load(out).set_index(["variant", "mode"])
    status = rows.status.to_dict()
    for mode in ("fwd", "fwd_bwd"):
        assert status[("tests.fault_variants:raises", mode)] == "error"
        assert status[("tests.fault_variants:not_scalar", mode)] == "error"
        assert status[("tests.fault_variants:out_of_memory", mode)] == "oom"
        assert status[("torch_cross_entropy", mode)] == "ok"
    assert status[("tests.fault_variants:detached", "fwd_bwd")] == "error"
    assert "always fails" in rows.loc[("tests.fault_variants:raises", "fwd"), "message"]
    assert "shape [4]" in rows.loc[("tests.fault_variants:not_scalar", "fwd"), "message"]
    assert rows.time_median_s.isna().all()  # accuracy-only: timing off


def test_bad_setting_in_a_sweep_stops_before_the_sweep_dir_exists(tmp_path):
    out = tmp_path / "never"
    proc = run_cli("-m", "batch_size=8,0", "timing.enabled=false", f"hydra.sweep.dir={out}")
    assert proc.returncode != 0 and "batch_size=0 is not allowed" in proc.stderr
    assert not out.exists()
