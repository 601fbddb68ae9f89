"""The float64 reference against autograd through F.cross_entropy, in float64."""

import pytest
import torch
import torch.nn.functional as F

from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import reference


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
    (za, ta), (zb, _) = a.draw.whole(), b.draw.whole()
    torch.testing.assert_close(zb, 8.0 * za)
    assert torch.equal(a.logits, za.to(torch.bfloat16))
    assert torch.equal(a.targets, ta.to(torch.bfloat16))
    torch.testing.assert_close(ta.sum(1), torch.ones(3, dtype=torch.float64))
    c = make_inputs(Point(3, 11, "bf16", 1.0, "cpu", "hard", seed=5))
    assert torch.equal(c.logits, a.logits)  # the target kind does not change the logits
    assert c.targets.dtype == torch.int64 and int(c.targets.max()) < 11


# --- exact to float64: mpmath at 60 digits ------------------------------------------------

from tests import adversarial  # noqa: E402

CASES = adversarial.cases()


def test_the_adversarial_set_covers_what_it_claims():
    names = " ".join(c.name for c in CASES)
    for part in (
        "C=2 ",
        "C=3 ",
        "C=10 ",
        "C=1000 ",
        "margin=0 ",
        "margin=800 ",
        "tied",
        "all equal",
        "scale=0.001",
        "scale=10000",
        "fp16",
        "bf16",
        "fp32",
        "fp64",
        "sum 1-3u",
        "sum 1+3u",
    ):
        assert part in names + " ", part
    assert len(CASES) >= 300


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_is_exact_to_float64(case):
    """Goal of the reference: relative error <= 1e-13 in the loss and the gradient (norm-wise)."""
    ref = reference(case.logits, case.targets, case.kind)
    loss_err, grad_err = adversarial.errors(case, ref.loss, ref.grad)
    assert loss_err <= 1e-13 and grad_err <= 1e-13, (loss_err, grad_err)


def test_the_textbook_formula_fails_where_the_reference_holds():
    """The check can fail: F.cross_entropy in float64 (lse - z_y, p_y - 1) is off by 100% on a
    confident prediction that the reference gets right."""
    case = next(c for c in CASES if c.name == "fp64 C=2 margin=100 hard")
    z = case.logits.double().requires_grad_()
    loss = F.cross_entropy(z, case.targets)
    (grad,) = torch.autograd.grad(loss, z)
    loss_err, grad_err = adversarial.errors(case, loss.item(), grad)
    assert loss_err > 0.5 and grad_err > 0.5


@pytest.mark.parametrize("b,c,scale,kind,seed", [(2, 2, 100.0, "hard", 38), (1, 2, 1000.0, "soft", 0)])
def test_the_reported_points_are_exact(b, c, scale, kind, seed):
    """The two points where the old reference was 18% (hard) and 3.9e-13 (soft) off."""
    inputs = make_inputs(Point(b, c, "fp64", scale, "cpu", kind, seed=seed))
    case = adversarial.Case("reported", inputs.logits, inputs.targets, kind)
    ref = reference(inputs.logits, inputs.targets, kind)
    loss_err, grad_err = adversarial.errors(case, ref.loss, ref.grad)
    assert loss_err <= 1e-13 and grad_err <= 1e-13, (ref.loss, loss_err, grad_err)


def test_no_finite_reference_is_said_not_computed():
    """fp16 logits at scale 1e5 round to +-inf: no float64 answer exists for them."""
    inputs = make_inputs(Point(4, 10, "fp16", 1e5, "cpu", "hard", seed=0))
    ref = reference(inputs.logits, inputs.targets, "hard")
    assert not ref.finite and "not finite in float16" in ref.missing


def test_plain_options_are_the_plain_loss_bit_for_bit():
    """reference(..., LossOptions()) is reference(...): the options add nothing when off, and
    the plain result says what it reduced by (B) and what each row's loss is."""
    from harness.loss.options import LossOptions

    for case in CASES[::5]:
        plain = reference(case.logits, case.targets, case.kind)
        for opts in (LossOptions(), LossOptions(ignore_index=-1, reduction="mean")):
            ref = reference(case.logits, case.targets, case.kind, opts)
            assert torch.equal(ref.grad, plain.grad) and torch.equal(ref.losses, plain.losses)
            for f in ("loss", "loss_magnitude", "grad_log_p", "grad_magnitude", "grad_subnormal"):
                assert getattr(ref, f) == getattr(plain, f), f
        b = case.logits.shape[0]
        assert plain.denominator == b and plain.losses.shape == (b,)
        assert plain.loss == pytest.approx(plain.losses.sum().item() / b, rel=1e-15)


def test_a_common_offset_is_added_after_the_scale_and_rounded_once():
    plain = make_inputs(Point(3, 11, "fp32", 2.0, "cpu", "hard", seed=5))
    shifted = make_inputs(Point(3, 11, "fp32", 2.0, "cpu", "hard", seed=5, logit_offset=1e4))
    (z, _), (zs, _) = plain.draw.whole(), shifted.draw.whole()
    assert torch.equal(zs, z + 1e4)  # the same draw, then the offset, in float64
    assert torch.equal(shifted.logits, zs.to(torch.float32)) and torch.equal(shifted.targets, plain.targets)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("offset", [-3e4, 1e4])
def test_the_reference_is_exact_on_offset_logits(kind, offset):
    # the offset logits as the variants receive them (fp32: an ulp of 2^-10 at 1e4), against
    # mpmath: the reference subtracts the row max, so no digit of the loss is lost to the offset
    inputs = make_inputs(Point(4, 9, "fp32", 3.0, "cpu", kind, seed=2, logit_offset=offset))
    case = adversarial.Case("offset", inputs.logits, inputs.targets, kind)
    ref = reference(inputs.logits, inputs.targets, kind)
    loss_err, grad_err = adversarial.errors(case, ref.loss, ref.grad)
    assert loss_err <= 1e-13 and grad_err <= 1e-13, (loss_err, grad_err)


def test_masked_logits_have_probability_zero_as_torch_has_them():
    import math

    z = torch.tensor([[0.0, -math.inf, 1.0]], dtype=torch.float64)
    assert reference(z, torch.tensor([0]), "hard").loss == pytest.approx(1.3132616875182228, rel=1e-15)
    g = torch.Generator().manual_seed(4)
    z = 3 * torch.randn(6, 40, dtype=torch.float64, generator=g)
    y = torch.randint(40, (6,), generator=g)
    mask = torch.rand(6, 40, generator=g) < 0.8
    mask[torch.arange(6), y] = False
    z = z.masked_fill(mask, -math.inf)
    for reduction in ("mean", "sum", "none"):
        from harness.loss.options import LossOptions

        o = LossOptions(z_loss=1e-2, reduction=reduction)
        ref = reference(z, y, "hard", o)
        x = z.clone().requires_grad_()
        rows = F.cross_entropy(x, y, reduction="none") + 1e-2 * torch.logsumexp(x, dim=1).square()
        want = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
        (grad,) = torch.autograd.grad(want, x, torch.ones_like(want))
        got = ref.losses if reduction == "none" else torch.tensor(ref.loss, dtype=torch.float64)
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(ref.grad, grad, rtol=1e-12, atol=1e-16)
        assert (
            (ref.grad[mask] == 0).all()
            and math.isfinite(ref.loss_magnitude)
            and math.isfinite(ref.grad_magnitude)
        )


def test_no_finite_answer_on_masked_logits_says_why():
    import math

    z = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, -math.inf, -math.inf]], dtype=torch.float32)
    assert "every logit is -inf" in reference(z, torch.tensor([0, 1]), "hard").missing
    assert "a target's logit is -inf" in reference(z[:1], torch.tensor([1]), "hard").missing


@pytest.mark.parametrize("logits", ["normal", "zipf"])
def test_a_masked_draw_masks_whole_classes_per_row_never_the_target(logits):
    plain = make_inputs(Point(8, 50, "fp32", 2.0, "cpu", "hard", seed=3, logits=logits))
    masked = make_inputs(Point(8, 50, "fp32", 2.0, "cpu", "hard", seed=3, logits=logits, mask_fraction=0.9))
    inf = torch.isneginf(masked.logits)
    assert (inf.sum(dim=1) == 45).all()  # round(0.9 * 50) per row
    assert not inf.gather(1, masked.targets[:, None]).any()
    assert torch.equal(masked.logits[~inf], plain.logits[~inf])  # the rest is the plain draw
    if logits == "normal":
        assert torch.equal(masked.targets, plain.targets)  # uniform targets: the same draw


def test_a_chosen_confidence_gives_every_target_that_probability():
    plain = make_inputs(Point(8, 100, "fp64", 2.0, "cpu", "hard", seed=1))
    sure = make_inputs(Point(8, 100, "fp64", 2.0, "cpu", "hard", seed=1, target_confidence=0.999))
    p = sure.logits.softmax(dim=1).gather(1, sure.targets[:, None])[:, 0]
    torch.testing.assert_close(p, torch.full_like(p, 0.999), rtol=1e-14, atol=0)
    assert torch.equal(sure.targets, plain.targets)  # only the target logits moved
    assert ((sure.logits != plain.logits).sum(dim=1) == 1).all()


def test_a_padded_vocabulary_appends_masked_columns_to_the_same_draw():
    plain = make_inputs(Point(6, 1001, "bf16", 2.0, "cpu", "hard", seed=2, class_weights="seeded"))
    padded = make_inputs(
        Point(6, 1001, "bf16", 2.0, "cpu", "hard", seed=2, class_weights="seeded", pad_vocab_to=64)
    )
    assert padded.logits.shape == (6, 1024) and padded.draw.point.width == 1024
    assert (
        torch.equal(padded.logits[:, :1001], plain.logits) and torch.isneginf(padded.logits[:, 1001:]).all()
    )
    assert torch.equal(padded.targets, plain.targets) and int(padded.targets.max()) < 1001
    assert torch.equal(padded.weight[:1001], plain.weight) and (padded.weight[1001:] == 0).all()


def test_the_largest_finite_size_is_the_masked_rows_formula():
    # The conditioning's max |z| over finite logits, from the row's max and min (no [R, C] pass):
    # what the masked form `where(isneginf(z), 0, |z|).amax` gives, bit for bit, with and
    # without -inf classes, and where the largest size is a negative logit.
    from harness.cross_entropy.reference import _largest_finite_size

    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 257, dtype=torch.float64, generator=g) * 40
    z[1] -= 500  # every logit negative: the size is the min's
    z[2, 5] = -7e3  # one very negative logit
    z[3, ::4] = float("-inf")  # masked classes: excluded
    for rows in (z[:3], z):  # no -inf at all; some rows masked
        a = rows.amax(dim=1, keepdim=True)
        want = torch.where(torch.isneginf(rows), 0.0, rows.abs()).amax(dim=1, keepdim=True)
        assert torch.equal(_largest_finite_size(rows, a), want)
    assert _largest_finite_size(z[2:3], z[2:3].amax(dim=1, keepdim=True)).item() == 7e3


def test_the_subnormal_floor_is_skipped_only_where_no_entry_is_below_the_smallest_normal():
    from harness.cross_entropy.reference import _subnormal_floor

    f32 = torch.finfo(torch.float32)
    gb = torch.tensor([[1e-3, 2 * f32.tiny], [0.5, 1.0]], dtype=torch.float64)
    assert _subnormal_floor(gb, f32) is None  # every entry normal in float32
    gb[1, 0] = f32.tiny / 4  # one subnormal entry: its own size, capped at half the spacing
    floor = _subnormal_floor(gb, f32)
    assert floor is not None and floor[1, 0].item() == min(f32.tiny / 4, f32.smallest_normal * f32.eps / 2)
    assert floor.count_nonzero().item() == 1
