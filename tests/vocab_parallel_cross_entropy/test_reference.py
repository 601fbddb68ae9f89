"""The vocabulary-parallel family's float64 reference, with no process started: against float64
autograd of F.cross_entropy with every option, and against mpmath on a confident row."""

from __future__ import annotations

import itertools

import mpmath
import pytest
import torch
import torch.nn.functional as F

from harness.loss.errors import SCALAR_UPSTREAM, upstream
from harness.loss.options import LossOptions
from harness.vocab_parallel_cross_entropy.point import shard_bounds
from harness.vocab_parallel_cross_entropy.reference import reference


def _autograd(z, y, opt):
    zz = z.clone().requires_grad_()
    zc = opt.softcap * torch.tanh(zz / opt.softcap) if opt.softcap else zz
    ce = F.cross_entropy(
        zc,
        y,
        weight=opt.weight,
        ignore_index=opt.ignore_index,
        label_smoothing=opt.label_smoothing,
        reduction=opt.reduction,
    )
    kept = (y != opt.ignore_index).double()
    zl = opt.z_loss * torch.logsumexp(zc, 1) ** 2 * kept
    loss = ce + {"mean": zl.sum() / kept.sum(), "sum": zl.sum(), "none": zl}[opt.reduction]
    g = (
        upstream(len(y), loss).double()
        if opt.reduction == "none"
        else torch.tensor(SCALAR_UPSTREAM, dtype=torch.float64)
    )
    loss.backward(g)
    return (loss.mean() if opt.reduction == "none" else loss).item(), zz.grad


@pytest.mark.parametrize(
    "eps,z_loss,cap,weighted,reduction,ignore",
    list(
        itertools.product(
            (0.0, 0.1), (0.0, 1e-2), (None, 3.0), (False, True), ("mean", "sum", "none"), (-100, 4)
        )
    ),
)
def test_reference_is_float64_autograd_of_the_formula(eps, z_loss, cap, weighted, reduction, ignore):
    g = torch.Generator().manual_seed(7)
    z = torch.randn(6, 11, dtype=torch.float64, generator=g) * 3
    y = torch.randint(0, 11, (6,), generator=g)
    y[1] = ignore
    w = 0.5 + torch.rand(11, dtype=torch.float64, generator=g) if weighted else None
    opt = LossOptions(
        ignore_index=ignore, label_smoothing=eps, z_loss=z_loss, softcap=cap, weight=w, reduction=reduction
    )
    ref = reference(z, y, opt)
    loss, grad = _autograd(z, y, opt)
    assert abs(ref.loss - loss) <= 1e-13 * abs(loss)
    assert (ref.grad - grad).norm() <= 1e-13 * grad.norm()


def test_confident_row_against_mpmath():
    """Target at the row max, p_y = 1 - 1e-12: float64 autograd's p_y - 1 keeps ~4 digits; the
    reference's 1 - p_y (a sum of the others' probabilities) keeps them all."""
    z = torch.tensor([[40.0, 12.0, 10.0, 9.5]], dtype=torch.float64)
    y = torch.tensor([0])
    ref = reference(z, y, LossOptions())
    mpmath.mp.dps = 50
    es = [mpmath.exp(mpmath.mpf(float(v))) for v in z[0]]
    s = sum(es)
    loss = mpmath.log(s) - mpmath.mpf(40.0)
    g0 = SCALAR_UPSTREAM * (es[0] / s - 1)
    assert abs(ref.loss - float(loss)) <= 1e-15 * float(loss)
    assert abs(float(ref.grad[0, 0]) - float(g0)) <= 1e-15 * abs(float(g0))


def test_shards_follow_torch_chunk():
    for v, tp in ((37, 2), (37, 3), (37, 4), (1001, 3), (1024, 4), (5, 3)):
        chunks = torch.arange(v).chunk(tp)
        assert shard_bounds(v, tp) == [(int(c[0]), int(c[-1]) + 1) for c in chunks]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("rows_a_block", [1, 3])
def test_the_reference_goes_block_by_block_to_the_same_answer(reduction, rows_a_block, monkeypatch):
    # Block by block of rows (a whole [N, V] float64 pass held about twenty such tensors, 53x
    # bf16 logits): each row's values to the bit, the sums over blocks to the last digits.
    import importlib

    module = importlib.import_module("harness.vocab_parallel_cross_entropy.reference")
    g = torch.Generator().manual_seed(5)
    z = (3 * torch.randn(10, 40, generator=g)).to(torch.bfloat16)
    y = torch.randint(40, (10,), generator=g)
    y[::4] = 7  # ignored
    opt = LossOptions(
        ignore_index=7, label_smoothing=0.1, z_loss=1e-3, softcap=5.0, reduction=reduction,
        weight=(torch.rand(40, generator=g) + 0.5).to(torch.bfloat16),
    )  # fmt: skip
    whole = reference(z, y, opt)
    monkeypatch.setattr(module, "_BLOCK_ELEMENTS", rows_a_block * 40)
    blocks = reference(z, y, opt)
    assert torch.equal(blocks.grad, whole.grad) and torch.equal(blocks.losses, whole.losses)
    for name in ("loss", "grad_norm", "loss_magnitude", "grad_magnitude", "grad_log_p"):
        assert getattr(blocks, name) == pytest.approx(getattr(whole, name), rel=1e-14), name
    assert (blocks.kept, blocks.finite) == (whole.kept, whole.finite) == (7, True)
