"""The float64 reference against autograd through F.cross_entropy, in float64."""

import pytest
import torch
import torch.nn.functional as F

from harness.config import Point
from harness.inputs import make_inputs
from harness.reference import reference


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("scale", [0.5, 30.0])
def test_reference_matches_autograd(kind, scale):
    inputs = make_inputs(Point(7, 53, "fp16", scale, "cpu", kind, seed=3))
    z = inputs.logits.double().requires_grad_()
    t = inputs.targets if kind == "hard" else inputs.targets.double()
    loss = F.cross_entropy(z, t)
    (grad,) = torch.autograd.grad(loss, z)
    ref = reference(inputs.logits, inputs.targets, kind)
    assert ref.loss == pytest.approx(loss.item(), rel=1e-13)
    torch.testing.assert_close(ref.grad, grad, rtol=1e-12, atol=1e-15)


def test_reference_keeps_unnormalised_target_rows():
    """F.cross_entropy does not renormalise probability rows: neither may the reference."""
    z = torch.randn(4, 9, dtype=torch.float64)
    t = torch.rand(4, 9, dtype=torch.float64)  # rows sum to ~4.5, as in PyTorch's own tests
    ref = reference(z, t, "soft")
    assert ref.loss == pytest.approx(F.cross_entropy(z, t).item(), rel=1e-13)


def test_inputs_are_the_rounded_draw():
    """Logits are scale * N(0,1) in float64 rounded once to the dtype; the same draw for every
    scale, so the failure boundary in scale is that of one stretched draw."""
    a = make_inputs(Point(3, 11, "bf16", 1.0, "cpu", "soft", seed=5))
    b = make_inputs(Point(3, 11, "bf16", 8.0, "cpu", "soft", seed=5))
    assert a.logits.dtype == torch.bfloat16 and a.targets.dtype == torch.bfloat16
    torch.testing.assert_close(b.logits_unrounded, 8.0 * a.logits_unrounded)
    assert torch.equal(a.logits, a.logits_unrounded.to(torch.bfloat16))
    torch.testing.assert_close(a.targets_unrounded.sum(1), torch.ones(3, dtype=torch.float64))
    c = make_inputs(Point(3, 11, "bf16", 1.0, "cpu", "hard", seed=5))
    assert torch.equal(c.logits, a.logits)          # the target kind does not change the logits
    assert c.targets.dtype == torch.int64 and int(c.targets.max()) < 11
