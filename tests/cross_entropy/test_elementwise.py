"""Element-wise verdicts (harness/loss/errors.py Entrywise, the reference's per-entry bound):
the accumulator against a direct computation, the bound against the best a dtype can hold, and
the bugs of tests/local_bugs.py flagged wherever their element-wise error is 8x the careful
variants', with no careful variant flagged."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
import torch

from harness.cross_entropy.reference import reference
from harness.dtypes import DTYPES, unit_roundoff
from harness.loss.errors import Entrywise

from ..conftest import job_config, run_job
from ..local_bugs import CATALOGUE

CAREFUL = ["chunked", "online", "upcast_to_fp32@tests.local_bugs:upcast_to_fp32"]
BUGS = [f"{fn.__name__}@tests.local_bugs:{fn.__name__}" for fn in CATALOGUE]
LOCAL = ["grad_row_err", "grad_class_err", "grad_target_err"]


def test_the_accumulator_is_the_direct_computation():
    torch.manual_seed(0)
    b, c = 7, 5
    ref = torch.randn(b, c, dtype=torch.float64)
    bound = torch.rand(b, c, dtype=torch.float64) * 1e-3
    x = (ref + torch.randn(b, c, dtype=torch.float64) * 1e-4).float()
    targets = torch.tensor([0, 4, -1, 2, 2, 1, 3])
    acc = Entrywise((b, c), targets=targets)
    for rows in (slice(0, 3), slice(3, 7)):  # in blocks, as the comparison walk gives them
        acc.add(x[rows], ref[rows], bound[rows], rows)
    got = acc.result()
    err = x.double() - ref
    rows_err = (err.norm(dim=1) / ref.norm(dim=1)).max()
    cls_err = (err.norm(dim=0) / ref.norm(dim=0)).max()
    kept = targets >= 0
    at = (torch.arange(b)[kept], targets[kept])
    ratio = max(
        (err.norm(dim=1) / bound.norm(dim=1)).max(),
        (err.norm(dim=0) / bound.norm(dim=0)).max(),
        err[at].norm() / bound[at].norm(),
    )
    assert got["grad_row_err"] == pytest.approx(rows_err.item(), rel=1e-12)
    assert got["grad_class_err"] == pytest.approx(cls_err.item(), rel=1e-12)
    assert got["grad_target_err"] == pytest.approx((err[at].norm() / ref[at].norm()).item(), rel=1e-12)
    assert got["grad_entry_ratio"] == pytest.approx(ratio.item(), rel=1e-12)


def test_an_error_where_the_bound_is_zero_is_infinite_and_named():
    ref = torch.tensor([[0.5, -0.5], [0.0, 0.0]], dtype=torch.float64)  # row 1: ignored
    bound = torch.tensor([[1e-3, 1e-3], [0.0, 0.0]], dtype=torch.float64)
    acc = Entrywise((2, 2))
    acc.add(torch.tensor([[0.5, -0.5], [0.0, 1e-9]]), ref, bound, slice(0, 2))
    assert acc.result()["grad_entry_ratio"] == math.inf and acc.worst == "row 1"


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
def test_the_float64_gradient_rounded_once_is_within_its_bound(dtype, scale):
    """The best any kernel can return is float64's gradient rounded to the dtype: its per-entry
    error is at most u_d |g| (or half a subnormal spacing), which the bound holds for every
    entry, with K_ENTRY to spare."""
    torch.manual_seed(1)
    z = (torch.randn(16, 300) * scale).to(DTYPES[dtype])
    y = torch.randint(0, 300, (16,))
    ref = reference(z, y, "hard")
    g = ref.grad
    best = g.to(DTYPES[dtype]).double()
    assert ((best - g).abs() <= ref.gradient.kept_bound).all()
    assert ((best - g).abs() > 0.25 * unit_roundoff(DTYPES[dtype]) * g.abs()).any()  # not vacuous


def _grid_rows() -> pd.DataFrame:
    # B = 1 and 64, C = 68 and 1000 (and the bf16 C = 32000 at B = 64), as drawn and with
    # every target at p = 0.999: the confident rows where a rounding of p_y to the dtype shows
    points = [
        dict(batch_size=b, num_classes=c, dtype=d, logit_scale=s, **conf)
        for b, c, d, s, conf in itertools.product(
            (1, 64), (68, 1000), ("bf16", "fp16", "fp32"), (1.0, 10.0), ({}, {"target_confidence": 0.999})
        )
    ] + [dict(batch_size=64, num_classes=32000, dtype="bf16", logit_scale=1.0)]
    rows = []
    for p in points:
        cfg = job_config(targets="hard", variants=CAREFUL + BUGS, **p)
        rows += [{**r, "confident": "target_confidence" in p} for r in run_job(cfg)]
    df = pd.DataFrame(rows)
    return df[df["mode"] == "fwd_bwd"].copy()


@pytest.fixture(scope="module")
def grid():
    return _grid_rows()


def test_no_careful_variant_is_flagged(grid):
    careful = grid[grid["variant"].isin(["chunked", "online", "upcast_to_fp32"])]
    assert set(careful["status"]) == {"ok"}, careful[["variant", "dtype", "message"]].to_string()
    assert careful["grad_entry_ratio"].max() < 0.7  # 1/0.7 to spare, measured 0.50


def test_each_local_bug_is_flagged_wherever_it_stands_clear(grid):
    key = ["batch_size", "num_classes", "dtype", "logit_scale", "confident"]
    careful = grid[grid["variant"].isin(["chunked", "online", "upcast_to_fp32"])]
    worst = careful.groupby(key)[LOCAL].max().add_prefix("worst_")
    bugs = grid[~grid.index.isin(careful.index)].join(worst, on=key)
    u = bugs["dtype"].map(lambda d: unit_roundoff(DTYPES[d]))
    clear = False
    for col in LOCAL:
        clear = clear | (bugs[col] > (8 * bugs[f"worst_{col}"]).clip(lower=8 * u))
    flagged = bugs["status"].isin(["inaccurate", "nonfinite"])
    missed = bugs[clear & ~flagged]
    assert missed.empty, missed[["variant", *key, "grad_entry_ratio", *LOCAL]].to_string()
    # and each is seen: flagged somewhere, and at most points where it stands clear
    assert set(bugs.loc[flagged, "variant"]) == {fn.__name__ for fn in CATALOGUE}
    assert clear.sum() >= 0.5 * len(bugs)


def test_a_dropped_class_is_invisible_norm_wise_and_flagged_element_wise(grid):
    """The issue's example: the last class's gradient wrong at bf16, B = 64, C = 32000 is a tiny
    share of the norm-wise error; its column is 100% wrong."""
    row = grid[(grid["variant"] == "last_class_gradient_dropped") & (grid["num_classes"] == 32000)].iloc[0]
    assert row["grad_rel_err"] < 0.05 * row["grad_tolerance"]
    assert row["grad_class_err"] == pytest.approx(1.0)
    assert row["status"] == "inaccurate" and "class 31999" in row["message"]


def test_the_forward_has_no_element_wise_columns():
    rows = pd.DataFrame(run_job(job_config(batch_size=4, num_classes=10, variants=["chunked"])))
    fwd = rows[rows["mode"] == "fwd"]
    assert fwd[["grad_entry_ratio", *LOCAL]].isna().all().all()


@pytest.mark.parametrize("batch", [8, 64])
def test_one_confident_row_is_enough_to_flag_a_rounded_target_gradient(batch):
    """Liger-Kernel PR #1329 (tests/tracker_bugs.py) as drawn, with no confidence set: at bf16,
    C = 1000, logit scale 10 a few rows are confident, and the bug zeroes their target entries.
    Norm-wise its error is the fp32-then-cast control's (the batch hides those rows); element-wise
    it is flagged, and the control is not."""
    name = "target_gradient_rounded_before_subtracting"
    variants = [f"{name}@tests.tracker_bugs:{name}", CAREFUL[2]]
    cfg = job_config(batch_size=batch, num_classes=1000, dtype="bf16", logit_scale=10.0, variants=variants)
    rows = pd.DataFrame(run_job(cfg)).query("mode == 'fwd_bwd'").set_index("variant")
    bug, control = rows.loc[name], rows.loc["upcast_to_fp32"]
    assert bug["grad_rel_err"] < 2 * control["grad_rel_err"] < bug["grad_tolerance"]
    assert bug["status"] == "inaccurate" and control["status"] == "ok"
    assert bug["grad_row_err"] > 0.5 > 100 * control["grad_row_err"]


def test_a_differentiated_row_max_is_seen_at_the_maximum_s_class():
    """The notebook's formulas shift by the row max without detaching it, so the max's gradient
    entry is a cancelling sum of C terms in the input dtype (log1p_shifted detaches it): at
    bf16, B = 256, C = 4096 the class the message names holds a row's maximum, and is tens of
    percent off, while log1p_shifted is ok at the same point."""
    import re

    from harness.cross_entropy import make_inputs
    from harness.cross_entropy.point import point

    variants = ["seed_lse_zy", "log1p_shifted"]
    cfg = job_config(batch_size=256, num_classes=4096, dtype="bf16", variants=variants)
    rows = pd.DataFrame(run_job(cfg)).query("mode == 'fwd_bwd'").set_index("variant")
    assert rows.loc["log1p_shifted", "status"] == "ok"
    seed = rows.loc["seed_lse_zy"]
    assert seed["status"] == "inaccurate" and seed["grad_rel_err"] < seed["grad_tolerance"]
    assert seed["grad_class_err"] > 0.1
    cls = int(re.search(r"class (\d+) is", seed["message"]).group(1))
    assert cls in set(make_inputs(point(cfg)).logits.argmax(dim=1).tolist())
