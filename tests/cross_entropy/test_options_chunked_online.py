"""`chunked` and `online` with every loss option, against float64 PyTorch: F.cross_entropy for
ignore_index, label_smoothing, weight and reduction, with the softcap and the z-loss composed
around it in float64 autograd. Tiny sizes, with 7-class chunks over C = 23 (four chunks, the
last one partial), so the per-chunk target terms and the cross-chunk merging are exercised."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import harness.cross_entropy.variants.chunked as chunked_mod
import harness.cross_entropy.variants.online as online_mod
from harness.cross_entropy.variants import REGISTRY

B, C = 8, 23
IGNORE = -100
VARIANTS = ("chunked", "online")
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
ALL = {"ignore": True, "label_smoothing": 0.1, "weight": True, "z_loss": 1e-2, "softcap": 5.0}

# Each option alone, then several together under each reduction.
CASES = {
    "plain": {},
    "ignore": {"ignore": True},
    "smoothing": {"label_smoothing": 0.1},
    "weight": {"weight": True},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"softcap": 5.0},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "all-mean": {**ALL, "reduction": "mean"},
    "all-sum": {**ALL, "reduction": "sum"},
    "all-none": {**ALL, "reduction": "none"},
    "ignore-smoothing-z": {"ignore": True, "label_smoothing": 0.2, "z_loss": 1e-1},
    "weight-eps-cap-none": {"weight": True, "label_smoothing": 0.3, "softcap": 2.0, "reduction": "none"},
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(chunked_mod, "CHUNK", 7)
    monkeypatch.setattr(online_mod, "BLOCK", 7)


def _inputs(dtype: torch.dtype, kind: str, ignore: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, C, dtype=torch.float64, generator=g)).to(dtype)
    if kind == "hard":
        targets = torch.randint(C, (B,), generator=g)
        targets[[0, 6]] = torch.tensor([0, C - 1])  # the first chunk's first class, the partial chunk's last
        if ignore:
            targets[[1, 4]] = IGNORE  # 25% of the rows
    else:
        targets = torch.softmax(2 * torch.randn(B, C, dtype=torch.float64, generator=g), 1).to(dtype)
    weight = (0.5 + 1.5 * torch.rand(C, dtype=torch.float64, generator=g)).to(dtype)
    return logits, targets, weight


def _options(case: dict, weight: torch.Tensor) -> dict:
    return {
        "ignore_index": IGNORE,
        "label_smoothing": case.get("label_smoothing", 0.0),
        "z_loss": case.get("z_loss", 0.0),
        "softcap": case.get("softcap"),
        "weight": weight if case.get("weight") else None,
        "reduction": case.get("reduction", "mean"),
    }


def _truth(logits: torch.Tensor, targets: torch.Tensor, opts: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient (of the sum, for 'none') in float64, from PyTorch's own pieces."""
    z = logits.detach().to(torch.float64).requires_grad_()
    t = targets if targets.dtype == torch.int64 else targets.to(torch.float64)
    w = None if opts["weight"] is None else opts["weight"].to(torch.float64)
    zc = z if opts["softcap"] is None else opts["softcap"] * torch.tanh(z / opts["softcap"])
    reduction = opts["reduction"]
    loss = F.cross_entropy(
        zc,
        t,
        weight=w,
        ignore_index=opts["ignore_index"],
        label_smoothing=opts["label_smoothing"],
        reduction=reduction,
    )
    if opts["z_loss"]:
        kept = (t != opts["ignore_index"]) if t.dtype == torch.int64 else torch.ones(B, dtype=torch.bool)
        rows = opts["z_loss"] * torch.logsumexp(zc, 1).square() * kept
        loss = loss + {"none": rows, "sum": rows.sum(), "mean": rows.sum() / kept.sum()}[reduction]
    (grad,) = torch.autograd.grad(loss, z, torch.ones_like(loss))
    return loss.detach(), grad


def _run(name: str, logits: torch.Tensor, targets: torch.Tensor, opts: dict):
    z = logits.clone().requires_grad_()
    loss = REGISTRY[name].fn(z, targets, **opts)
    (grad,) = torch.autograd.grad(loss, z, torch.ones_like(loss))
    return loss.detach(), grad


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(x.to(torch.float64) - ref) / torch.linalg.vector_norm(ref)).item()


def test_both_declare_every_option():
    for name in VARIANTS:
        assert REGISTRY[name].options == {
            "ignore_index",
            "label_smoothing",
            "z_loss",
            "softcap",
            "weight",
            "reduction",
            "num_items_in_batch",
        }


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", VARIANTS)
def test_matches_float64_pytorch(name, dtype, kind, case):
    spec = CASES[case]
    if kind == "soft" and spec.get("ignore"):
        spec = {k: v for k, v in spec.items() if k != "ignore"}  # probability targets ignore nothing
    logits, targets, weight = _inputs(dtype, kind, bool(spec.get("ignore")))
    opts = _options(spec, weight)
    loss, grad = _run(name, logits, targets, opts)
    ref_loss, ref_grad = _truth(logits, targets, opts)
    assert loss.dtype == dtype and loss.shape == ref_loss.shape
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert _rel(loss, ref_loss) < TOL[dtype], (_rel(loss, ref_loss), loss, ref_loss)
    assert _rel(grad, ref_grad) < TOL[dtype], _rel(grad, ref_grad)
    if kind == "hard" and spec.get("ignore"):
        ignored = targets == IGNORE
        assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
        if opts["reduction"] == "none":
            assert torch.equal(loss[ignored], torch.zeros_like(loss[ignored]))


@pytest.mark.parametrize("name", VARIANTS)
def test_reduction_none_takes_any_grad_output(name):
    logits, targets, weight = _inputs(torch.float64, "hard", ignore=True, seed=1)
    opts = _options({**ALL, "reduction": "none"}, weight)
    v = torch.linspace(-2.0, 3.0, B, dtype=torch.float64)
    z = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(REGISTRY[name].fn(z, targets, **opts), z, v)
    z64 = logits.clone().requires_grad_()
    zc = opts["softcap"] * torch.tanh(z64 / opts["softcap"])
    ce = F.cross_entropy(zc, targets, weight=weight, label_smoothing=0.1, reduction="none")
    rows = ce + opts["z_loss"] * torch.logsumexp(zc, 1).square() * (targets != IGNORE)
    (ref,) = torch.autograd.grad(rows, z64, v)
    assert _rel(grad, ref) < 1e-12


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize(
    "spec", [{}, {"label_smoothing": 0.1}, {"weight": True}, {**ALL, "reduction": "mean"}], ids=str
)
def test_an_all_ignored_batch_under_mean_is_nan_like_pytorch(name, spec):
    logits, targets, weight = _inputs(torch.float64, "hard", ignore=False)
    targets = torch.full_like(targets, IGNORE)
    opts = _options(spec, weight)
    ref_loss, ref_grad = _truth(logits, targets, opts)
    loss, grad = _run(name, logits, targets, opts)
    assert math.isnan(ref_loss.item()) and math.isnan(loss.item())
    if not opts["z_loss"]:  # F.cross_entropy: no row, no gradient (0, not NaN)
        assert torch.equal(ref_grad, torch.zeros_like(ref_grad))
    # With z-loss the composed truth's (masked sum) / 0 differentiates to 0 * inf = NaN; ignored
    # rows still get exactly 0 here, as every row does from F.cross_entropy.
    assert torch.equal(grad, torch.zeros_like(grad))
    for reduction in ("sum", "none"):  # nothing to divide: zeros, as PyTorch gives
        loss, grad = _run(name, logits, targets, {**opts, "reduction": reduction})
        assert torch.equal(loss, torch.zeros_like(loss)) and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("name", VARIANTS)
def test_keyword_defaults_are_the_two_argument_call_bitwise(name):
    # No option on: the same bits as calling it without keywords (the plain path is untouched).
    logits, targets, weight = _inputs(torch.float32, "hard", ignore=False)
    plain = _run(name, logits, targets, {})
    with_defaults = _run(name, logits, targets, _options({}, weight))
    assert all(torch.equal(a, b) for a, b in zip(plain, with_defaults))


@pytest.mark.parametrize("name", VARIANTS)
def test_an_unknown_reduction_is_refused(name):
    logits, targets, _ = _inputs(torch.float64, "hard", ignore=False)
    with pytest.raises(ValueError, match="reduction"):
        REGISTRY[name].fn(logits, targets, reduction="avg")
