"""The linear family's bug catalogue (tests/linear_bugs.py) through the harness: each bug flagged
on the column it breaks, the columns it leaves right left alone, and where the tolerance does
not flag a bug, the measured figure and why.

The other direction (no correct variant flagged on a grid of options x dtypes) is
tests/linear_cross_entropy/test_linear_ce_options.py's."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ..conftest import job_config, run_job

COLUMNS = {
    "loss": "loss_rel_err",
    "dH": "grad_hidden_rel_err",
    "dW": "grad_weight_rel_err",
    "db": "grad_bias_rel_err",
}


def _bug_row(name: str, dtype: str, registered: bool = False, **settings) -> pd.Series:
    """The fwd_bwd row of tests.linear_bugs:NAME at N = 256, D = 16, V = 4396 (two chunks of
    chunked_linear's width), logit_scale 2, a quarter of the rows ignored, unless overridden."""
    base = {
        "family": "linear_cross_entropy",
        "batch_size": 256,
        "hidden_size": 16,
        "num_classes": 4396,
        "logit_scale": 2.0,
        "ignore_fraction": 0.25,
        "dtype": dtype,
    }
    variant = name if registered else f"{name}@tests.linear_bugs:{name}"
    cfg = job_config(variants=[variant], **{**base, **settings})
    rows = pd.DataFrame(run_job(cfg))
    return rows[rows["mode"] == "fwd_bwd"].iloc[0]


def _ratio(row: pd.Series, part: str) -> float:
    tol = row.loss_tolerance if part == "loss" else row.grad_tolerance
    return row[COLUMNS[part]] / tol


# (bug, settings, dtypes, the columns it breaks, the columns it must leave within the bound)
CATALOGUE = [
    ("mean_over_all_rows", {}, ("bf16", "fp32", "fp64"), ("loss", "dH", "dW"), ()),
    ("ignored_rows_in_dh", {}, ("bf16", "fp32", "fp64"), ("dH",), ("loss", "dW")),
    ("ignored_rows_in_dw", {}, ("bf16", "fp32", "fp64"), ("dW",), ("loss", "dH")),
    ("bias_grad_zero", {"bias": True}, ("bf16", "fp32", "fp64"), ("db",), ("loss", "dH", "dW")),
    ("bias_grad_mean", {"bias": True}, ("bf16", "fp32", "fp64"), ("db",), ("loss", "dH", "dW")),
    # eps / V per row at the target: flagged in fp32 at an LLM-sized head too (dH 2.5x the bound
    # at V = 4396), by far at V = 64 (390x)
    ("smoothing_over_v_minus_1", {"label_smoothing": 0.1}, ("fp32", "fp64"), ("dH", "dW"), ()),
    (
        "smoothing_over_v_minus_1",
        {"label_smoothing": 0.1, "num_classes": 64},
        ("fp32", "fp64"),
        ("dH", "dW"),
        (),
    ),
    ("smoothing_on_ignored_rows", {"label_smoothing": 0.1}, ("fp32", "fp64"), ("loss", "dH", "dW"), ()),
    ("z_loss_of_max", {"z_loss": 1e-4}, ("fp32", "fp64"), ("loss", "dH", "dW"), ()),  # PaLM's coefficient
    ("z_loss_of_max", {"z_loss": 1e-2}, ("bf16",), ("loss", "dH", "dW"), ()),
    ("softcap_after_loss", {"softcap": 30.0}, ("bf16", "fp32", "fp64"), ("loss", "dH", "dW"), ()),
    ("last_chunk_missing", {"num_classes": 5000}, ("bf16", "fp32", "fp64"), ("dW",), ("loss", "dH")),
    # 256 chunks of 16 rows: the bf16 running sum of dW drifts linearly with the chunk count
    # (0.19x the bound at 16 chunks, 0.38x at 64, 0.68x at 128, 1.3x at 256, measured)
    ("dw_accumulated_in_bf16", {"batch_size": 4096}, ("bf16",), ("dW",), ("loss", "dH")),
    # caught because the runner's incoming gradient under reduction none is not all ones
    # (harness/loss/errors.py `upstream`): with ones this backward is exact
    ("dw_scaled_after_the_sum", {"reduction": "none"}, ("bf16", "fp32", "fp64"), ("dW",), ("loss", "dH")),
]


@pytest.mark.parametrize(
    "name, settings, dtype, broken, intact",
    [(n, s, d, b, i) for n, s, dtypes, b, i in CATALOGUE for d in dtypes],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_each_bug_is_flagged_on_the_column_it_breaks(name, settings, dtype, broken, intact):
    row = _bug_row(name, dtype, **settings)
    assert row.status == "inaccurate", row[["status", "message", *COLUMNS.values()]].to_dict()
    for part in broken:
        assert _ratio(row, part) > 1, (part, _ratio(row, part))
    for part in intact:
        assert _ratio(row, part) < 1, (part, _ratio(row, part))


def test_a_few_bf16_roundings_of_dw_are_not_a_bug():
    # 16 row chunks accumulated in bf16: dW sits at 0.19x the bound (measured), beside 0.13x for
    # `materialized`, whose bf16 dW is rounded once. A bf16 dW is rounded to bf16 anyway; a
    # handful more roundings is what any row-chunked kernel that returns it costs, and the fp32
    # running sum of the same kernel is ok at every size (below). Past ~200 chunks it is flagged.
    row = _bug_row("dw_accumulated_in_bf16", "bf16")
    assert row.status == "ok" and 0.1 < _ratio(row, "dW") < 0.5, _ratio(row, "dW")
    fp32 = _bug_row("dw_accumulated_in_bf16", "fp32", batch_size=4096)
    assert fp32.status == "ok" and _ratio(fp32, "dW") < 0.1


def test_bugs_confined_to_one_class_or_to_the_ignored_rows_are_flagged_element_wise():
    # Within the norm-wise bound in bf16, each wrong in rows or classes of its own: the last
    # class's row of dW halved (0.13x the norm-wise bound, its class 0.5 off against 0.05 for
    # the careful variants), and the ignored rows' smoothing gradient left in dH (0.98x the norm-wise
    # bound; an ignored row's dH must be 0, and its per-entry bound is)
    for name, settings, where in (
        ("last_class_dw_halved", {"num_classes": 32000, "hidden_size": 128}, "class 31999 of dW"),
        ("smoothing_on_ignored_rows", {"label_smoothing": 0.1}, "of dH"),
    ):
        row = _bug_row(name, "bf16", **settings)
        assert row.status == "inaccurate" and row.grad_entry_ratio > 1.5, row[["status", "message"]]
        assert max(_ratio(row, p) for p in ("dH", "dW")) < 1 and where in row.message, row.message
        careful = _bug_row("materialized_composed", "bf16", registered=True, **settings)
        assert careful.status == "ok" and careful.grad_entry_ratio < 0.5
        assert row.grad_class_err > 8 * careful.grad_class_err or row.grad_entry_ratio == math.inf


@pytest.mark.parametrize("name", ["ignored_rows_in_dh", "ignored_rows_in_dw"])
def test_large_logits_do_not_hide_a_leak_of_the_ignored_rows(name):
    # bf16, scale 10, V = 32000: the bound that charged every entry the largest logit's
    # error (2 e_z zmax p_share) was 0.43 and passed both leaks (0.34-0.37); the correct
    # variants make 0.014 beside them. The per-entry bound (tolerance.py) sits between.
    settings = dict(num_classes=32000, hidden_size=128, logit_scale=10.0)
    row = _bug_row(name, "bf16", **settings)
    part = "dH" if name.endswith("dh") else "dW"
    assert row.status == "inaccurate" and _ratio(row, part) > 2, _ratio(row, part)
    correct = _bug_row("materialized", "bf16", registered=True, **settings)
    assert correct.status == "ok" and max(_ratio(correct, p) for p in ("dH", "dW")) < 0.25


# Where the bf16 bound hides a real bug, each within 8x the worst correct variant's error at the
# same point (the line the verdicts are held to: a bug 8x the careful variants' error is flagged).
# Strict: if the harness starts flagging one, or a bug's error grows past 8x, this fails and the
# list must be updated (and the README's figure with it).
BLIND_SPOTS = [
    # eps / V at the target is 0.16% of a row of dZ at V = 64: 0.11x the bound, 1.1x the worst
    # correct variant (1.0x at V = 4396)
    ("smoothing_over_v_minus_1", {"label_smoothing": 0.1, "num_classes": 64}),
    # PaLM's 1e-4 times lse^2 - max^2: 2% of the bf16 loss bound, 1.1x the worst correct
    # variant; flagged at z_loss = 1e-2
    ("z_loss_of_max", {"z_loss": 1e-4}),
]
CAREFUL = ["materialized_composed", "chunked_linear", "fused_linear"]  # every option, on a CPU


@pytest.mark.parametrize("name, settings", BLIND_SPOTS, ids=[n for n, _ in BLIND_SPOTS])
def test_the_bf16_bound_hides_these_option_bugs_only_below_8x_the_careful_error(name, settings):
    bug = _bug_row(name, "bf16", **settings)
    assert bug.status == "ok", bug[["status", "message"]]
    careful = [_bug_row(n, "bf16", registered=True, **settings) for n in CAREFUL]
    assert all(r.status == "ok" for r in careful)
    for part, column in COLUMNS.items():
        if part == "db":
            continue
        worst = max(r[column] for r in careful)
        assert bug[column] < 8 * worst, (part, bug[column], worst)
