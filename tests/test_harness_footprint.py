"""What judging a result costs the harness: block-by-block errors and finiteness checks that agree
with the whole-tensor formulas they replace, a total-error reference without the conditioning
nobody reads, and the unrounded draw dropped once its reference is made."""

from __future__ import annotations

import math

import pytest
import torch

from harness.cross_entropy import FAMILY, loss_options
from harness.cross_entropy.accuracy import grad_rel_err, row_scale
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import reference
from harness.loss import errors
from harness.loss.errors import nonfinite_counts, norm_rel_err, upstream
from harness.loss.options import LossOptions

# 7 rows of 13: blocks of one row when the block is shrunk to 16 elements (a ragged last one too)
X = torch.randn(7, 13, generator=torch.Generator().manual_seed(0))
REF = X.double() + 1e-3 * torch.randn(7, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=[1 << 22, 16, 40], ids=["one block", "a row a block", "ragged blocks"])
def block(request, monkeypatch):
    monkeypatch.setattr(errors, "_BLOCK_ELEMENTS", request.param)


def test_the_blockwise_error_is_the_whole_norm(block):
    whole = (X.double() - REF).norm().item() / REF.norm().item()
    assert norm_rel_err(X, REF, REF.norm().item()) == pytest.approx(whole, rel=1e-14)
    s = upstream(7, REF)
    scaled = REF * s[:, None]
    whole = (X.double() - scaled).norm().item() / scaled.norm().item()
    assert norm_rel_err(X, REF, math.nan, s) == pytest.approx(whole, rel=1e-14)
    # an absolute error against a zero reference
    assert norm_rel_err(X, torch.zeros_like(REF), 0.0) == pytest.approx(X.double().norm().item(), rel=1e-14)


def test_nonfinite_counts_count_every_kind(block):
    t = X.clone()
    assert nonfinite_counts(t) == (0, 0)
    t[0, 0], t[3, 4], t[6, 12] = math.nan, math.inf, -math.inf  # inf + -inf: the sum is NaN
    assert nonfinite_counts(t) == (1, 2)
    assert nonfinite_counts(torch.tensor(math.inf)) == (0, 1)
    # finite float64 values whose sum overflows: counted in full, and none found
    assert nonfinite_counts(torch.full((7, 13), 1e308, dtype=torch.float64)) == (0, 0)
    assert nonfinite_counts(torch.arange(5)) == (0, 0)


@pytest.mark.parametrize(
    "kind,options",
    [
        ("soft", LossOptions()),
        ("hard", LossOptions(label_smoothing=0.1, z_loss=1e-3, softcap=5.0)),
        ("hard", LossOptions(reduction="none")),
    ],
)
def test_the_total_errors_reference_skips_only_the_conditioning(kind, options):
    point = Point(6, 50, "bf16", 3.0, "cpu", kind, seed=0)
    inputs = make_inputs(point)
    full = reference(inputs.logits_unrounded, inputs.targets_unrounded, kind, options)
    bare = reference(inputs.logits_unrounded, inputs.targets_unrounded, kind, options, conditioning=False)
    assert bare.loss == full.loss and torch.equal(bare.grad, full.grad)
    assert torch.equal(bare.losses, full.losses)
    assert math.isnan(bare.loss_magnitude) and math.isnan(bare.grad_magnitude)
    assert math.isfinite(full.loss_magnitude) and math.isfinite(full.grad_magnitude)


def test_the_unrounded_draw_is_dropped_once_its_reference_is_made():
    point = Point(8, 40, "fp16", 2.0, "cpu", "soft", seed=0)
    inputs = make_inputs(point)
    z64, t64 = inputs.logits_unrounded, inputs.targets_unrounded
    ref, total = FAMILY.references(point, inputs)
    assert inputs.logits_unrounded is None and inputs.targets_unrounded is None
    again = reference(z64, t64, "soft", loss_options(point, inputs), conditioning=False)
    assert total.loss == again.loss and torch.equal(total.grad, again.grad)
    assert ref.loss != total.loss  # the rounded inputs' problem is another one


def test_per_row_losses_are_judged_against_the_scaled_reference():
    point = Point(8, 40, "fp32", 2.0, "cpu", "hard", seed=0, reduction="none")
    inputs = make_inputs(point)
    ref = reference(inputs.logits, inputs.targets, "hard", LossOptions(reduction="none"))
    s = row_scale(ref, loss_dims=1)
    assert torch.equal(s, upstream(8, ref.grad))
    assert row_scale(ref, loss_dims=0) is None
    exact = ref.grad * s[:, None]
    assert grad_rel_err(exact.float(), ref, s) < 1e-7
    assert grad_rel_err(ref.grad.float(), ref, s) > 0.1  # unscaled: the bug of a sum before the scale


@pytest.mark.parametrize("dtype,size", [("fp32", 4), ("bf16", 2)])
def test_the_rows_say_what_the_harness_held(dtype, size):
    # 64 x 4096 logits (>= 1 MiB in fp32: fingerprinted, not copied). What the harness holds while
    # a variant runs: the logits and hard targets, two float64 references (gradient [B, C] and
    # per-row losses each), the guard's row and column sums of the logits and its copy of the
    # targets; the unrounded draw is gone.
    from types import SimpleNamespace

    from harness.cross_entropy.variants import REGISTRY
    from harness.measure import isolation
    from harness.runner import run_point

    b, c = 64, 4096
    off = SimpleNamespace(enabled=False)
    rows = run_point(
        Point(b, c, dtype, 1.0, "cpu", "hard", seed=0), [REGISTRY["torch_cross_entropy"]], off, off, {}
    )
    fingerprint = 8 * (b + c) if size * b * c >= isolation.COPY_BELOW_BYTES else size * b * c
    model = size * b * c + 8 * b + 2 * (8 * b * c + 8 * b) + fingerprint + 8 * b
    assert [r["harness_bytes"] for r in rows] == [model, model]
