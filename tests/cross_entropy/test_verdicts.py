"""Verdicts sound both ways: no correct implementation flagged, no plausible bug passed.

The grid and the catalogue are in tests/verdicts.py and tests/bug_variants.py;
`python scripts/verdict_audit.py` prints the same figures for the README.
"""

from __future__ import annotations

import pytest
import torch

from harness.cross_entropy.point import Point
from harness.cross_entropy.variants import REGISTRY, get
from tests import verdicts
from tests.bug_variants import CATALOGUE


@pytest.fixture(scope="module")
def grid():
    return verdicts.audit(verdicts.GRID)


def test_the_catalogue_holds_at_least_eight_bugs():
    assert len(CATALOGUE) >= 8


def test_no_correct_implementation_is_flagged_on_the_grid(grid):
    cols = [
        "variant",
        "mode",
        "num_classes",
        "dtype",
        "logit_scale",
        "targets",
        "status",
        "loss_rel_err",
        "loss_tolerance",
        "grad_rel_err",
        "grad_tolerance",
    ]
    assert grid.false_alarms.empty, grid.false_alarms[cols].to_string()
    assert (grid.rows[grid.rows["correct"]]["status"] == "ok").sum() == 2 * len(verdicts.CORRECT) * len(
        verdicts.GRID
    )


def test_every_bug_is_flagged_where_its_error_stands_clear(grid):
    cols = [
        "variant",
        "mode",
        "num_classes",
        "dtype",
        "logit_scale",
        "targets",
        "loss_rel_err",
        "worst_loss",
        "loss_tolerance",
        "grad_rel_err",
        "worst_grad",
        "grad_tolerance",
    ]
    assert grid.missed.empty, grid.missed[cols].to_string()


def test_every_bug_is_caught_somewhere(grid):
    """The catalogue means something only if each entry is wrong enough to be seen on the grid
    (the exp-sum one only in bf16, where it is a bug at all)."""
    rate = grid.flag_rate()
    assert (rate["flagged"] > 0).all(), rate.to_string()


def test_no_correct_implementation_is_flagged_on_the_sweeps():
    points = verdicts.sweep_points("smoke") + verdicts.sweep_points("cpu")
    assert len(points) == 24 + 48
    rows = verdicts.measure(points, [REGISTRY[n] for n in verdicts.CORRECT])
    bad = rows[rows["status"] != "ok"]
    assert bad.empty, bad[
        ["variant", "mode", "batch_size", "num_classes", "dtype", "logit_scale", "targets", "status"]
    ].to_string()


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e6])
def test_the_tolerance_does_not_grow_with_the_spread(scale):
    """A loss divided by C instead of B (94% wrong at B=64, C=1000) is flagged at every scale;
    the old tolerance (K u + 2 spread u) passed it at 1e6."""
    rows = verdicts.measure(
        [Point(64, 1000, "fp32", scale, "cpu", "hard", seed=0)],
        [get("divide_by_classes@tests.bug_variants:divide_by_classes")],
    )
    assert set(rows["status"]) == {"inaccurate"}
    assert (rows["loss_tolerance"] < 1e-5).all()


def test_bf16_tolerance_catches_a_six_percent_error():
    """16 u of bf16 (6.25%) used to pass a 6.1% wrong loss at B=64, C=68."""
    rows = verdicts.measure(
        [Point(64, 68, "bf16", 1.0, "cpu", "soft", seed=0)],
        [REGISTRY["torch_cross_entropy"], get("divide_by_classes@tests.bug_variants:divide_by_classes")],
    )
    by = rows.set_index(["variant", "mode"])["status"]
    assert by[("torch_cross_entropy", "fwd")] == "ok"
    assert by[("divide_by_classes", "fwd")] == "inaccurate"


def clamps(logits, targets):
    """A finite answer where the inputs have none: clamping inf logits."""
    return torch.nn.functional.cross_entropy(logits.clamp(-1e4, 1e4), targets)


clamps.harness_targets = {"soft", "hard"}


def test_no_reference_is_never_ok():
    """fp16 logits at scale 1e5 round to +-inf: a variant that still returns a finite number
    is not `ok`, it is `no_reference`, with the reason in its message."""
    rows = verdicts.measure(
        [Point(8, 10, "fp16", 1e5, "cpu", "hard", seed=0)],
        [get("clamps@tests.cross_entropy.test_verdicts:clamps"), REGISTRY["torch_cross_entropy"]],
    )
    assert set(rows["status"]) == {"no_reference"}
    assert rows["message"].str.contains("not finite in float16").all()
    assert rows["loss_rel_err"].isna().all()


class _WrongSign(torch.autograd.Function):
    """F.cross_entropy forward, and its gradient negated in the backward."""

    @staticmethod
    def forward(ctx, logits, targets):  # noqa: ANN001
        z = logits.detach().requires_grad_()
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(z, targets)
        ctx.save_for_backward(z, targets)
        ctx.loss = loss
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        z, _ = ctx.saved_tensors
        (g,) = torch.autograd.grad(ctx.loss, z, grad_out)
        return -g, None


def gradient_of_the_wrong_sign(logits, targets):
    return _WrongSign.apply(logits, targets)


gradient_of_the_wrong_sign.harness_targets = {"soft", "hard"}


def test_a_vacuous_bound_never_says_ok():
    # fp32 hard targets at scale 1e7, C=68: the gradient bound is about 4, so a gradient of the
    # wrong sign (error 2) is within it. Such rows are `unjudged` for every variant, the correct
    # one as well; the same bug at scale 1 is `inaccurate`, and the correct op there `ok`.
    from harness.loss.verdict import VACUOUS

    bug = get("wrong_sign@tests.cross_entropy.test_verdicts:gradient_of_the_wrong_sign")
    wide = verdicts.measure(
        [Point(64, 68, "fp32", 1e7, "cpu", "hard", seed=0)], [bug, REGISTRY["torch_cross_entropy"]]
    )
    bwd = wide[wide["mode"] == "fwd_bwd"]
    assert (bwd["grad_tolerance"] >= VACUOUS).all() and set(bwd["status"]) == {"unjudged"}, bwd
    assert "ok" not in set(wide.loc[wide["grad_tolerance"] >= VACUOUS, "status"])
    narrow = verdicts.measure(
        [Point(64, 68, "fp32", 1.0, "cpu", "hard", seed=0)], [bug, REGISTRY["torch_cross_entropy"]]
    )
    by = narrow[narrow["mode"] == "fwd_bwd"].set_index("variant")["status"]
    assert by["wrong_sign"] == "inaccurate" and by["torch_cross_entropy"] == "ok"
