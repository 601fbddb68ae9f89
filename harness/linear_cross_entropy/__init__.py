"""Fused linear + cross-entropy: loss = CE(hidden [N, D] @ weight [V, D]^T (+ bias [V]), targets [N]),
the harness's second problem family (README, "Fused linear + cross-entropy").

At LLM vocabularies the loss layer is dominated by the logits it materialises (N = 8192 tokens
x V = 256k classes in fp32 is 8.4 GB); the variants differ in whether and how they avoid them.
The runner measures them as it measures the first family: time, peak memory, and the loss, dH,
dW (and db with a bias) against float64.

The loss takes the first family's options (harness/loss/options.py: ignored rows, label
smoothing, z-loss, softcap, class weights, reduction mean | sum | none) with the same formulas,
and the layer an optional bias (`bias=true`). A variant receives the options it declares by
keyword (the class weights as `class_weight`, the bias as `bias`; variants/__init__.py); under
reduction none it returns the [N] per-row losses, and the runner differentiates them with a
non-uniform incoming gradient, a scalar loss with 2 (harness/loss/errors.py `incoming`), as the
first family's does.

  point.py       the settings of a point (N = batch_size, D = hidden_size, V = num_classes, the
                 loss options, bias), validated
  inputs.py      hidden ~ N(0, 1), weight (and bias) sharing the logits' variance logit_scale^2,
                 in float64, rounded once; targets; class weights
  reference.py   the float64 loss, dH, dW and db in vocabulary chunks (never [N, V] in float64)
  tolerance.py   the bound that turns the errors into a verdict
  traffic.py     the byte model and the matmul FLOPs each mode cannot avoid
  variants/      the implementations, each registered where it is defined

`FAMILY` is what the runner (harness/runner.py) needs from it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor

from harness.family import Family, Outputs
from harness.linear_cross_entropy.inputs import Inputs, make_inputs
from harness.linear_cross_entropy.point import READS, Point, point
from harness.linear_cross_entropy.reference import Reference, reference
from harness.linear_cross_entropy.tolerance import entry_units, tolerance
from harness.linear_cross_entropy.traffic import bytes_moved, flops
from harness.linear_cross_entropy.variants import REGISTRY
from harness.loss import verdict
from harness.loss.errors import (
    SCALAR_UPSTREAM,
    gradients,
    incoming,
    nonfinite_counts,
    norm_rel_err,
    rel_err,
    row_blocks,
    rows_rel_err,
    upstream,
    worst_ratio,
)
from harness.loss.options import LossOptions
from harness.loss.returned import BadResult, checked_loss
from harness.measure import ceiling
from harness.measure.isolation import Feed
from harness.registry import Variant

NATIVE = "materialized"  # F.linear + F.cross_entropy: what err_vs_native divides by


def fed_call(
    fn: Callable, feed: Feed, mode: str, scalar_upstream: float = SCALAR_UPSTREAM, backwards: int = 1
) -> Callable[[], Outputs]:
    """One repetition's work: fwd under no_grad, or fwd + autograd.grad with respect to hidden,
    weight and (when there is one) the bias: the gradient is the tuple (dH, dW) or (dH, dW, db),
    of the per-row losses weighted by accuracy.upstream under reduction none, as the first
    family's runner does; with backwards=2, the second of two backwards of one graph."""
    reduction = feed.kwargs.get("reduction", "mean")
    rows = feed.hidden.shape[0]
    # `bias` among the kwargs says the variant takes one (None at a point without a bias); the
    # tensor itself is the feed's, refreshed with the others for a variant that writes its inputs
    takes_bias = "bias" in feed.kwargs
    options = {k: v for k, v in feed.kwargs.items() if k != "bias"}

    def bias_kwarg(bias: Tensor | None) -> dict:
        return {"bias": bias} if takes_bias else {}

    if mode == "fwd":

        def fwd() -> Outputs:
            with torch.no_grad():
                out = fn(feed.hidden, feed.weight, feed.targets, **options, **bias_kwarg(feed.bias))
                return checked_loss(out, reduction, rows), None

        return fwd

    def fwd_bwd() -> Outputs:
        h = feed.hidden.detach().requires_grad_()
        w = feed.weight.detach().requires_grad_()
        b = None if feed.bias is None else feed.bias.detach().requires_grad_()
        loss = checked_loss(fn(h, w, feed.targets, **options, **bias_kwarg(b)), reduction, rows)
        if not loss.requires_grad:
            raise BadResult("returned a loss that does not depend on hidden and weight (no gradient)")
        wrt = (h, w) if b is None else (h, w, b)
        # never an incoming gradient of 1 (harness/loss/errors.py `incoming`): per-row losses
        # get a non-uniform one, a scalar loss SCALAR_UPSTREAM
        grads = gradients(loss, wrt, incoming(loss, scalar_upstream), backwards, allow_unused=True)
        for g, name in zip(grads, ("hidden", "weight", "bias")):
            if g is None:
                raise BadResult(f"returned a loss that does not depend on {name}")
        return loss, grads

    return fwd_bwd


def make_call(fn: Callable, hidden: Tensor, weight: Tensor, targets: Tensor, mode: str, **options: Any):
    """`fed_call` on fixed tensors (and options by keyword, `bias=` among them): what tests call.
    A scalar loss is differentiated with 1 here (the reference's gradients as they stand); the
    runner's SCALAR_UPSTREAM is checked in tests/cross_entropy/test_incoming_gradient.py."""
    bias = options.get("bias")
    feed = Feed(hidden=hidden, weight=weight, targets=targets, bias=bias, kwargs=options)
    return fed_call(fn, feed, mode, scalar_upstream=1.0)


def loss_options(point: Point, inputs: Inputs) -> LossOptions:
    """The point's loss options, with the class weights as drawn (rounded to the dtype) in float64."""
    weight = None if inputs.class_weight is None else inputs.class_weight.to(torch.float64)
    return LossOptions.of_point(point.option_values(), weight)


def _references(point: Point, inputs: Inputs) -> tuple[Reference, Reference]:
    """float64 on the rounded inputs (the verdict's) and on the unrounded draw (the total
    error); the unrounded float64 tensors are dropped once used (8.6 GB for W at V = 262144,
    D = 4096). The class weights are part of the problem, not of its storage: both references
    take them as the variants receive them (rounded to the dtype)."""
    options = loss_options(point, inputs)
    # under reduction none the runner differentiates with upstream(N): the gradients are of that
    incoming = upstream(point.batch_size, inputs.hidden) if point.reduction == "none" else None
    units = entry_units(point)  # the verdict's reference carries the per-entry bounds
    ref = reference(inputs.hidden, inputs.weight, inputs.targets, options, inputs.bias, incoming, units)
    if point.dtype == "fp64":
        total = ref
    else:
        total = reference(
            inputs.hidden_unrounded,
            inputs.weight_unrounded,
            inputs.targets,
            options,
            inputs.bias_unrounded,
            incoming,
        )
    inputs.hidden_unrounded = inputs.weight_unrounded = inputs.bias_unrounded = None
    if point.reduction != "none":  # the runner differentiates a scalar loss with SCALAR_UPSTREAM
        ref = ref.times(SCALAR_UPSTREAM)
        total = ref if point.dtype == "fp64" else total.times(SCALAR_UPSTREAM)
    return ref, total


def _feed(inputs: Inputs, variant: Variant, point: Point) -> Feed:
    """The point's tensors, and every option the variant declares by keyword with the point's
    value (defaults too); `bias` among them when it declares one (fed_call passes the tensor)."""
    # the weights as drawn; `bias` a marker: fed_call passes the feed's own bias tensor
    values = {**point.kwarg_values(), "class_weight": inputs.class_weight, "bias": None}
    kwargs = {name: values[name] for name in sorted(variant.options)}
    return Feed(
        hidden=inputs.hidden,
        weight=inputs.weight,
        targets=inputs.targets,
        bias=inputs.bias,
        fresh=variant.overwrites_input,
        kwargs=kwargs,
    )


def _guarded(inputs: Inputs) -> dict[str, Tensor]:
    """What no variant may write into: the bias and class weights too, when the point has them."""
    tensors = {"hidden": inputs.hidden, "weight": inputs.weight, "targets": inputs.targets}
    if inputs.bias is not None:
        tensors["bias"] = inputs.bias
    if inputs.class_weight is not None:
        tensors["class_weight"] = inputs.class_weight
    return tensors


def _grad_errors(grads: tuple[Tensor, ...], ref: Reference) -> dict[str, float]:
    """Norm-wise errors of dH, dW and (with a bias) db against one reference."""
    errs = {
        "grad_hidden_rel_err": norm_rel_err(grads[0], ref.grad_hidden, ref.grad_hidden_norm),
        "grad_weight_rel_err": norm_rel_err(grads[1], ref.grad_weight, ref.grad_weight_norm),
    }
    if ref.grad_bias is not None:
        errs["grad_bias_rel_err"] = norm_rel_err(grads[2], ref.grad_bias, ref.grad_bias_norm)
    return errs


def _assess(outputs: Outputs, refs: tuple[Reference, Reference], point: Point) -> dict[str, Any]:
    """The accuracy columns: the loss's relative error (norm-wise over the rows under reduction
    none); dH's, dW's and, with a bias, db's norm-wise relative errors (grad_hidden_rel_err,
    grad_weight_rel_err, grad_bias_rel_err) and grad_rel_err = the largest of them, each judged
    against the same bound (tolerance.py)."""
    loss, grads = outputs
    ref, total = refs
    losses = loss.detach().to(torch.float64)
    value = float(losses.mean().item())
    nan, inf = nonfinite_counts(losses.reshape(-1))
    for g in grads or ():
        more_nan, more_inf = nonfinite_counts(g)
        nan, inf = nan + more_nan, inf + more_inf
    cols: dict[str, Any] = {"loss": value, "loss_ref": ref.loss, "nan_count": nan, "inf_count": inf}
    if not ref.finite:
        return {**cols, "status": "no_reference", "message": ref.missing}

    def loss_err(r: Reference) -> float:
        return rel_err(value, r.loss) if losses.dim() == 0 else rows_rel_err(losses, r.losses)

    tol = tolerance(ref, point)
    cols.update(loss_rel_err=loss_err(ref), loss_tolerance=tol.loss)
    if total is not None and total.finite:
        cols["loss_rel_err_total"] = loss_err(total)
    if grads is not None:
        errs = _grad_errors(grads, ref)
        cols.update(errs, grad_rel_err=max(errs.values()), grad_tolerance=tol.grad)
        if total is not None and total.finite:
            cols["grad_rel_err_total"] = max(_grad_errors(grads, total).values())
    ratio, where = None, ""
    if grads is not None and ref.hidden_bound is not None and total is not None:  # None: see family.py
        local, where = _entry_errors(grads, ref)
        cols.update(local)
        ratio = local["grad_entry_ratio"]
    judged = [(cols["loss_rel_err"], tol.loss), (cols.get("grad_rel_err"), tol.grad)]
    status = verdict.status(bool(nan or inf), judged, local=ratio)
    message = ""
    if status == "inaccurate" and ratio is not None and ratio > 1 and cols["grad_rel_err"] <= tol.grad:
        message = (
            f"the gradient is within its norm-wise bound but not element-wise: {where} is {ratio:.3g}x "
            f"its per-entry bound (worst relative error of a row of dH {cols['grad_row_err']:.3g}, "
            f"of a class's row of dW {cols['grad_class_err']:.3g})"
        )
    return {**cols, "status": status, "message": message}


def _entry_errors(grads: tuple[Tensor, ...], ref: Reference) -> tuple[dict[str, float], str]:
    """The element-wise columns: grad_row_err, the worst relative error of one row of dH;
    grad_class_err, of one class's row of dW; grad_entry_ratio, the worst of their error norms
    over K_ENTRY times their per-entry bound norms (reference.py `_EntryBounds`; an error where
    the bound is 0, an ignored row's dH, is inf), and where it is. A bug confined to one class or
    one row is a small share of the whole gradient's norm, and all of its own."""
    cols, found = {}, []
    parts = (
        ("row", "dH", grads[0], ref.grad_hidden, ref.hidden_bound),
        ("class", "dW", grads[1], ref.grad_weight, ref.weight_bound),
    )
    for name, what, g, r, bound in parts:
        err = torch.empty(r.shape[0], dtype=torch.float64, device=r.device)
        for rows in row_blocks(r):  # [V, D] float64 differences one block at a time
            err[rows] = torch.linalg.vector_norm(g[rows].detach().to(torch.float64) - r[rows], dim=1)
        size = torch.linalg.vector_norm(r, dim=1)
        nz = size > 0
        cols[f"grad_{name}_err"] = float((err[nz] / size[nz]).max().item()) if bool(nz.any()) else 0.0
        worst, at = worst_ratio(err.square(), bound.square())
        found.append((worst, f"{name} {at} of {what}"))
    worst, where = max(found, key=lambda f: f[0])
    cols["grad_entry_ratio"] = worst / verdict.K_ENTRY
    return cols, where


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
    point=point,
    make_inputs=make_inputs,
    references=_references,
    guarded=_guarded,
    unsupported=Variant.unsupported_at,
    feed=_feed,
    call=fed_call,
    assess=_assess,
    bytes_moved=bytes_moved,
    compute_floor_s=_compute_floor_s,
    native=NATIVE,
    reads=READS,
    second_backward=functools.partial(fed_call, mode="fwd_bwd", backwards=2),
)
