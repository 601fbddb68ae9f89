"""The runner differentiates a scalar loss with an incoming gradient of 2, never 1: a backward
that ignores its grad_output (Megatron-LM #1750 / TransformerEngine PR #2139: the test skipped
the backward kernel when the grad output was 1) is right at 1 and caught at 2, by exactly a
half. Correct variants give exactly twice their unit gradient, so no error column moves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from harness.cross_entropy import FAMILY, make_call
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.linear_cross_entropy import FAMILY as LINEAR
from harness.linear_cross_entropy.point import Point as LinearPoint
from harness.loss.errors import SCALAR_UPSTREAM
from harness.registry import Variant
from harness.runner import run_point

OFF = SimpleNamespace(enabled=False)


class _UnitBackward(torch.autograd.Function):
    """F.cross_entropy's mean loss whose backward drops grad_output (returns the unit gradient)."""

    @staticmethod
    def forward(ctx, logits, targets):  # noqa: ANN001, ANN205
        ctx.save_for_backward(logits, targets)
        return F.cross_entropy(logits, targets)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        logits, targets = ctx.saved_tensors
        p = logits.softmax(dim=1)
        p[torch.arange(len(targets)), targets] -= 1
        return p / len(targets), None


class _SquaredBackward(_UnitBackward):
    """The same, multiplying by grad_output twice (a scale applied in the kernel and again after)."""

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        grad, _ = _UnitBackward.backward(ctx, grad_output)
        return grad * grad_output * grad_output, None


HARD = frozenset({"hard"})
IGNORES = Variant("ignores_grad_output", lambda z, t: _UnitBackward.apply(z, t), targets=HARD)
SQUARES = Variant("squares_grad_output", lambda z, t: _SquaredBackward.apply(z, t), targets=HARD)


def _rows(point, variant, family=FAMILY):
    rows = run_point(point, [variant], OFF, OFF, {})
    return {r["mode"]: r for r in rows}


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
def test_a_backward_that_ignores_its_incoming_gradient_is_off_by_exactly_a_half(dtype):
    point = Point(16, 50, dtype, 2.0, "cpu", "hard", seed=0)
    rows = _rows(point, IGNORES)
    assert rows["fwd"]["status"] == "ok"  # the loss is right
    assert rows["fwd_bwd"]["status"] == "inaccurate"
    # ||g - 2 g|| / ||2 g|| = 1/2, to the variant's own rounding
    assert rows["fwd_bwd"]["grad_rel_err"] == pytest.approx(0.5, rel=1e-5)
    # Squared: ||4 g - 2 g|| / ||2 g|| = 1.
    assert _rows(point, SQUARES)["fwd_bwd"]["grad_rel_err"] == pytest.approx(1.0, rel=1e-5)
    # What a test with an incoming gradient of 1 would have said: nothing wrong.
    inputs = make_inputs(point)
    for variant in (IGNORES, SQUARES, FAMILY.registry["torch_cross_entropy"]):
        unit = make_call(variant.fn, inputs.logits, inputs.targets, "fwd_bwd")()[1]
        native = make_call(F.cross_entropy, inputs.logits, inputs.targets, "fwd_bwd")()[1]
        torch.testing.assert_close(unit, native)


CORRECT = ["torch_cross_entropy", "chunked", "online", "log1p_shifted", "torch_composed"]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", CORRECT)
def test_correct_variants_give_twice_their_unit_gradient(name, reduction):
    point = Point(8, 40, "fp32", 3.0, "cpu", "hard", seed=1, reduction=reduction, label_smoothing=0.1)
    variant = FAMILY.registry[name]
    if FAMILY.unsupported(variant, point):  # a variant of the plain loss: its mean
        point = Point(8, 40, "fp32", 3.0, "cpu", "hard", seed=1)
        assert not FAMILY.unsupported(variant, point)
    inputs = make_inputs(point)
    feed = FAMILY.feed(inputs, variant, point)
    _, runner = FAMILY.call(variant.fn, feed, "fwd_bwd")()
    _, unit = make_call(variant.fn, inputs.logits, inputs.targets, "fwd_bwd", **feed.kwargs)()
    torch.testing.assert_close(runner, SCALAR_UPSTREAM * unit, rtol=4 * 2**-24, atol=0)
    rows = _rows(point, variant)
    assert rows["fwd_bwd"]["status"] == "ok", rows["fwd_bwd"]["message"]


def _linear_ignoring_dw(hidden, weight, targets):
    """Linear + cross-entropy whose weight gradient drops grad_output (dH keeps it)."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, w):  # noqa: ANN001, ANN205
            ctx.save_for_backward(h, w)
            return F.cross_entropy(h @ w.T, targets)

        @staticmethod
        def backward(ctx, grad_output):  # noqa: ANN001, ANN205
            h, w = ctx.saved_tensors
            p = (h @ w.T).softmax(dim=1)
            p[torch.arange(len(targets)), targets] -= 1
            dz = p / len(targets)
            return (dz * grad_output) @ w, dz.T @ h

    return Fn.apply(hidden, weight)


def test_the_linear_family_catches_a_weight_gradient_that_ignores_it(monkeypatch):
    import harness.linear_cross_entropy as linear

    judged = []  # the gradients judged element-wise
    entry_errors = linear._entry_errors
    monkeypatch.setattr(linear, "_entry_errors", lambda *a: judged.append(1) or entry_errors(*a))
    point = LinearPoint(16, 8, 60, "fp64", 1.0, "cpu", 0)
    variant = Variant("dw_ignores_grad_output", _linear_ignoring_dw, targets=HARD)
    rows = {r["mode"]: r for r in run_point(point, [variant], OFF, OFF, {})}
    variant_judged = len(judged)
    judged.clear()
    bwd = rows["fwd_bwd"]
    assert rows["fwd"]["status"] == "ok" and bwd["status"] == "inaccurate"
    assert bwd["grad_hidden_rel_err"] < 1e-12
    assert bwd["grad_weight_rel_err"] == pytest.approx(0.5, rel=1e-9)
    native = {r["mode"]: r for r in run_point(point, [LINEAR.registry[LINEAR.native]], OFF, OFF, {})}
    assert native["fwd_bwd"]["status"] == "ok"
    # each point judges its own variant's gradients element-wise, and no more: the native op's
    # untimed call at the first is judged norm-wise alone
    assert variant_judged == len(judged) > 0
    # err_vs_native from the native op's untimed call (judged without the total reference)
    u = 2.0**-53
    assert bwd["grad_err_vs_native"] == pytest.approx(
        0.5 / max(native["fwd_bwd"]["grad_rel_err"], u), rel=1e-9
    )


def test_a_backward_that_scales_its_saved_gradient_in_place_is_flagged_on_the_second_backward():
    # One backward of each is right (incoming gradient 2: the in-place product is still g * 2);
    # the runner's second backward over the same graph (retain_graph=True) returns g * 4 from the
    # in-place one, whose fwd_bwd row is then inaccurate and says why; the control stays ok.
    import pandas as pd

    from ..conftest import job_config, run_job

    rows = pd.DataFrame(
        run_job(
            job_config(
                batch_size=16, num_classes=50, dtype="fp32", targets="hard",
                variants=[
                    "gradient_scaled_in_place@tests.call_bugs:gradient_scaled_in_place",
                    "gradient_scaled@tests.call_bugs:gradient_scaled",
                    "seen@tests.call_bugs:gradient_scaled_in_place_seen",
                ],
            )
        )
    )  # fmt: skip
    by = rows.set_index(["variant", "mode"])
    assert by.loc[("gradient_scaled", "fwd_bwd"), "status"] == "ok"
    bug = by.loc[("gradient_scaled_in_place", "fwd_bwd")]
    assert bug["status"] == "inaccurate" and "a second backward (retain_graph=True)" in bug["message"]
    assert bug["grad_rel_err"] < 1e-6  # the first backward, as the row's columns hold it, was right
    assert by.loc[("gradient_scaled_in_place", "fwd"), "status"] == "ok"
    # the write autograd sees: the second backward raises, a refusal the row keeps as a note
    seen = by.loc[("seen", "fwd_bwd")]
    assert seen["status"] == "ok" and "a second backward (retain_graph=True) is refused" in seen["message"]


def test_the_second_backwards_fingerprint_goes_block_by_block(monkeypatch):
    # two float64 sums a gradient, block by block (a whole float64 copy and its square were 8x a
    # bf16 gradient): equal for the same gradient, moved by one entry changed by one ulp
    from harness.loss import errors
    from harness.runner import _fingerprint

    g = torch.randn(7, 30, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    whole = _fingerprint((g, g[:3]))
    monkeypatch.setattr(errors, "_BLOCK_ELEMENTS", 2 * 30)
    blocked = _fingerprint((g, g[:3]))
    assert blocked == pytest.approx(whole, rel=1e-15) and _fingerprint((g.clone(), g[:3])) == blocked
    h = g.clone()
    h.view(torch.int16)[6, 29] += 1  # the next bf16 away from 0
    assert _fingerprint((h, g[:3])) != blocked
