"""Properties with exact answers, over every registered variant that is not wrong by design.

Each property is checked in fp32 (the dtype where the naive formulas' edges are reachable with
moderate logits) against a float64 answer known in closed form. Where a naive variant is known
to break, its case is a strict expected failure whose reason says how it breaks: if it ever
stops failing, the suite says so. The last tests check `err_vs_native`, the error relative to
torch_cross_entropy at the same point (README, Numerics §6).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import reference
from harness.cross_entropy.tolerance import K_LOSS, tolerance
from harness.cross_entropy.variants import REGISTRY, Variant
from harness.dtypes import DTYPES, unit_roundoff
from harness.runner import run_point
from harness.vocabulary import NATIVE

VARIANTS = [v for v in REGISTRY.values() if not v.expected_wrong and "cpu" in v.devices]
STABLE = [v for v in VARIANTS if v.stable]
UNSTABLE = [v for v in VARIANTS if not v.stable]

B = 4
C = 5000  # > chunked's 4096-class chunk: the last chunk is partial and holds class C - 1

# Per property, the failure mechanisms (registry `breaks_by`) that break it, and why. A variant
# declaring one of them is a strict expected failure: an unexpected pass fails the suite.
KNOWN_BREAKS = {
    "shift": {"sum_overflow": "exp(z + 100) overflows fp32 (ln max = 88.7): inf / inf = NaN"},
    "dominant": {
        "sum_overflow": "exp(200) overflows fp32: every p is 0 or NaN",
        "prob_underflow": "p = exp(-200) rounds to 0 in fp32: 0 * log(0) = 0 * -inf = NaN",
    },
}


def _cases(prop: str, variants: list[Variant]) -> list:
    out = []
    for v in variants:
        reason = "; ".join(why for m, why in KNOWN_BREAKS.get(prop, {}).items() if m in v.breaks_by)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(v, id=v.name, marks=marks))
    return out


def evaluate(
    variant: Variant, logits: torch.Tensor, targets: torch.Tensor, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The variant's mean loss (and d loss / d logits): setup applied, index targets turned
    into one-hot rows for a variant that takes probabilities only (as the runner does)."""
    fn = variant.setup(variant.fn) if variant.setup is not None else variant.fn
    if targets.dtype == torch.int64 and "hard" not in variant.targets:
        targets = torch.zeros_like(logits).scatter_(1, targets[:, None], 1)
    if not grad:
        with torch.no_grad():
            return fn(logits, targets), None
    x = logits.detach().requires_grad_()
    loss = fn(x, targets)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def _draw(kind: str, scale: float = 1.0, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(B, C, dtype=torch.float64, generator=g)).to(dtype)
    if kind == "hard":
        t = torch.randint(C, (B,), generator=g)
    else:
        t = torch.randn(B, C, dtype=torch.float64, generator=g).softmax(dim=1).to(dtype)
    return z, t


def _targets_for(variant: Variant) -> list[str]:
    return [k for k in ("hard", "soft") if variant.runs_on(k, "cpu")]


def _close(value: float, expected: float, dtype: str = "fp32", atol: float = 0.0) -> bool:
    # The loss tolerance's dtype term (harness/cross_entropy/tolerance.py); atol carries any
    # conditioning term.
    return (
        math.isfinite(value)
        and abs(value - expected) <= K_LOSS * unit_roundoff(DTYPES[dtype]) * abs(expected) + atol
    )


@pytest.mark.parametrize("variant", _cases("shift", VARIANTS))
def test_shift_invariance(variant):
    # z + 100 is exact in fp32 for |z| < 8 (spacing at 100 is 2^-17), so both inputs are the
    # same logits up to a constant and the loss must not move beyond the dtype's tolerance.
    for kind in _targets_for(variant):
        z, t = _draw(kind)
        base = evaluate(variant, z, t)[0].item()
        shifted = evaluate(variant, z + 100, t)[0].item()
        # lse of z + 100 held in fp32 is off by up to u * 107 in absolute terms: the tolerance's
        # magnitude term, computed by the reference of the shifted logits.
        tol = tolerance(reference(z + 100, t, kind), "fp32").loss
        assert abs(shifted - base) <= tol * abs(base), f"{kind}: {shifted} vs {base} (tolerance {tol:.2g})"


@pytest.mark.parametrize("variant", _cases("constant", VARIANTS))
def test_constant_logits_give_log_c(variant):
    for kind in _targets_for(variant):
        _, t = _draw(kind)
        z = torch.full((B, C), 5.0)
        loss = evaluate(variant, z, t)[0].item()
        # soft rows sum to 1 only up to fp32 rounding: the exact loss is mean_b(T_b) * log C
        total = 1.0 if kind == "hard" else t.double().sum(dim=1).mean().item()
        assert _close(loss, total * math.log(C)), f"{kind}: {loss} vs {total * math.log(C)}"


@pytest.mark.parametrize("variant", _cases("dominant", VARIANTS))
def test_one_dominant_correct_logit_gives_zero(variant):
    # Every other class is exp(-200) = 1e-87 below the target: the loss is 0 to any precision.
    y = torch.tensor([0, 1, C - 2, C - 1])
    z = torch.zeros(B, C).scatter_(1, y[:, None], 200.0)
    loss = evaluate(variant, z, y)[0].item()
    assert math.isfinite(loss) and abs(loss) <= 1e-6, loss


@pytest.mark.parametrize("variant", _cases("edges", VARIANTS))
def test_first_and_last_class_targets(variant):
    z, _ = _draw("hard", seed=3)
    z64 = z.double()
    for y in (0, C - 1):
        t = torch.full((B,), y)
        expected = (torch.logsumexp(z64, dim=1) - z64[:, y]).mean().item()
        loss = evaluate(variant, z, t)[0].item()
        assert _close(loss, expected), f"target {y}: {loss} vs {expected}"


@pytest.mark.parametrize("variant", _cases("nonnegative", VARIANTS))
def test_loss_is_nonnegative(variant):
    for kind in _targets_for(variant):
        for scale in (0.1, 1.0, 10.0):
            z, t = _draw(kind, scale=scale, seed=1)
            loss = evaluate(variant, z, t)[0].item()
            assert loss >= 0, f"{kind} scale {scale}: {loss}"


@pytest.mark.parametrize("variant", _cases("grad_rows", VARIANTS))
def test_gradient_rows_sum_to_zero(variant):
    # dL/dz_b = (T_b softmax(z_b) - t_b) / B sums to T_b - T_b = 0 per row when rows are
    # normalised; in fp64 the sum is 0 up to C * u64 relative to the row's size (1/B).
    for kind in _targets_for(variant):
        z, t = _draw(kind, seed=2, dtype=torch.float64)
        if kind == "soft":
            t = t / t.sum(dim=1, keepdim=True)
        _, g = evaluate(variant, z, t, grad=True)
        sums = g.sum(dim=1).abs().max().item()
        assert sums <= 1e-12, f"{kind}: row sums up to {sums}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("variant", [pytest.param(v, id=v.name) for v in STABLE])
def test_stable_variants_stay_finite_in_half_precision(variant, dtype):
    for kind in _targets_for(variant):
        for scale in (1.0, 10.0, 100.0):
            z, t = _draw(kind, scale=scale, dtype=dtype)
            loss, g = evaluate(variant, z, t, grad=True)
            assert torch.isfinite(loss).all() and torch.isfinite(g).all(), f"{kind} scale {scale}: {loss}"


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            v,
            id=v.name,
            marks=pytest.mark.xfail(
                strict=True,
                reason="fp16 underflow edge is 17.3 and ln max 11.1: at scale 100 a probability "
                "rounds to 0 or the sum overflows",
            ),
        )
        for v in UNSTABLE
    ],
)
def test_naive_variants_break_in_fp16_at_scale_100(variant):
    for kind in _targets_for(variant):
        z, t = _draw(kind, scale=100.0, dtype=torch.float16)
        loss, _ = evaluate(variant, z, t)
        assert torch.isfinite(loss).all(), f"{kind}: {loss}"


def test_the_property_suite_covers_the_registry():
    # Guards against a filter above silently dropping what this suite exists to test: every CPU
    # variant that is not wrong on purpose is here, the breaking ones among them.
    cpu = {v.name for v in REGISTRY.values() if "cpu" in v.devices}
    wrong = {v.name for v in REGISTRY.values() if v.expected_wrong}
    assert {v.name for v in VARIANTS} == cpu - wrong and NATIVE in cpu
    assert STABLE and UNSTABLE
    assert all(set(v.breaks_by) <= set(REGISTRY.mechanisms) for v in UNSTABLE)


# --- error relative to the native op (err_vs_native, README, Numerics §6) ---------------------

OFF = SimpleNamespace(enabled=False)


def _rows(variants: list, dtype: str, scale: float, targets: str = "soft") -> dict[tuple[str, str], dict]:
    point = Point(8, 1000, dtype, scale, "cpu", targets, 0)
    rows = run_point(point, [REGISTRY[v] if isinstance(v, str) else v for v in variants], OFF, OFF, {})
    return {(r["variant"], r["mode"]): r for r in rows}


def test_native_err_vs_native_is_one():
    for dtype in ("fp16", "bf16", "fp32"):
        rows = _rows([NATIVE], dtype, 3.0)
        assert rows[(NATIVE, "fwd")]["err_vs_native"] == 1.0
        assert rows[(NATIVE, "fwd_bwd")]["err_vs_native"] == 1.0
        assert rows[(NATIVE, "fwd_bwd")]["grad_err_vs_native"] == 1.0


def _log_of_rounded_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The log of probabilities first stored in the logits' dtype: in bf16 a larger error than
    the fused log_softmax's."""
    return -torch.sum(targets * torch.log(torch.softmax(logits, dim=1))) / logits.shape[0]


ROUNDED = Variant("log_of_rounded_softmax", _log_of_rounded_softmax, targets=frozenset({"soft"}))


def test_err_vs_native_is_the_error_ratio_floored_at_u():
    # Its error is above the native op's, so its ratio is above 1 and equals the ratio of the
    # two errors.
    from harness.dtypes import DTYPES, unit_roundoff

    rows = _rows([NATIVE, ROUNDED, "torch_log_softmax_nll"], "bf16", 3.0, targets="hard")
    u = unit_roundoff(DTYPES["bf16"])
    native = rows[(NATIVE, "fwd_bwd")]
    for name in (ROUNDED.name, "torch_log_softmax_nll"):
        row = rows[(name, "fwd_bwd")]
        expected = max(row["loss_rel_err"], u) / max(native["loss_rel_err"], u)
        assert row["err_vs_native"] == pytest.approx(expected, rel=1e-12)
        assert row["grad_err_vs_native"] == pytest.approx(
            max(row["grad_rel_err"], u) / max(native["grad_rel_err"], u), rel=1e-12
        )
    # the same computation as the native op (nll_loss of log_softmax): the same error, ratio 1
    assert rows[("torch_log_softmax_nll", "fwd_bwd")]["err_vs_native"] == pytest.approx(1.0, abs=1e-12)
    assert rows[(ROUNDED.name, "fwd_bwd")]["grad_err_vs_native"] >= 1.0
