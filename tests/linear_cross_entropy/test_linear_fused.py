"""fused_linear (harness/linear_cross_entropy/variants/fused.py): the gradients formed in the
forward over chunks of token rows. Against float64 at every chunking, with ignored rows; the
Triton path against the torch path under the interpreter; the memory it holds; the cost of
accumulating dW in the input dtype, measured against the materialised fp32 path."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch

from harness.linear_cross_entropy import make_call
from harness.linear_cross_entropy.reference import reference
from harness.linear_cross_entropy.variants import REGISTRY, fused
from harness.loss.options import LossOptions
from harness.measure.memory import peak_bytes

from ..conftest import REPO
from ..triton_interpreter import interpreted


def _inputs(n: int, d: int, v: int, dtype: torch.dtype, ignored_every: int = 5, seed: int = 0):
    """hidden ~ N(0, 1), weight ~ N(0, 9 / D) (logits of std 3), rounded once to dtype; every
    `ignored_every`-th target is -100."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, dtype=torch.float64, generator=g).to(dtype)
    w = (3 * torch.randn(v, d, dtype=torch.float64, generator=g) / math.sqrt(d)).to(dtype)
    t = torch.randint(v, (n,), generator=g)
    if ignored_every:
        t[::ignored_every] = -100
    return h, w, t


def _errors(name: str, h, w, t) -> tuple[float, float, float]:
    """(loss, dH, dW) relative errors of a variant against float64 on the same rounded inputs."""
    loss, (dh, dw) = make_call(REGISTRY[name].fn, h, w, t, "fwd_bwd", ignore_index=-100)()
    ref = reference(h, w, t)

    def err(g, r):
        return ((g.double() - r).norm() / r.norm()).item()

    loss_err = abs(loss.double().item() - ref.loss) / abs(ref.loss)
    return loss_err, err(dh, ref.grad_hidden), err(dw, ref.grad_weight)


@pytest.mark.parametrize("budget_rows", [1, 7, 64, 10_000])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_float64_at_every_chunking(monkeypatch, budget_rows, dtype):
    n, d, v = 150, 24, 700
    monkeypatch.setattr(fused, "CHUNK_BYTES", budget_rows * v * dtype.itemsize)
    assert fused.chunk_rows(n, v, dtype.itemsize) == min(n, budget_rows - budget_rows % 64 or budget_rows)
    eps = torch.finfo(dtype).eps
    loss_err, dh_err, dw_err = _errors("fused_linear", *_inputs(n, d, v, dtype))
    assert loss_err < 20 * eps and dh_err < 50 * eps and dw_err < 50 * eps, (loss_err, dh_err, dw_err)


@pytest.mark.parametrize(
    "options",
    [
        dict(label_smoothing=0.1),
        dict(z_loss=1e-3),
        dict(softcap=5.0),
        dict(label_smoothing=0.2, z_loss=1e-2, softcap=3.0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_options_and_the_bias_match_float64_across_chunks(monkeypatch, options, dtype):
    n, d, v = 150, 24, 700
    monkeypatch.setattr(fused, "CHUNK_BYTES", 7 * v * dtype.itemsize)  # 22 chunks, the last of 3 rows
    h, w, t = _inputs(n, d, v, dtype)
    bias = (torch.randn(v, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / 2).to(dtype)
    loss, (dh, dw, db) = make_call(REGISTRY["fused_linear"].fn, h, w, t, "fwd_bwd", bias=bias, **options)()
    ref = reference(h, w, t, LossOptions(**options), bias)
    eps = torch.finfo(dtype).eps

    def err(g, r):
        return ((g.double() - r).norm() / r.norm()).item()

    errs = [abs(loss.item() - ref.loss) / abs(ref.loss)]
    errs += [err(dh, ref.grad_hidden), err(dw, ref.grad_weight), err(db, ref.grad_bias)]
    assert max(errs) < 50 * eps, errs


def test_every_row_ignored_gives_nan_and_zero_gradients():
    h, w, t = _inputs(16, 8, 50, torch.float32)
    t[:] = -100
    loss, (dh, dw) = make_call(REGISTRY["fused_linear"].fn, h, w, t, "fwd_bwd", ignore_index=-100)()
    assert math.isnan(loss.item())
    assert not dh.any() and not dw.any()


def test_forward_only_matches_and_the_backward_scales_by_grad_output():
    h, w, t = _inputs(40, 8, 90, torch.float64)
    fn = REGISTRY["fused_linear"].fn
    with torch.no_grad():
        plain = fn(h, w, t)
    hg, wg = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = fn(hg, wg, t)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-15)
    (3.5 * loss).backward()
    ref = reference(h, w, t)
    assert torch.allclose(hg.grad, 3.5 * ref.grad_hidden, rtol=1e-12, atol=1e-15)
    assert torch.allclose(wg.grad, 3.5 * ref.grad_weight, rtol=1e-12, atol=1e-15)
    with pytest.raises(RuntimeError, match="already used"):
        loss.backward()  # the stored gradients were handed out: never scaled twice


def test_bf16_dw_rounded_per_chunk_stays_within_2x_of_the_materialised_fp32_path(monkeypatch):
    """The design's price: dW is summed in bf16 once per chunk. At 16 chunks (a small
    budget; 8 at N = 8192, V = 128256 with the default one) its error must stay within the
    README's stretch bound, 2x the materialised fp32-upcast path's, and dH must not pay at all."""
    n, d, v = 1024, 64, 4000
    h, w, t = _inputs(n, d, v, torch.bfloat16)
    monkeypatch.setattr(fused, "CHUNK_BYTES", 64 * v * 2)
    assert n // fused.chunk_rows(n, v, 2) == 16
    _, dh_f, dw_f = _errors("fused_linear", h, w, t)
    _, dh_m, dw_m = _errors("materialized_fp32", h, w, t)
    assert dh_f <= 1.05 * dh_m and dw_f <= 2 * dw_m, (dh_f, dh_m, dw_f, dw_m)
    assert dw_f > 1e-3  # bf16 really was used (a silent fp32 path would be ~1e-7)


def test_holds_dh_dw_and_one_chunk_of_logits(monkeypatch):
    n, d, v = 512, 32, 3000
    h, w, t = _inputs(n, d, v, torch.float32)
    rows = 64
    monkeypatch.setattr(fused, "CHUNK_BYTES", rows * v * 4)
    outputs = 4 * (n * d + v * d)  # dH and dW
    # the CPU path's block: the logits, their fp32 copy turned into dZ in place, dZ in the
    # dtype (the same tensor for fp32), and the rows' lse and index vectors
    block = 2 * rows * v * 4 + 64 * rows
    got = peak_bytes(make_call(REGISTRY["fused_linear"].fn, h, w, t, "fwd_bwd"), torch.device("cpu"))
    full = peak_bytes(make_call(REGISTRY["materialized"].fn, h, w, t, "fwd_bwd"), torch.device("cpu"))
    assert outputs <= got <= outputs + block, (got - outputs, block)
    assert full >= 2 * n * v * 4 > 4 * block  # the materialised logits and their gradient
    fwd = peak_bytes(make_call(REGISTRY["fused_linear"].fn, h, w, t, "fwd"), torch.device("cpu"))
    assert fwd <= block  # a forward alone forms no gradient


KERNEL_CHECK = """
import torch
from harness.loss.options import LossOptions
from harness.linear_cross_entropy.reference import reference
from harness.linear_cross_entropy.variants import fused
from tests.linear_cross_entropy.test_linear_fused import _inputs

OPTIONS = LossOptions(label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
for dtype, budget, opts in [
    (torch.float32, 16, OPTIONS),
    (torch.float32, 16, LossOptions()),
    (torch.bfloat16, 64, LossOptions()),
    (torch.float64, 3, OPTIONS),
]:
    h, w, t = _inputs(48, 16, 300, dtype, ignored_every=4)
    bias = (torch.randn(300, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / 4).to(dtype)
    fused.CHUNK_BYTES = budget * 300 * dtype.itemsize
    eps = torch.finfo(dtype).eps
    for want_grad in (True, False):
        by_torch = fused.fused_linear_ce(h, w, bias, t, opts, want_grad, use_kernel=False)
        by_kernel = fused.fused_linear_ce(h, w, bias, t, opts, want_grad, use_kernel=True)
        pairs = [(by_torch[0], by_kernel[0])] + list(zip(by_torch[1] or (), by_kernel[1] or ()))
        for a, b in pairs:
            # The same fp32 arithmetic, summed in another order. A row of dH sums 300 terms
            # (p - y) * W whose sizes exceed the row's own (they cancel), so the absolute band is
            # set from the largest entry with room: over 30 bias draws the worst gap was 4.8 ulps
            # of it; a lost chunk or a wrong scale is off by 1e-2 and more.
            tol = dict(rtol=4 * eps, atol=16 * eps * b.abs().max().item())
            assert torch.allclose(a.double(), b.double(), **tol), (dtype, opts, a, b)
    as_loss = LossOptions(label_smoothing=opts.label_smoothing, z_loss=opts.z_loss, softcap=opts.softcap)
    ref = reference(h, w, t, as_loss, bias)
    dw = fused.fused_linear_ce(h, w, bias, t, opts, True, use_kernel=True)[1][1]
    err = ((dw.double() - ref.grad_weight).norm() / ref.grad_weight.norm()).item()
    assert err < 100 * eps, (dtype, opts, err)
print("kernel path ok")
"""


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="on CUDA the kernel runs natively (the test_on_cuda_ tests); Triton 3.6's interpreter fails there",
)
def test_the_triton_path_matches_the_torch_path_under_the_interpreter():
    pytest.importorskip("triton")
    out = interpreted([sys.executable, "-c", textwrap.dedent(KERNEL_CHECK)], cwd=REPO)
    assert out.returncode == 0 and "kernel path ok" in out.stdout, out.stderr[-3000:]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.py)")


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_on_cuda_the_kernel_path_matches_float64_with_the_options_and_the_bias(dtype):
    n, d, v = 2048, 256, 32000
    h, w, t = (x.cuda() for x in _inputs(n, d, v, dtype))
    bias = (
        (torch.randn(v, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / 2).to(dtype).cuda()
    )
    options = dict(label_smoothing=0.1, z_loss=1e-4, softcap=30.0)
    loss, (dh, dw, db) = make_call(REGISTRY["fused_linear"].fn, h, w, t, "fwd_bwd", bias=bias, **options)()
    ref = reference(h, w, t, LossOptions(**options), bias)
    materialized = make_call(REGISTRY["materialized_composed"].fn, h, w, t, "fwd_bwd", bias=bias, **options)
    m_loss, (m_dh, m_dw, m_db) = materialized()

    def err(g, r):
        return ((g.double() - r).norm() / r.norm()).item()

    # within 2x of the materialised fp32 composition on every gradient, and its loss as close
    for ours, theirs, r in [
        (dh, m_dh, ref.grad_hidden),
        (dw, m_dw, ref.grad_weight),
        (db, m_db, ref.grad_bias),
    ]:
        assert err(ours, r) <= 2 * err(theirs, r) + 8 * torch.finfo(torch.float32).eps, (
            err(ours, r),
            err(theirs, r),
        )
    assert abs(loss.item() - ref.loss) <= 2 * abs(m_loss.item() - ref.loss) + 2 * torch.finfo(
        dtype
    ).eps * abs(ref.loss)


@cuda
def test_on_cuda_it_holds_dh_dw_and_one_block_of_logits():
    n, d, v = 8192, 512, 32000
    h, w, t = (x.cuda() for x in _inputs(n, d, v, torch.bfloat16))
    h.requires_grad_(), w.requires_grad_()
    block = fused.chunk_rows(n, v, 2) * v * 2  # the kernel writes dZ over the logits: one block
    outputs = 2 * (n * d + v * d)
    REGISTRY["fused_linear"].fn(h, w, t).backward()  # cuBLAS's workspace and Triton's first launch
    h.grad = w.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    REGISTRY["fused_linear"].fn(h, w, t).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra <= 1.2 * outputs + block + (8 << 20), (extra, outputs, block)
