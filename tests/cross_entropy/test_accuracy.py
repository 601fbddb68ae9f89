"""Accuracy bookkeeping: the native op's own errors (which the tolerance table rests on), the
tolerance's conditioning terms, and the status each error implies."""

import itertools

import pytest
import torch

from harness.cross_entropy import make_call
from harness.cross_entropy.accuracy import assess, grad_rel_err
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.cross_entropy.reference import Reference, held, reference
from harness.cross_entropy.tolerance import K_GRAD, K_LOSS, tolerance
from harness.cross_entropy.variants import REGISTRY
from harness.dtypes import edges
from harness.loss.errors import rel_err

# Points of the smoke and cpu sweeps' kind: C from tiny to a vocabulary slice, scales to 100.
POINTS = list(
    itertools.product(["fp16", "bf16", "fp32"], [10, 1000, 8192], [1.0, 10.0, 100.0], ["soft", "hard"])
)


@pytest.mark.parametrize("dtype,num_classes,scale,kind", POINTS)
def test_native_errors_stay_within_the_tolerance_with_room(dtype, num_classes, scale, kind):
    """The basis of K_LOSS and K_GRAD: F.cross_entropy (CPU) stays within half the tolerance on
    the sweeps' kind of points, so the tolerance flags only real excess."""
    inputs = make_inputs(Point(32, num_classes, dtype, scale, "cpu", kind, seed=0))
    ref = reference(inputs.logits, inputs.targets, kind)
    loss, grad = make_call(REGISTRY["torch_cross_entropy"].fn, inputs.logits, inputs.targets, "fwd_bwd")()
    tol = tolerance(ref, dtype)
    room = 0.75 if dtype == "fp16" else 0.5  # CPU fp16 keeps its batch sum in fp16 (Findings)
    assert rel_err(loss.item(), ref.loss) < room * tol.loss
    assert grad_rel_err(grad, ref) < tol.grad / 2


def _ref(loss=2.0, **conditioning):
    fields = dict(loss_magnitude=1.0, grad_log_p=1.0, grad_magnitude=1.0, grad_subnormal=0.0)
    ones = held(torch.ones(2, 3, dtype=torch.float64))
    return Reference(loss=loss, gradient=ones, **{**fields, **conditioning})


def test_the_tolerance_is_the_table():
    u16, u32, u64 = 2.0**-11, 2.0**-24, 2.0**-53
    tol = tolerance(
        _ref(loss_magnitude=10.0, grad_log_p=3.0, grad_magnitude=5.0, grad_subnormal=1e-4), "fp16"
    )
    assert tol.loss == pytest.approx(K_LOSS * (u16 + 10 * u32))
    assert tol.grad == pytest.approx(K_GRAD * (u16 * 4 + u32 * 5 + 1e-4))
    # fp64 computes in fp64: its magnitude term uses fp64's u
    assert tolerance(_ref(loss_magnitude=10.0), "fp64").loss == pytest.approx(K_LOSS * (u64 + 10 * u64))


def test_the_magnitude_term_is_relative_to_the_loss():
    """An absolute error u |lse| is relative through the loss: logits 100 times larger with a
    loss 100 times larger leave the tolerance where it was (no growth with the spread)."""
    z = torch.randn(8, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(50, (8,), generator=torch.Generator().manual_seed(1))
    small, large = reference(z, y, "hard"), reference(100 * z, y, "hard")
    assert large.loss_magnitude < 2 * small.loss_magnitude
    assert tolerance(large, "fp32").loss < 1e-5


def test_status_follows_the_errors():
    ref = _ref()
    grad_ok = torch.ones(2, 3)
    assert assess(torch.tensor(2.0), grad_ok, ref, "fp32").status == "ok"
    assert assess(torch.tensor(2.0 * (1 + 1e-4)), grad_ok, ref, "fp32").status == "inaccurate"
    assert assess(torch.tensor(2.0), grad_ok * (1 + 1e-4), ref, "fp32").status == "inaccurate"
    assert assess(torch.tensor(2.0 * (1 + 1e-4)), None, ref, "fp16").status == "ok"  # within 4u of fp16
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


def test_a_common_offset_shows_which_variants_form_lse_minus_the_target_logit():
    # A finding, not a flag: chunked and online form loss = lse - z_y, whose fp32 lse carries an
    # absolute error of u |lse| ~ u * offset (PyTorch PR #195829's fused kernel, MLX PR #4188), while
    # F.cross_entropy and log1p_shifted subtract the row max before the target logit and stay
    # exact. The tolerance's magnitude term (max|z| + ln C) admits the first form, so both are
    # `ok`; the error columns show the difference, growing with the offset.
    import pandas as pd

    from ..conftest import job_config, run_job

    def errors(offset: float) -> pd.Series:
        cfg = job_config(
            batch_size=16, num_classes=100, dtype="fp32", targets="hard", logit_offset=offset,
            variants=["torch_cross_entropy", "log1p_shifted", "chunked", "online"],
        )  # fmt: skip
        rows = pd.DataFrame(run_job(cfg))
        assert set(rows.status) == {"ok"}, rows[["variant", "mode", "status", "loss_rel_err"]]
        return rows[rows["mode"] == "fwd"].set_index("variant").loss_rel_err

    at_1e3, at_1e5 = errors(1e3), errors(1e5)
    for shifted in ("torch_cross_entropy", "log1p_shifted"):
        assert at_1e5[shifted] < 1e-6  # a few fp32 roundings of a loss of about 5
    for lse_form in ("chunked", "online"):
        assert at_1e5[lse_form] > 100 * at_1e5["torch_cross_entropy"]
        assert at_1e5[lse_form] > 10 * at_1e3[lse_form]  # linear in the offset
