"""Every registered variant against the float64 reference, and the notebook bugs' closed forms.

Parametrized over the registry: a new variant is tested here with no edit to this file.
"""

import pytest
import torch
import torch.nn.functional as F

from harness.config import SettingError
from harness.cross_entropy import make_call, variants
from harness.cross_entropy.accuracy import grad_rel_err
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import reference
from harness.cross_entropy.tolerance import tolerance
from harness.cross_entropy.variants import REGISTRY
from harness.loss.errors import rel_err

CPU_VARIANTS = [v for v in REGISTRY.values() if "cpu" in v.devices]
CORRECT = [v for v in CPU_VARIANTS if not v.expected_wrong]


def _cases():
    for v in CORRECT:
        for kind in ("soft", "hard"):
            if v.runs_on(kind, "cpu"):
                for dtype in ("fp64", "fp32"):
                    yield pytest.param(v, kind, dtype, id=f"{v.name}-{kind}-{dtype}")


@pytest.mark.parametrize("variant,kind,dtype", list(_cases()))
def test_correct_variants_match_float64(variant, kind, dtype):
    # C=37 is not a power of two (no lucky reduction tree); scale 3 keeps every variant,
    # naive ones included, far from its overflow and underflow edges.
    point = Point(
        batch_size=8, num_classes=37, dtype=dtype, logit_scale=3.0, device="cpu", targets=kind, seed=1
    )
    inputs = make_inputs(point)
    ref = reference(inputs.logits, inputs.targets, kind)
    targets = inputs.for_variant(variant.wants_one_hot(kind))
    loss, grad = make_call(variant.fn, inputs.logits, targets, "fwd_bwd")()
    tol = tolerance(ref, dtype)
    assert rel_err(loss.item(), ref.loss) <= tol.loss
    assert grad_rel_err(grad, ref) <= tol.grad


def assert_closed_form(variant) -> None:
    """A variant wrong on purpose computes exactly its declared closed form (float64, several
    shapes and scales), and that is not the cross-entropy."""
    g = torch.Generator().manual_seed(7)
    for b, c, scale in ((3, 5, 1.0), (6, 64, 4.0), (4, 1000, 10.0)):
        z = scale * torch.randn(b, c, dtype=torch.float64, generator=g)
        if "soft" in variant.targets:
            t = torch.randn(b, c, dtype=torch.float64, generator=g).softmax(1)
        else:
            t = torch.randint(c, (b,), generator=g)
        got, closed = variant.fn(z, t), variant.closed_form(z, t)
        torch.testing.assert_close(got, closed, rtol=1e-12, atol=1e-12)
        assert (got - F.cross_entropy(z, t)).abs() > 1e-3, "a wrong variant that equals the loss"


@pytest.mark.parametrize(
    "variant", [pytest.param(v, id=v.name) for v in REGISTRY.values() if v.expected_wrong]
)
def test_wrong_variants_compute_their_declared_closed_form(variant):
    assert_closed_form(variant)


def _shifted_zy(z, t):
    """zy_b = sum_c t_bc (z_bc - max_c z_bc), float64."""
    y = z - z.max(dim=1, keepdim=True).values
    return (t * y).sum(dim=1)


@pytest.mark.parametrize("num_classes", [5, 64, 1000])
def test_broadcast_bug_equals_its_closed_form(num_classes):
    """seed_lse_labels_broadcast = CE - (C-1) * mean_b(zy_b) for any targets (README, Numerics §1)."""
    g = torch.Generator().manual_seed(num_classes)
    z = 4 * torch.randn(6, num_classes, dtype=torch.float64, generator=g)
    for t in (
        torch.randn(6, num_classes, dtype=torch.float64, generator=g).softmax(1),
        torch.rand(6, num_classes, dtype=torch.float64, generator=g),
    ):
        got = REGISTRY["seed_lse_labels_broadcast"].fn(z, t)
        closed = F.cross_entropy(z, t) - (num_classes - 1) * _shifted_zy(z, t).mean()
        torch.testing.assert_close(got, closed, rtol=1e-12, atol=1e-12)
        assert (got - F.cross_entropy(z, t)).abs() > 1e-3  # and it is not CE


def test_lse_zy_bug_equals_its_closed_form_on_unnormalised_targets():
    """seed_lse_zy = CE + mean_b((1 - T_b) * lse_b): PyTorch's own probability-target test
    inputs (U[0,1) rows, README, Numerics §1) expose it; normalised rows hide it. lse_b is the
    notebook's own, of the max-shifted logits: log sum_c exp(z_bc - max_c z_bc)."""
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(5, 20, dtype=torch.float64, generator=g)
    t = torch.rand(5, 20, dtype=torch.float64, generator=g)
    lse = torch.logsumexp(z, dim=1) - z.max(dim=1).values
    closed = F.cross_entropy(z, t) + ((1 - t.sum(1)) * lse).mean()
    got = REGISTRY["seed_lse_zy"].fn(z, t)
    torch.testing.assert_close(got, closed, rtol=1e-12, atol=1e-12)
    assert (got - F.cross_entropy(z, t)).abs() > 1e-2
    # The gradient is wrong as well: it is the gradient of the closed form, not of CE.
    zg = z.clone().requires_grad_()
    (g_bug,) = torch.autograd.grad(REGISTRY["seed_lse_zy"].fn(zg, t), zg)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(zg, t), zg)
    assert (g_bug - g_ce).abs().max() > 1e-3


def test_registry_entries_are_complete():
    assert list(REGISTRY) == variants.names()
    for v in REGISTRY.values():
        assert v.targets <= {"soft", "hard"} and v.targets, v.name
        assert v.description, f"{v.name} needs a description"
    assert REGISTRY["seed_lse_labels_broadcast"].expected_wrong
    for name in (
        "softmax_log",
        "seed_lse_zy",
        "seed_labels_logsoftmax",
        "seed_lse_labels",
        "seed_lse_labels_broadcast",
        "naive_exp",
        "torch_cross_entropy",
        "torch_log_softmax_nll",
    ):
        assert name in REGISTRY


def test_unknown_variant_lists_the_registered_ones():
    with pytest.raises(SettingError) as err:
        variants.get("softmax_logg")
    assert "softmax_logg" in str(err.value) and "torch_cross_entropy" in str(err.value)


def test_import_path_variant_and_alias():
    v = variants.get("tests.fault_variants:correct")
    assert v.name == "tests.fault_variants:correct" and v.user
    aliased = variants.get("mine@tests.fault_variants:correct")
    assert aliased.name == "mine" and aliased.targets == {"soft", "hard"}
    for bad in ("tests.no_such_module:f", "tests.fault_variants:no_such_function"):
        with pytest.raises(SettingError):
            variants.get(bad)


def test_soft_only_variants_get_one_hot_rows_for_hard_targets():
    inputs = make_inputs(Point(4, 6, "fp32", 1.0, "cpu", "hard", seed=0))
    rows = inputs.for_variant(REGISTRY["softmax_log"].wants_one_hot("hard"))
    assert rows.shape == (4, 6) and rows.dtype == torch.float32
    assert torch.equal(rows.argmax(1), inputs.targets) and torch.equal(rows.sum(1), torch.ones(4))
    assert not REGISTRY["torch_cross_entropy"].wants_one_hot("hard")
    assert not REGISTRY["torch_log_softmax_nll"].runs_on("soft", "cpu")
