"""The theory module: each prediction checked against what it claims, not against itself."""

from __future__ import annotations

import math

import pytest
import torch

from harness.cross_entropy.theory import (
    THEORY_FILE,
    breaking_variants,
    dtype_edges_table,
    load_theory,
    log_overflow_edge,
    median_max_normal,
    predicted_scale,
    theory_table,
    write_theory,
)
from harness.dtypes import DTYPES


@pytest.mark.parametrize("c", [1, 10, 1000, 50257, 128256, 10**7])
def test_median_max_normal_is_the_median_of_the_max(c):
    # P(max of C normals <= m) = Phi(m)^C; at the median it is 1/2.
    m = torch.tensor(median_max_normal(c), dtype=torch.float64)
    assert math.isclose(float(torch.special.ndtr(m)) ** c, 0.5, rel_tol=1e-9)


def test_median_max_normal_agrees_with_monte_carlo():
    g = torch.Generator().manual_seed(0)
    maxima = torch.randn(4001, 1000, dtype=torch.float64, generator=g).amax(dim=1)
    assert abs(maxima.median().item() - median_max_normal(1000)) < 0.02


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_overflow_edge_is_where_rounding_gives_inf(dtype):
    dt = DTYPES[dtype]
    edge = log_overflow_edge(dt)
    if dt == torch.float64:  # max + ulp/2 is past fp64 itself; in logs it is ln max to 1e-16
        assert math.isclose(edge, math.log(torch.finfo(dt).max), rel_tol=1e-15)
        return
    below, at = math.exp(edge) * (1 - 1e-6), math.exp(edge) * (1 + 1e-9)
    assert math.isfinite(torch.tensor(below, dtype=torch.float64).to(dt).item())
    assert math.isinf(torch.tensor(at, dtype=torch.float64).to(dt).item())


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_underflow_gap_is_where_rounding_gives_zero(dtype):
    dt = DTYPES[dtype]
    gap = dtype_edges_table([dtype]).underflow_gap.item()
    assert torch.tensor(math.exp(-gap + 1e-3), dtype=torch.float64).to(dt).item() > 0
    assert torch.tensor(math.exp(-gap - 1e-3), dtype=torch.float64).to(dt).item() == 0


def test_fp16_sum_of_65520_ones_overflows_at_scale_zero():
    # the prediction ...
    assert predicted_scale("sum_overflow", "fp16", 65520) == 0
    assert predicted_scale("sum_overflow", "fp16", 65519) > 0
    # ... against a sum accumulated in fp32 and rounded to fp16 once (the model's assumption)
    once = lambda c: torch.zeros(1, c, dtype=torch.float16).exp().float().sum(dim=1).half().item()  # noqa: E731
    assert math.isinf(once(65520)) and math.isfinite(once(65519))
    # torch's own fp16 sum on CPU rounds partial sums to fp16 as well, so it can only overflow
    # as early or earlier (measured: from C = 65,519, README Findings)
    assert math.isinf(torch.zeros(1, 65520, dtype=torch.float16).exp().sum(dim=1).item())


def _row_median_failing_scale(dtype: torch.dtype, c: int, fails) -> float:
    """Monte Carlo: the median over 101 rows of the first scale (3% grid from 1 to 100,
    which holds every fp16/fp32 edge at C = 1000) at which `fails`."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(101, c, dtype=torch.float64, generator=g)
    first = torch.full((101,), math.inf, dtype=torch.float64)
    for s in torch.logspace(0, 2, 157, dtype=torch.float64).tolist():  # 10^(2/156) = 1.03
        bad = fails((s * z).to(dtype)) & torch.isinf(first)
        first[bad] = s
    return first.median().item()


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_predicted_scales_match_simulated_rows(dtype):
    dt = DTYPES[dtype]
    sum_inf = lambda x: torch.isinf(x.exp().sum(dim=1))  # noqa: E731
    p_zero = lambda x: (torch.softmax(x.float(), dim=1).to(dt) == 0).any(dim=1)  # noqa: E731
    for mechanism, fails in (("sum_overflow", sum_inf), ("prob_underflow", p_zero)):
        predicted = predicted_scale(mechanism, dtype, 1000)
        measured = _row_median_failing_scale(dt, 1000, fails)
        assert abs(math.log(measured / predicted)) < 0.1, (mechanism, measured, predicted)


def test_theory_table_shape_and_order():
    df = theory_table(["fp16", "fp32"], [1000, 128256])
    assert list(df.columns[:5]) == ["dtype", "num_classes", "variant", "mechanism", "predicted_scale"]
    # per (dtype, C): one row per mechanism each registered variant declares
    assert len(df) == 2 * 2 * sum(len(m) for m in breaking_variants().values())
    assert set(breaking_variants()) >= {"naive_exp", "naive_exp_gather", "softmax_log"}
    fp32 = (
        df[(df.dtype == "fp32") & (df.num_classes == 1000)]
        .set_index(["variant", "mechanism"])
        .predicted_scale
    )
    # README, Numerics §3: in fp32 the product form breaks by underflow before its sum overflows,
    # the gather form by the overflow; the overflow is the same sum for both.
    assert fp32["naive_exp", "prob_underflow"] < fp32["naive_exp", "sum_overflow"]
    assert fp32["naive_exp_gather", "sum_overflow"] < fp32["naive_exp_gather", "target_prob_underflow"]
    assert fp32["naive_exp", "sum_overflow"] == fp32["naive_exp_gather", "sum_overflow"]
    assert fp32["softmax_log", "prob_underflow"] == fp32["naive_exp", "prob_underflow"]


def test_batch_prediction_is_earlier_than_row_prediction():
    df = theory_table(["fp32"], [1000], batch_sizes=[1, 64])
    one = df[df.batch_size == 1].predicted_scale_batch.to_numpy()
    many = df[df.batch_size == 64].predicted_scale_batch.to_numpy()
    assert (one == df[df.batch_size == 1].predicted_scale.to_numpy()).all()
    assert (many < one).all()


def test_write_and_load_theory(tmp_path):
    import pandas as pd

    assert load_theory(tmp_path) is None
    rows = pd.DataFrame(
        {"dtype": ["fp32", "fp16", "fp32"], "num_classes": [10, 10, 1000], "batch_size": [4, 4, 4]}
    )
    write_theory(tmp_path, rows)
    assert (tmp_path / THEORY_FILE).is_file()
    loaded = load_theory(tmp_path)
    assert set(loaded.dtype) == {"fp16", "fp32"} and set(loaded.num_classes) == {10, 1000}
    assert loaded.batch_size.unique().tolist() == [4]
    assert loaded.predicted_scale.notna().all()
