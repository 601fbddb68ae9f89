"""The fused linear + cross-entropy family (harness/linear_cross_entropy/), end to end at tiny
sizes: the chunked float64 reference against float64 autograd, every CPU variant against it,
the memory each form holds, the CLI's rows, and bad settings. The bug catalogue is
tests/linear_cross_entropy/test_linear_bugs.py; the loss options and the bias,
tests/linear_cross_entropy/test_linear_ce_options.py."""

from __future__ import annotations

import importlib
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from harness import job
from harness.config import SettingError
from harness.linear_cross_entropy import FAMILY, make_call
from harness.linear_cross_entropy.inputs import make_inputs
from harness.linear_cross_entropy.point import point
from harness.linear_cross_entropy.variants import REGISTRY
from harness.linear_cross_entropy.variants.chunked import CHUNK
from harness.loss.options import LossOptions
from harness.measure.memory import peak_bytes

from ..conftest import job_config, run_cli, run_job

# the module (the package exports its function of the same name)
reference_module = importlib.import_module("harness.linear_cross_entropy.reference")


def _cfg(**settings) -> object:
    base = {
        "family": "linear_cross_entropy",
        "batch_size": 24,
        "hidden_size": 16,
        "num_classes": CHUNK + 300,  # two chunks of chunked_linear, the second a partial one
        "targets": "soft",  # cross-entropy's setting: not read by this family
        "ignore_fraction": 0.25,
        "ignore_index": -100,
    }
    return job_config(**{**base, **settings})


def _run(**settings) -> pd.DataFrame:
    cfg = _cfg(**settings)
    return pd.DataFrame(run_job(cfg))


def test_the_chunked_reference_is_float64_autograd(monkeypatch):
    monkeypatch.setattr(reference_module, "BLOCK_ELEMENTS", 6 * 8)  # chunks of 8 classes: 5 of them
    pt = point(
        _cfg(batch_size=6, hidden_size=5, num_classes=37, dtype="fp64", ignore_fraction=0.34, logit_scale=3.0)
    )
    inp = make_inputs(pt)
    assert (inp.targets == -100).sum() == 2
    ref = reference_module.reference(inp.hidden, inp.weight, inp.targets, LossOptions(ignore_index=-100))
    h = inp.hidden.clone().requires_grad_()
    w = inp.weight.clone().requires_grad_()
    loss = F.cross_entropy(F.linear(h, w), inp.targets, ignore_index=-100)
    dh, dw = torch.autograd.grad(loss, (h, w))
    assert math.isclose(ref.loss, loss.item(), rel_tol=1e-13)
    torch.testing.assert_close(ref.grad_hidden, dh, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ref.grad_weight, dw, rtol=1e-12, atol=1e-15)
    assert ref.kept == 4 and ref.finite


def test_the_logits_have_the_scale_asked_for():
    pt = point(_cfg(batch_size=64, hidden_size=256, num_classes=2000, logit_scale=3.0, dtype="fp64"))
    inp = make_inputs(pt)
    assert abs((inp.hidden @ inp.weight.T).std().item() - 3.0) < 0.1


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
def test_every_cpu_variant_matches_float64(dtype):
    names = [n for n, v in REGISTRY.items() if "cpu" in v.devices and n != "linear_compile"]
    rows = _run(dtype=dtype, variants=names)
    assert set(rows.variant) == set(names)
    assert (rows.status == "ok").all(), rows[rows.status != "ok"][["variant", "mode", "status", "message"]]
    bwd = rows[rows["mode"] == "fwd_bwd"]
    assert bwd.grad_hidden_rel_err.notna().all() and bwd.grad_weight_rel_err.notna().all()
    assert (bwd.grad_rel_err == bwd[["grad_hidden_rel_err", "grad_weight_rel_err"]].max(axis=1)).all()
    worst = 1e-12 if dtype == "fp64" else 1e-5
    assert (rows.loss_rel_err < worst).all() and (bwd.grad_rel_err < worst).all()
    assert (rows.hidden_size == 16).all() and (rows.targets == "hard").all()


def test_the_compiled_form_matches_float64():
    rows = _run(variants=["linear_compile"], num_classes=300)
    assert (rows.status == "ok").all(), rows[["mode", "status", "message"]]
    assert rows.compile_time_s.notna().all()


def test_chunked_linear_holds_one_chunk_of_logits():
    n, d, v = 64, 16, 3 * CHUNK + 100
    inp = make_inputs(point(_cfg(batch_size=n, hidden_size=d, num_classes=v, ignore_fraction=0.0)))
    chunk_bytes = n * CHUNK * 4  # one [N, CHUNK] fp32 block
    outputs = 4 * (n * d + v * d)  # dH and dW
    chunked = peak_bytes(
        make_call(REGISTRY["chunked_linear"].fn, inp.hidden, inp.weight, inp.targets, "fwd_bwd"),
        torch.device("cpu"),
    )
    full = peak_bytes(
        make_call(REGISTRY["materialized"].fn, inp.hidden, inp.weight, inp.targets, "fwd_bwd"),
        torch.device("cpu"),
    )
    assert outputs <= chunked <= outputs + chunk_bytes + 4 * n * d + 64 * n, chunked - outputs
    assert full >= n * v * 4 > 3 * chunk_bytes  # the whole logits (and their gradient) at once
    assert chunked < full / 2


def test_bad_settings_stop_with_one_line():
    for settings, words in [
        ({"hidden_size": 0}, "hidden_size=0 is not allowed"),
        ({"num_classes": 1}, "num_classes=1 is not allowed"),
        ({"family": "linear"}, "family='linear' is not allowed: use cross_entropy or linear_cross_entropy"),
        ({"logits": "zipf"}, "logits='zipf' is not read by family=linear_cross_entropy"),
        ({"label_smoothing": 1.5}, "label_smoothing=1.5 is not allowed"),
        ({"class_weights": [1.0, 2.0]}, "class_weights has 2 values for num_classes=4396"),
        ({"ignore_index": 3, "ignore_fraction": 0.0}, "ignore_index=3 is inside the classes 0..4395"),
        ({"variants": ["torch_cross_entropy"]}, "unknown variant 'torch_cross_entropy'"),
    ]:
        with pytest.raises(SettingError, match=words) as err:
            job.check(_cfg(**settings))
        assert "\n" not in str(err.value)


def test_a_cross_entropy_row_keeps_its_columns():
    from harness.cross_entropy import FAMILY as CE

    rows = _run(
        family="cross_entropy",
        hidden_size=256,  # left at its default: another family's setting is refused, not ignored
        num_classes=50,
        ignore_fraction=0.0,
        variants=["torch_cross_entropy"],
    )
    assert (rows.hidden_size == 0).all()  # another family's setting: not this family's column
    assert "grad_hidden_rel_err" not in rows or rows.grad_hidden_rel_err.isna().all()
    assert CE.native == "torch_cross_entropy" and FAMILY.native == "materialized"


def test_the_cli_writes_the_gradient_error_columns(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        "+sweep=linear_cpu",
        "batch_size=16",
        "hidden_size=8",
        "num_classes=300,500",
        "dtype=fp32",
        "timing.enabled=false",
        "variants=[materialized,chunked_linear]",
        f"hydra.sweep.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(out.rglob("rows.parquet"))
    assert len(files) == 2
    rows = pd.concat([pq.read_table(f).to_pandas() for f in files])
    assert set(rows.num_classes) == {300, 500} and (rows.hidden_size == 8).all()
    assert (rows.status == "ok").all(), rows[["variant", "mode", "status", "message"]]
    bwd = rows[rows["mode"] == "fwd_bwd"]
    assert bwd[["grad_hidden_rel_err", "grad_weight_rel_err", "grad_rel_err"]].notna().all().all()
    assert rows.peak_mem_bytes.notna().all()
    assert not (out / "_theory.json").exists()  # cross-entropy's theory is not written for these rows


def test_the_cli_refuses_a_bad_hidden_size(tmp_path):
    proc = run_cli("family=linear_cross_entropy", "hidden_size=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("harness: hidden_size=0 is not allowed")
    assert not (tmp_path / "run").exists()


def test_the_report_has_a_linear_section_with_the_memory_floor(tmp_path):
    from harness.report import build, data
    from harness.report.linear import linear_table
    from harness.results import load, write_rows

    measured = _run(
        variants=["materialized", "chunked_linear"], num_classes=CHUNK + 300, memory={"enabled": True}
    )
    write_rows(measured.to_dict("records"), tmp_path / "point", "key")
    rows = load(tmp_path)  # as a report reads them: every column of the schema
    table = linear_table(rows, data.variant_order(rows["variant"].unique()))
    assert set(table["variant"]) == {"materialized", "chunked_linear"}
    # memory over dH + dW: the materialised form holds the [N, V] logits on top, the chunked one a chunk
    ratio = {r["variant"]: float(r["÷ (dH + dW)"].rstrip("×")) for _, r in table.iterrows()}
    assert ratio["chunked_linear"] < ratio["materialized"]
    ids = [s.anchor for s in build.sections(tmp_path, rows, tmp_path)]
    assert "linear" in ids and "options" not in ids


def test_the_first_familys_sections_read_only_its_own_rows(tmp_path):
    """A linear row's C is a vocabulary behind a matmul: it must never be ranked in the first
    family's tables. A linear-only run has only the summary and its own section; a mixed run's
    first-family tables name no linear variant, while the statuses count every row."""
    from harness.report import build, tables
    from harness.results import load, write_rows

    timed = {
        "enabled": True,
        "warmup": 0,
        "min_reps": 3,
        "min_time_s": 0.0,
        "max_reps": 3,
        "allow_parallel": False,
    }
    linear = _run(variants=["materialized", "fused_linear"], num_classes=300, timing=timed)
    write_rows(linear.to_dict("records"), tmp_path / "linear" / "point", "key")
    only = build.sections(tmp_path / "linear", load(tmp_path / "linear"), tmp_path / "linear")
    assert [s.anchor for s in only] == ["summary", "linear"]

    ce_cfg = job_config(variants=["torch_cross_entropy"], num_classes=300, timing=timed)
    ce = run_job(ce_cfg)
    # This test is about which family a table reads, not about the host: a busy machine marks
    # rows contended and the fastest table then declines to rank them (tested in test_report).
    ce = [{**row, "contended": False} for row in ce]
    write_rows(ce, tmp_path / "mixed" / "ce", "key")
    write_rows(linear.to_dict("records"), tmp_path / "mixed" / "linear", "key")
    rows = load(tmp_path / "mixed")
    sections = {s.anchor: s for s in build.sections(tmp_path / "mixed", rows, tmp_path / "mixed")}
    assert {"summary", "accuracy", "speed", "linear"} <= set(sections)
    fastest = next(b for b in sections["summary"].blocks if b.title.startswith("Fastest")).body
    assert set(fastest["fastest ok variant"]) == {"torch_cross_entropy"}
    accuracy = [b for b in sections["accuracy"].blocks if b.kind == "table"][0].body
    assert "fused_linear" not in accuracy.to_string()
    counts = tables.status_counts(rows, sorted(rows["variant"].unique()))
    assert "fused_linear" in counts.to_string()  # the statuses count both families
