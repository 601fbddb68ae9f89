"""The float64 reference with loss options (harness/loss/options.py): exact against mpmath
at 60 digits, PyTorch's semantics where PyTorch has the option, and the options' own checks."""

from __future__ import annotations

import itertools
import math

import mpmath
import pytest
import torch
import torch.nn.functional as F

from harness.cross_entropy.reference import reference
from harness.loss.options import LossOptions
from tests.adversarial import DIGITS

_TINY64 = torch.finfo(torch.float64).tiny
C = 6


def _weight(c: int = C) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return 0.25 + 2.0 * torch.rand(c, dtype=torch.float64, generator=g)


# --- the truth: the textbook formulas at 60 digits ------------------------------------------


def _digits(z: torch.Tensor, cap: float | None) -> int:
    """Enough working digits that 60 survive the textbook formula's cancellations: lse - z_c
    loses gap / ln 10 digits when the row max leads by `gap`; under a softcap, tanh(x) near +-1
    holds its information 2|x| / ln 10 digits down, and the capped gap is at most 2 cap."""
    z = z.double()
    z = z.masked_fill(torch.isneginf(z), 0.0)  # a masked class costs no digits
    top2 = z.topk(2, dim=1).values
    gap = float((top2[:, 0] - top2[:, 1]).max())
    extra = min(gap, 2 * cap) / math.log(10) if cap else gap / math.log(10)
    if cap:
        extra += 2 * float(z.abs().max()) / cap / math.log(10)
    return DIGITS + min(int(extra), 700) + int(math.log10(1 + float(z.abs().max()))) + 10


def truth(z: torch.Tensor, targets: torch.Tensor, kind: str, o: LossOptions):
    """(loss, per-row losses [B], gradient [B][C]) of the optioned loss on the exact float64
    values of the inputs, every option applied as written in options.py, in mpmath."""
    mp = mpmath.mpf
    b, c = z.shape
    with mpmath.workdps(_digits(z, o.softcap)):
        zz = [[mp(float(v)) for v in row] for row in z.double().tolist()]
        if o.softcap is not None:
            cap = mp(o.softcap)
            chain = [[1 / mpmath.cosh(v / cap) ** 2 for v in row] for row in zz]
            # a masked class (-inf) stays masked under the cap
            zz = [[v if v == -mpmath.inf else cap * mpmath.tanh(v / cap) for v in row] for row in zz]
        else:
            chain = [[mp(1)] * c for _ in range(b)]
        w = [mp(float(v)) for v in o.weight.tolist()] if o.weight is not None else [mp(1)] * c
        eps = mp(o.label_smoothing)
        if kind == "hard":
            ys = targets.tolist()
            keep = [y != o.ignore_index for y in ys]
            q = [
                [((1 - eps) * w[y] if j == y else 0) + eps / c * w[j] for j in range(c)]
                if kp
                else [mp(0)] * c
                for y, kp in zip(ys, keep)
            ]
        else:
            keep = [True] * b
            t = [[mp(float(v)) for v in row] for row in targets.double().tolist()]
            q = [[w[j] * ((1 - eps) * row[j] + eps / c) for j in range(c)] for row in t]
        n = sum(keep)
        if o.reduction == "mean":
            d_ce = mpmath.fsum(w[y] for y, kp in zip(ys, keep) if kp) if kind == "hard" else mp(n)
            d_z = mp(n)
        else:
            d_ce = d_z = mp(1)
        zl = mp(o.z_loss)
        ce, zrows, grad = [], [], []
        for zr, qr, cr, kp in zip(zz, q, chain, keep):
            a = max(zr)
            e = [mpmath.exp(v - a) for v in zr]
            s = mpmath.fsum(e)
            lse = a + mpmath.log(s)
            total = mpmath.fsum(qr)
            ce.append(mpmath.fsum(qc * (lse - zc) for qc, zc in zip(qr, zr) if qc))  # no 0 * inf
            zrows.append(zl * lse**2 if kp else mp(0))
            zg = 2 * zl * lse / d_z if kp else mp(0)
            grad.append([((total * ec / s - qc) / d_ce + zg * ec / s) * ch for ec, qc, ch in zip(e, qr, cr)])
        losses = [x + y for x, y in zip(ce, zrows)]
        if o.reduction == "mean":
            loss = mpmath.fsum(ce) / d_ce + mpmath.fsum(zrows) / d_z
        elif o.reduction == "sum":
            loss = mpmath.fsum(losses)
        else:
            loss = mpmath.fsum(losses) / b
        return loss, losses, grad


def _rel(values, true) -> float:
    """Norm-wise relative error of float64 values against mpmath ones, with float64's smallest
    normal as the floor of the norm (no float64 holds a smaller value to relative precision)."""
    diff = mpmath.sqrt(mpmath.fsum((mpmath.mpf(v) - t) ** 2 for v, t in zip(values, true)))
    norm = mpmath.sqrt(mpmath.fsum(t**2 for t in true))
    return float(diff / max(norm, _TINY64))


def errors(z, targets, kind, o: LossOptions) -> tuple[float, float, float]:
    """(loss, per-row losses, gradient) relative errors of the reference against the truth."""
    ref = reference(z, targets, kind, o)
    assert ref.finite, ref.missing
    loss, losses, grad = truth(z, targets, kind, o)
    with mpmath.workdps(_digits(z, o.softcap)):
        return (
            _rel([ref.loss], [loss]),
            _rel(ref.losses.tolist(), losses),
            _rel(ref.grad.flatten().tolist(), [v for row in grad for v in row]),
        )


# --- the points ---------------------------------------------------------------------------


def _points():
    """(name, logits, targets, kind): small batches where float64 loses digits if written
    naively, each with hard targets (some rows ignored in every other point) and soft ones."""
    g = torch.Generator().manual_seed(7)
    out = []
    f16, bf16, f32, f64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
    for i, (name, dtype, scale, margin) in enumerate(
        [
            ("scale=1 fp32", f32, 1.0, None),
            ("scale=100 fp64", f64, 100.0, None),
            ("scale=5 fp16", f16, 5.0, None),
            ("scale=30 bf16", bf16, 30.0, None),
            ("margin=40 fp64 offset=1000", f64, 1.0, 40.0),
            ("margin=300 fp32", f32, 1.0, 300.0),
        ]
    ):
        b = 4
        z = scale * torch.randn(b, C, dtype=torch.float64, generator=g)
        y = torch.randint(C, (b,), generator=g)
        if margin is not None:  # the target holds the row max by `margin`
            y = z.argmax(dim=1)
            z[torch.arange(b), y] = z.max(dim=1).values + margin
            if "offset" in name:
                z += 1000.0
        z = z.to(dtype)
        hard = y.clone()
        if i % 2 == 0:
            hard[1] = -100  # ignored
        t = torch.randn(b, C, dtype=torch.float64, generator=g).softmax(dim=1)
        if margin is not None:
            t = torch.full((b, C), 1e-3 / C, dtype=torch.float64)
            t[torch.arange(b), y] = 1 - 1e-3 * (C - 1) / C
        out.append((f"{name} hard", z, hard, "hard"))
        out.append((f"{name} soft", z, t.to(dtype), "soft"))
    return out


POINTS = _points()
COMBOS = [
    LossOptions(label_smoothing=eps, z_loss=zl, softcap=cap, weight=_weight() if w else None, reduction=red)
    for eps, zl, cap, w, red in itertools.product(
        (0.0, 0.1), (0.0, 1e-4, 0.5), (None, 30.0, 2.0), (False, True), ("mean", "sum", "none")
    )
]


def test_a_masked_class_stays_masked_under_a_softcap():
    """Masked (-inf) logits under a softcap: probability 0 and gradient 0, the rest exact to
    float64 against mpmath, and F.cross_entropy of `capped` in float64 agrees. The formula
    alone, cap * tanh(-inf) = -cap, would give each masked class exp(-cap) of the mass
    (Unsloth PR #10616; tests/tracker_bugs.py)."""
    from harness.loss.options import capped

    g = torch.Generator().manual_seed(5)
    b = 6
    z = 3 * torch.randn(b, C, dtype=torch.float64, generator=g)
    y = torch.randint(C, (b,), generator=g)
    mask = torch.rand(b, C, generator=g) < 0.5
    mask[torch.arange(b), y] = False
    z = z.masked_fill(mask, -math.inf)
    for cap, zl, red in itertools.product((30.0, 2.0), (0.0, 0.5), ("mean", "sum", "none")):
        o = LossOptions(z_loss=zl, softcap=cap, reduction=red)
        errs = errors(z, y, "hard", o)
        assert max(errs) <= 1e-13, (o.describe(), errs)
        ref = reference(z, y, "hard", o)
        assert (ref.grad[mask] == 0).all() and math.isfinite(ref.grad_magnitude)
        x = z.clone().requires_grad_()
        zc = capped(x, cap)
        rows = F.cross_entropy(zc, y, reduction="none") + zl * torch.logsumexp(zc, dim=1).square()
        want = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[red]
        (grad,) = torch.autograd.grad(want, x, torch.ones_like(want))
        got = ref.losses if red == "none" else torch.tensor(ref.loss, dtype=torch.float64)
        torch.testing.assert_close(got, want.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(ref.grad, grad, rtol=1e-12, atol=1e-16)
    # and the check can tell: at cap 2 the formula alone gives every masked row a larger loss
    formula = F.cross_entropy(2.0 * torch.tanh(z / 2.0), y, reduction="none")
    masked_rows = mask.any(dim=1)
    assert masked_rows.all() and (formula > F.cross_entropy(capped(z, 2.0), y, reduction="none")).all()


@pytest.mark.parametrize("point", POINTS, ids=[p[0] for p in POINTS])
def test_options_are_exact_to_float64(point):
    """Every combination of the options on each point: relative error <= 1e-13 in the loss, the
    per-row losses and the gradient (norm-wise), as for the plain loss."""
    _, z, targets, kind = point
    worst = []
    for o in COMBOS:
        errs = errors(z, targets, kind, o)
        if max(errs) > 1e-13:
            worst.append((o.describe(), errs))
    assert not worst, worst[:5]


def test_the_points_make_the_options_bite():
    """A large z-loss and a small cap change the loss by far more than the tolerance: the exact
    check above compares different numbers, not the plain loss every time."""
    _, z, y, kind = POINTS[2]
    plain = reference(z, y, kind)
    for o in (LossOptions(z_loss=0.5), LossOptions(softcap=2.0), LossOptions(label_smoothing=0.1)):
        assert abs(reference(z, y, kind, o).loss - plain.loss) > 1e-3 * plain.loss, o.describe()
    assert reference(z, y, kind, LossOptions(z_loss=1e-4)).loss != plain.loss


def test_the_textbook_softcap_fails_where_the_reference_holds():
    """The check can fail: capping first and taking lse - z'_y of the capped values in float64
    loses the loss when the target holds the max by a wide margin, which the reference keeps."""
    name, z, y, kind = next(p for p in POINTS if p[0] == "margin=300 fp32 hard")
    o = LossOptions(softcap=30.0)
    zc = (30.0 * torch.tanh(z.double() / 30.0)).requires_grad_()
    loss = F.cross_entropy(zc, y)
    true, _, _ = truth(z, y, kind, o)
    assert abs(loss.item() - float(true)) / float(true) > 1e-6
    assert max(errors(z, y, kind, o)) <= 1e-13


# --- PyTorch's semantics ------------------------------------------------------------------


def _moderate(kind: str, seed: int = 0, b: int = 7, c: int = 9):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(b, c, dtype=torch.float64, generator=g)
    if kind == "hard":
        return z, torch.randint(c, (b,), generator=g)
    return z, torch.rand(b, c, dtype=torch.float64, generator=g).softmax(dim=1)


def _torch(z, t, o: LossOptions, formula: bool = False):
    """Loss (scalar, or [B] for reduction none) and its gradient (of the sum for none) by float64
    autograd: F.cross_entropy for what PyTorch has; softcap and z-loss by their formulas."""
    z = z.double().requires_grad_()
    zc = o.softcap * torch.tanh(z / o.softcap) if o.softcap is not None else z
    kw = dict(weight=o.weight, label_smoothing=o.label_smoothing)
    if not t.is_floating_point():
        kw["ignore_index"] = o.ignore_index
    out = F.cross_entropy(zc, t, reduction=o.reduction, **kw)
    if o.z_loss:
        keep = (t != o.ignore_index).double() if not t.is_floating_point() else torch.ones(len(t)).double()
        zr = o.z_loss * torch.logsumexp(zc, dim=1) ** 2 * keep
        out = out + {"mean": zr.sum() / keep.sum(), "sum": zr.sum(), "none": zr}[o.reduction]
    (grad,) = torch.autograd.grad(out.sum(), z)
    return out.detach(), grad


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_f_cross_entropy(kind, reduction):
    """ignore_index (the default and a class index), label smoothing and class weights, alone and
    together, against F.cross_entropy in float64 on moderate logits (~1e-12: PyTorch's own
    rounding; the reference is the more accurate one at extreme logits)."""
    z, t = _moderate(kind)
    for ignore, eps, weighted in itertools.product((-100, 2), (0.0, 0.1, 1.0), (False, True)):
        tt = t
        if kind == "hard":
            tt = t.clone()
            tt[[0, 3]] = ignore  # two rows ignored (with ignore=2, any other row holding class 2 too)
        o = LossOptions(
            ignore_index=ignore if kind == "hard" else -100,
            label_smoothing=eps,
            weight=_weight(9) if weighted else None,
            reduction=reduction,
        )
        want, want_grad = _torch(z, tt, o)
        ref = reference(z, tt, kind, o)
        got = ref.losses if reduction == "none" else torch.tensor(ref.loss, dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15, msg=o.describe())
        torch.testing.assert_close(ref.grad, want_grad, rtol=1e-12, atol=1e-15, msg=o.describe())
        if reduction == "none":
            assert ref.loss == pytest.approx(want.mean().item(), rel=1e-13)  # the scalar summary
        if kind == "hard" and reduction == "mean":
            kept = tt != ignore
            w = o.weight[tt[kept]].sum().item() if weighted else float(kept.sum())
            assert ref.denominator == pytest.approx(w, rel=1e-15)
        if kind == "hard":
            assert (ref.losses[tt == ignore] == 0).all() and (ref.grad[tt == ignore] == 0).all()


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_and_softcap_match_autograd_of_the_formula(kind, reduction):
    """z-loss (Liger-Kernel's lse_square_scale) and softcap, alone and with the others, against
    float64 autograd of the formula written out: z_loss * logsumexp(z')^2 per kept row (divided
    by the kept rows under mean, whatever the weights), z' = cap tanh(z / cap)."""
    z, t = _moderate(kind, seed=1)
    z = 10 * z  # the cap bites
    if kind == "hard":
        t = t.clone()
        t[2] = -100
    for zl, cap, eps, weighted in itertools.product(
        (0.0, 1e-4, 0.5), (None, 30.0, 2.0), (0.0, 0.1), (False, True)
    ):
        o = LossOptions(z_loss=zl, softcap=cap, label_smoothing=eps, weight=_weight(9) if weighted else None)
        o = LossOptions(**{**o.__dict__, "reduction": reduction})
        want, want_grad = _torch(z, t, o)
        ref = reference(z, t, kind, o)
        got = ref.losses if reduction == "none" else torch.tensor(ref.loss, dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15, msg=o.describe())
        torch.testing.assert_close(ref.grad, want_grad, rtol=1e-11, atol=1e-15, msg=o.describe())


def test_softcap_chain_factor_survives_saturation():
    """sech^2(z / cap) where tanh is 1 to float64: 1 - tanh^2 would be 0, the gradient is not.
    And where every logit of the row saturates (z / cap ~ 300-333, cap 3: z / cap is rounded), the
    rounding of z / cap, amplified 2|x| times by e^-2|x|, would cost ~4e-14: carried, it does not."""
    z = torch.tensor([[100.0, 60.0, -80.0]], dtype=torch.float64)
    o = LossOptions(softcap=2.0)
    ref = reference(z, torch.tensor([0]), "hard", o)
    _, _, grad = truth(z, torch.tensor([0]), "hard", o)
    assert (ref.grad != 0).all()
    for got, want in zip(ref.grad[0].tolist(), grad[0]):
        assert abs(got - float(want)) <= 1e-13 * abs(float(want))
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(10):
        z = 900 + 100 * torch.rand(1, 4, dtype=torch.float64, generator=g)
        worst = max(worst, *errors(z, torch.tensor([0]), "hard", LossOptions(softcap=3.0)))
    assert worst <= 2e-15, worst


def test_all_ignored_batch_is_what_pytorch_gives():
    """Every target ignored: under mean F.cross_entropy gives NaN (0 / 0) and a zero gradient in
    float64 (with weights and smoothing too); the reference says so and has no finite value.
    Under sum and none the loss is 0 and the gradient 0, finite."""
    z, _ = _moderate("hard", b=3, c=4)
    y = torch.full((3,), -100)
    for eps, weighted, zl in itertools.product((0.0, 0.1), (False, True), (0.0, 0.5)):
        o = LossOptions(label_smoothing=eps, weight=_weight(4) if weighted else None, z_loss=zl)
        want, want_grad = _torch(z, y, LossOptions(label_smoothing=eps, weight=o.weight))
        ref = reference(z, y, "hard", o)
        assert math.isnan(want.item()) and math.isnan(ref.loss)
        assert torch.equal(want_grad, torch.zeros_like(z)) and torch.equal(ref.grad, want_grad)
        assert not ref.finite and "every target is ignored" in ref.missing
        assert ref.denominator == 0.0 and torch.equal(ref.losses, torch.zeros(3, dtype=torch.float64))
        for reduction in ("sum", "none"):
            r = reference(z, y, "hard", LossOptions(**{**o.__dict__, "reduction": reduction}))
            assert r.finite and r.loss == 0.0 and not r.grad.any() and not r.losses.any()


def test_conditioning_stays_meaningful_with_options():
    """The tolerance's numbers are finite and positive with options, the plain loss's without."""
    z, t = _moderate("hard", c=C)
    t[1] = -100
    plain = reference(z, t, "hard")
    for o in COMBOS[::7]:
        ref = reference(z, t, "hard", o)
        for f in ("loss_magnitude", "grad_log_p", "grad_magnitude"):
            assert 0 < getattr(ref, f) < math.inf, (o.describe(), f)
        assert ref.grad_subnormal >= 0
    # reduction rescales the loss and the gradient together: the ratios do not move
    for red in ("sum", "none"):
        r = reference(z, t, "hard", LossOptions(reduction=red))
        assert r.grad_log_p == pytest.approx(plain.grad_log_p, rel=1e-12)
        assert r.grad_magnitude == pytest.approx(plain.grad_magnitude, rel=1e-12)
    assert reference(z, t, "hard", LossOptions(reduction="sum")).loss_magnitude == pytest.approx(
        plain.loss_magnitude, rel=1e-12
    )


# --- the options themselves ---------------------------------------------------------------


def test_active_and_describe():
    y = torch.tensor([0, 1, -100])
    assert LossOptions().active() == () and LossOptions().active(y) == ("ignore_index",)
    assert LossOptions().active(torch.tensor([0, 1])) == ()
    assert LossOptions().active(torch.rand(2, 3)) == ()  # soft targets: nothing is ignored
    assert LossOptions().describe() == "plain"
    o = LossOptions(label_smoothing=0.1, z_loss=1e-4, softcap=30.0, weight=_weight(), reduction="sum")
    assert o.active(y) == ("ignore_index", "label_smoothing", "z_loss", "softcap", "weight", "reduction")
    assert o.describe() == "label_smoothing=0.1 z_loss=0.0001 softcap=30 weight[C=6] reduction=sum"
    assert LossOptions(ignore_index=3).describe() == "ignore_index=3"
    assert o == LossOptions(label_smoothing=0.1, z_loss=1e-4, softcap=30.0, weight=_weight(), reduction="sum")
    assert hash(o) == hash(LossOptions(**o.__dict__)) and o != LossOptions()


@pytest.mark.parametrize(
    "options,words",
    [
        (LossOptions(label_smoothing=-0.1), "label_smoothing=-0.1 is not allowed: use a number in [0, 1]"),
        (LossOptions(label_smoothing=1.5), "label_smoothing=1.5"),
        (LossOptions(z_loss=-1.0), "z_loss=-1.0 is not allowed: use a finite number >= 0"),
        (LossOptions(z_loss=math.inf), "z_loss=inf"),
        (LossOptions(z_loss=math.nan), "z_loss=nan"),
        (LossOptions(softcap=0.0), "softcap=0.0 is not allowed: use a finite number > 0"),
        (LossOptions(softcap=-30.0), "softcap=-30.0"),
        (
            LossOptions(weight=torch.ones(5, dtype=torch.float64)),
            "weight of shape (5,) is not allowed: use 6",
        ),
        (
            LossOptions(weight=torch.tensor([1.0, 1, 1, 1, 1, 0])),
            "weight has 1 entries that are not finite and > 0",
        ),
        (LossOptions(weight=torch.tensor([1.0, 1, 1, 1, math.nan, 1])), "not finite and > 0"),
        (LossOptions(weight=torch.ones(6, dtype=torch.int64)), "weight of dtype torch.int64"),
        (LossOptions(reduction="avg"), "reduction='avg' is not allowed: use one of mean, sum, none"),
    ],
)
def test_check_names_the_setting(options, words):
    msg = options.check(C)
    assert msg is not None and words in msg and "\n" not in msg


def test_check_passes_good_settings():
    for o in COMBOS[:20] + [LossOptions(label_smoothing=1.0, ignore_index=0)]:
        assert o.check(C) is None


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_signed_and_zero_class_weights_match_f_cross_entropy(kind, reduction):
    # torch allows any weights; its OpInfo samples draw U[-9, 9). Two of them exactly 0.
    g = torch.Generator().manual_seed(1)
    z = 2 * torch.randn(32, 20, dtype=torch.float64, generator=g)
    y = torch.randint(20, (32,), generator=g)
    w = torch.rand(20, dtype=torch.float64, generator=g) * 18 - 9
    w[[3, 5]] = 0.0
    t = y if kind == "hard" else torch.randn(32, 20, dtype=torch.float64, generator=g).softmax(dim=1)
    for eps in (0.0, 0.1):
        o = LossOptions(weight=w, reduction=reduction, label_smoothing=eps)
        ref = reference(z, t, kind, o)
        x = z.clone().requires_grad_()
        want = F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=eps)
        (grad,) = torch.autograd.grad(want, x, torch.ones_like(want))
        got = ref.losses if reduction == "none" else torch.tensor(ref.loss, dtype=torch.float64)
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14, msg=o.describe())
        torch.testing.assert_close(ref.grad, grad, rtol=1e-12, atol=1e-15, msg=o.describe())
        assert ref.loss_magnitude > 0 and ref.grad_magnitude > 0


def test_weights_of_the_kept_targets_summing_to_zero_have_no_reference():
    z = torch.randn(4, 3, dtype=torch.float64)
    ref = reference(
        z, torch.tensor([0, 1, 0, 1]), "hard", LossOptions(weight=torch.tensor([1.0, -1.0, 5.0]).double())
    )
    assert ref.missing == "no float64 reference: the kept targets' class weights sum to 0 (0/0)"
