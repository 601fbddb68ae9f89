"""Fused linear + cross-entropy: loss = CE(hidden [N, D] @ weight [V, D]^T, targets [N]), the
harness's second problem family (README, "Fused linear + cross-entropy").

At LLM vocabularies the loss layer is dominated by the logits it materialises (N = 8192 tokens
x V = 256k classes in fp32 is 8.4 GB); the variants differ in whether and how they avoid them.
The runner measures them as it measures the first family: time, peak memory, and the loss, dH
and dW against float64.

  point.py       the settings of a point (N = batch_size, D = hidden_size, V = num_classes), validated
  inputs.py      hidden ~ N(0, 1), weight ~ N(0, logit_scale^2 / D) in float64, rounded once; targets
  reference.py   the float64 loss, dH and dW in vocabulary chunks (never [N, V] in float64)
  tolerance.py   the bound that turns the errors into a verdict
  traffic.py     the byte model and the matmul FLOPs each mode cannot avoid
  variants/      the implementations, each registered where it is defined

`FAMILY` is what the runner (harness/runner.py) needs from it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from harness.family import Family, Outputs
from harness.linear_cross_entropy.inputs import Inputs, make_inputs
from harness.linear_cross_entropy.point import Point, scan_points
from harness.linear_cross_entropy.reference import Reference, reference
from harness.linear_cross_entropy.tolerance import tolerance
from harness.linear_cross_entropy.traffic import bytes_moved, flops
from harness.linear_cross_entropy.variants import REGISTRY
from harness.measure import ceiling
from harness.measure.accuracy import rel_err
from harness.registry import Variant

NATIVE = "materialized"  # F.linear + F.cross_entropy: what err_vs_native divides by


class BadResult(Exception):
    """The variant returned something that is not a scalar loss."""


class Feed:
    """What one (variant, mode) is called with: the point's tensors and the keyword options.
    `fresh`: the variant overwrites its inputs, so each `refresh` gives it new copies (as
    harness/measure/isolation.py's Feed does for the first family's logits and targets)."""

    def __init__(self, hidden: Tensor, weight: Tensor, targets: Tensor, fresh: bool, kwargs: dict) -> None:
        self._sources = (hidden, weight, targets)
        self.fresh = fresh
        self.hidden, self.weight, self.targets = hidden, weight, targets
        self.kwargs = kwargs

    def refresh(self) -> None:
        if self.fresh:
            self.hidden, self.weight, self.targets = (t.clone() for t in self._sources)


def _check_loss(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise BadResult(f"returned {type(out).__name__}, expected a tensor (the mean loss)")
    if out.numel() != 1:
        raise BadResult(f"returned a tensor of shape {list(out.shape)}, expected a scalar (the mean loss)")
    return out.reshape(())


def fed_call(fn: Callable, feed: Feed, mode: str) -> Callable[[], Outputs]:
    """One repetition's work: fwd under no_grad, or fwd + autograd.grad with respect to hidden
    and weight (the gradient is the pair (dH, dW))."""

    if mode == "fwd":

        def fwd() -> Outputs:
            with torch.no_grad():
                return _check_loss(fn(feed.hidden, feed.weight, feed.targets, **feed.kwargs)), None

        return fwd

    def fwd_bwd() -> Outputs:
        h = feed.hidden.detach().requires_grad_()
        w = feed.weight.detach().requires_grad_()
        loss = _check_loss(fn(h, w, feed.targets, **feed.kwargs))
        if not loss.requires_grad:
            raise BadResult("returned a loss that does not depend on hidden and weight (no gradient)")
        dh, dw = torch.autograd.grad(loss, (h, w), allow_unused=True)
        if dh is None or dw is None:
            raise BadResult(f"returned a loss that does not depend on {'hidden' if dh is None else 'weight'}")
        return loss, (dh, dw)

    return fwd_bwd


def make_call(fn: Callable, hidden: Tensor, weight: Tensor, targets: Tensor, mode: str, **options: Any):
    """`fed_call` on fixed tensors (and options by keyword): what tests call."""
    return fed_call(fn, Feed(hidden, weight, targets, fresh=False, kwargs=options), mode)


def _references(point: Point, inputs: Inputs) -> tuple[Reference, Reference]:
    """float64 on the rounded inputs (the verdict's) and on the unrounded draw (the total
    error); the unrounded float64 tensors are dropped once used (8.6 GB for W at V = 262144,
    D = 4096)."""
    ref = reference(inputs.hidden, inputs.weight, inputs.targets, point.ignore_index)
    if point.dtype == "fp64":
        total = ref
    else:
        total = reference(
            inputs.hidden_unrounded, inputs.weight_unrounded, inputs.targets, point.ignore_index
        )
    inputs.hidden_unrounded = inputs.weight_unrounded = None
    return ref, total


def _unsupported(variant: Variant, point: Point) -> str:
    if not variant.runs_on(point.targets, point.device):
        return f"{variant.name} runs on devices {sorted(variant.devices)}"
    missing = variant.missing_options(point.required_options)
    if missing:
        return f"{variant.name} does not take {', '.join(missing)} (ignored rows need it)"
    return ""


def _feed(inputs: Inputs, variant: Variant, point: Point) -> Feed:
    kwargs = {"ignore_index": point.ignore_index} if "ignore_index" in variant.options else {}
    return Feed(inputs.hidden, inputs.weight, inputs.targets, fresh=variant.overwrites_input, kwargs=kwargs)


def _norm_err(g: Tensor, ref: Tensor, ref_norm: float) -> float:
    diff = torch.linalg.vector_norm(g.detach().to(torch.float64) - ref).item()
    return diff / ref_norm if ref_norm != 0 else diff


def _nonfinite(t: Tensor) -> tuple[int, int]:
    if bool(torch.isfinite(t).all()):
        return 0, 0
    return int(torch.isnan(t).sum().item()), int(torch.isinf(t).sum().item())


def _assess(outputs: Outputs, refs: tuple[Reference, Reference], point: Point) -> dict[str, Any]:
    """The accuracy columns: the loss's relative error; dH's and dW's norm-wise relative errors
    (grad_hidden_rel_err, grad_weight_rel_err) and grad_rel_err = the larger of the two, each
    judged against the same bound (tolerance.py)."""
    loss, grads = outputs
    ref, total = refs
    value = float(loss.detach().to(torch.float64).item())
    nan, inf = _nonfinite(loss.detach().reshape(1))
    for g in grads or ():
        more_nan, more_inf = _nonfinite(g)
        nan, inf = nan + more_nan, inf + more_inf
    cols: dict[str, Any] = {"loss": value, "loss_ref": ref.loss, "nan_count": nan, "inf_count": inf}
    if not ref.finite:
        return {**cols, "status": "no_reference", "message": ref.missing}
    tol = tolerance(ref, point)
    cols.update(loss_rel_err=rel_err(value, ref.loss), loss_tolerance=tol.loss)
    if total.finite:
        cols["loss_rel_err_total"] = rel_err(value, total.loss)
    if grads is not None:
        dh, dw = grads
        e_h = _norm_err(dh, ref.grad_hidden, ref.grad_hidden_norm)
        e_w = _norm_err(dw, ref.grad_weight, ref.grad_weight_norm)
        cols.update(
            grad_hidden_rel_err=e_h,
            grad_weight_rel_err=e_w,
            grad_rel_err=max(e_h, e_w),
            grad_tolerance=tol.grad,
        )
        if total.finite:
            cols["grad_rel_err_total"] = max(
                _norm_err(dh, total.grad_hidden, total.grad_hidden_norm),
                _norm_err(dw, total.grad_weight, total.grad_weight_norm),
            )
    if nan or inf:
        status = "nonfinite"
    elif cols["loss_rel_err"] > tol.loss or cols.get("grad_rel_err", 0.0) > tol.grad:
        status = "inaccurate"
    else:
        status = "ok"
    return {**cols, "status": status, "message": ""}


def _compute_floor_s(point: Point, inputs: Inputs, mode: str) -> float | None:
    """The matmuls' floor on CUDA: 2 N D V (fwd) or 6 N D V (fwd_bwd) FLOPs at the measured
    rate of a large product in the point's dtype (harness/measure/ceiling.py). None on a CPU,
    where the copy bandwidth alone is the floor (a CPU matmul's rate depends on its threads and
    blocking too much to be a lower bound)."""
    if torch.device(point.device).type != "cuda":
        return None
    return flops(point, mode) / ceiling.matmul_flops(point.device, point.torch_dtype)


FAMILY = Family(
    name="linear_cross_entropy",
    registry=REGISTRY,
    points=scan_points,
    make_inputs=make_inputs,
    references=_references,
    guarded=lambda inputs: {"hidden": inputs.hidden, "weight": inputs.weight, "targets": inputs.targets},
    unsupported=_unsupported,
    feed=_feed,
    call=fed_call,
    assess=_assess,
    bytes_moved=bytes_moved,
    compute_floor_s=_compute_floor_s,
    native=NATIVE,
)
