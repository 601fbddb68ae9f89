"""Accuracy bookkeeping: the native op's own errors (which the tolerance table rests on), the
tolerance's conditioning term, and the status each error implies."""

import itertools

import pytest
import torch

from harness.config import Point
from harness.dtypes import DTYPES, edges, tolerance, unit_roundoff
from harness.inputs import make_inputs
from harness.measure.accuracy import assess, grad_rel_err, rel_err
from harness.reference import Reference, reference
from harness.runner import make_call
from harness.variants import REGISTRY

# Points of the smoke and cpu sweeps' kind: C from tiny to a vocabulary slice, scales to 100.
POINTS = list(itertools.product(["fp16", "bf16", "fp32"], [10, 1000, 8192], [1.0, 10.0, 100.0], ["soft", "hard"]))


@pytest.mark.parametrize("dtype,num_classes,scale,kind", POINTS)
def test_native_errors_stay_within_ten_u(dtype, num_classes, scale, kind):
    """The basis of TOLERANCE_IN_U: F.cross_entropy (CPU) stays within 10u on loss and gradient
    against float64 on the same rounded inputs, so 16u/64u flags only real excess."""
    inputs = make_inputs(Point(32, num_classes, dtype, scale, "cpu", kind, seed=0))
    ref = reference(inputs.logits, inputs.targets, kind)
    loss, grad = make_call(REGISTRY["torch_cross_entropy"].fn, inputs.logits, inputs.targets, "fwd_bwd")()
    u = unit_roundoff(DTYPES[dtype])
    assert rel_err(loss.item(), ref.loss) < 10 * u
    assert grad_rel_err(grad, ref) < 10 * u


def test_tolerance_grows_with_the_spread_only_at_compute_precision():
    assert tolerance("fp16") == 16 * 2.0**-11
    assert tolerance("fp32", spread=640.0) == pytest.approx(64 * 2.0**-24 + 2 * 640 * 2.0**-24)
    # a bf16 computation never passes as fp32's: the spread term is fp32's u, not bf16's
    assert tolerance("bf16", spread=640.0) < 16 * 2.0**-8 * 1.01
    assert tolerance("fp64", spread=640.0) == pytest.approx(64 * 2.0**-53 + 2 * 640 * 2.0**-53)


def _ref(loss=2.0, spread=1.0):
    return Reference(loss=loss, grad=torch.ones(2, 3, dtype=torch.float64), spread=spread)


def test_status_follows_the_errors():
    ref = _ref()
    grad_ok = torch.ones(2, 3)
    assert assess(torch.tensor(2.0), grad_ok, ref, "fp32").status == "ok"
    assert assess(torch.tensor(2.0 * (1 + 1e-4)), grad_ok, ref, "fp32").status == "inaccurate"
    assert assess(torch.tensor(2.0), grad_ok * (1 + 1e-4), ref, "fp32").status == "inaccurate"
    assert assess(torch.tensor(2.0 * (1 + 1e-4)), None, ref, "fp16").status == "ok"       # within 16u of fp16
    nan_grad = grad_ok.clone()
    nan_grad[0, 0] = float("nan")
    acc = assess(torch.tensor(float("inf")), nan_grad, ref, "fp32")
    assert acc.status == "nonfinite" and acc.nan_count == 1 and acc.inf_count == 1


def test_fp64_edges_derive_from_finfo():
    e = edges(torch.float64)
    assert e.log_min_subnormal == pytest.approx(-745.13, abs=0.01)
    assert e.log_max == pytest.approx(709.78, abs=0.01)
    e16 = edges(torch.float16)
    assert torch.exp(torch.tensor(e16.log_max + 0.01, dtype=torch.float16)).isinf()
