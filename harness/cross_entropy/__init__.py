"""Cross-entropy on materialised logits [B, C]: the harness's first problem family.

  point.py       the settings of a point, validated; a job's points (the `scan` lists)
  inputs.py      logits = scale * N(0, 1) drawn in float64, rounded once; soft or hard targets
  reference.py   the float64 loss and gradient on the rounded inputs, free of cancellation
  tolerance.py   the bound that turns an error into a verdict, from the point's conditioning
  traffic.py     the byte model: the fewest bytes each mode must move
  mechanisms.py  how a formula can break at large logit scales (declared by variants)
  theory.py      the scale at which each mechanism first happens, from torch.finfo alone
  variants/      the implementations, each registered where it is defined

`FAMILY` is what the runner (harness/runner.py) needs from it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any, Callable

import torch
from torch import Tensor

from harness.cross_entropy.accuracy import (
    assess,
    element_columns,
    entrywise,
    grad_errors,
    grad_rel_err,
    row_scale,
)
from harness.cross_entropy.inputs import Inputs, make_inputs, row_layout
from harness.cross_entropy.metamorphic import transformed
from harness.cross_entropy.point import READS, Point, point
from harness.cross_entropy.reference import Reference, Rows, reference
from harness.cross_entropy.traffic import bytes_moved
from harness.cross_entropy.variants import REGISTRY
from harness.family import Family, Outputs
from harness.loss.errors import SCALAR_UPSTREAM, NormDiff, gradients, incoming, rel_err, rows_rel_err
from harness.loss.options import LossOptions
from harness.loss.returned import BadResult, checked_loss
from harness.measure.isolation import Feed
from harness.registry import Variant
from harness.vocabulary import NATIVE


def fed_call(
    fn: Callable, feed: Feed, mode: str, scalar_upstream: float = SCALAR_UPSTREAM, backwards: int = 1
) -> Callable[[], Outputs]:
    """The work one repetition does, reading its inputs from `feed` at each call (a fresh
    copy after a refresh): fwd under no_grad, or fwd + the gradient with respect to the logits
    for the incoming gradient of harness/loss/errors.py `incoming` (2 for a scalar loss; per-row
    losses weighted by `upstream`); with backwards=2, the second of two backwards of one graph."""
    kwargs = feed.kwargs
    reduction = kwargs.get("reduction", "mean")
    spatial = feed.logits.dim() == 3  # (N, C, d): spatial_size = d
    rows = feed.logits.shape[0] * (feed.logits.shape[2] if spatial else 1)
    parts = micro_batches(rows, feed.splits)

    def loss_of(z: Tensor) -> Tensor:
        if len(parts) == 1:
            out = fn(z, feed.targets, **kwargs)
            if (
                spatial
                and reduction == "none"
                and isinstance(out, Tensor)
                and out.shape == feed.targets.shape
            ):
                out = out.reshape(rows)  # the (N, d) losses of F.cross_entropy's form, in row order
            return checked_loss(out, reduction, rows)
        # Gradient accumulation: one call per micro-batch, each over the whole batch's kept rows
        # (num_items_in_batch, in kwargs), their losses summed in float64 by the harness as a
        # trainer's accumulation would be; the slices are views, so the gradient lands in place.
        losses = [checked_loss(fn(z[s], feed.targets[s], **kwargs), "mean", s.stop - s.start) for s in parts]
        return torch.stack([part.double() for part in losses]).sum()

    if mode == "fwd":

        def fwd() -> Outputs:
            with torch.no_grad():
                return loss_of(feed.logits), None

        return fwd

    def fwd_bwd() -> Outputs:
        x = feed.logits.detach().requires_grad_()
        loss = loss_of(x)
        if not loss.requires_grad:
            raise BadResult("returned a loss that does not depend on the logits (no gradient)")
        # never an incoming gradient of 1 (harness/loss/errors.py `incoming`): per-row losses
        # get a non-uniform one, a scalar loss SCALAR_UPSTREAM
        (grad,) = gradients(loss, (x,), incoming(loss, scalar_upstream), backwards)
        return loss, grad

    return fwd_bwd


def micro_batches(rows: int, k: int) -> list[slice]:
    """`rows` cut into `k` contiguous micro-batches as even as possible (sizes differ by one)."""
    bounds = [round(i * rows / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def make_call(
    fn: Callable, logits: torch.Tensor, targets: torch.Tensor, mode: str, **options: Any
) -> Callable[[], Outputs]:
    """`fed_call` on fixed tensors (and loss options, by keyword): what tests and benchmarks call.
    A scalar loss is differentiated with 1 here, so that the gradient is the reference's as it
    stands; the runner's SCALAR_UPSTREAM is checked in tests/cross_entropy/test_incoming_gradient.py."""
    return fed_call(fn, Feed(logits=logits, targets=targets, kwargs=options), mode, scalar_upstream=1.0)


def loss_options(point: Point, inputs: Inputs) -> LossOptions:
    """The point's loss options, with the class weights as drawn (rounded to the dtype) in float64."""
    weight = None if inputs.weight is None else inputs.weight.to(torch.float64)
    return LossOptions.of_point(point.option_values(), weight)


def _draw_rows(inputs: Inputs) -> Rows:
    """The unrounded draw, block by block, made again from the seed at each walk."""
    point = inputs.draw.point
    shape = (point.batch_size, point.width)
    return Rows(shape, torch.float64, torch.device(point.device), inputs.draw.blocks)


def _make_inputs(point: Point) -> Inputs:
    """The inputs, with the total error's reference made on the walk that fills them (one draw
    of the point's normals fewer than a walk of its own), and the loss options it was made
    with, which `_references` shares (one float64 copy of the class weights)."""
    if point.dtype == "fp64":  # the rounded inputs are the draw: `_references` makes one
        return make_inputs(point)

    def on_walk(inputs: Inputs, walk: Callable) -> tuple[LossOptions, Reference]:
        options = loss_options(point, inputs)
        return options, _total(point, inputs, options, walk)

    return make_inputs(point, on_walk)


def _total(point: Point, inputs: Inputs, options: LossOptions, walk: Callable) -> Reference:
    """float64 on the unrounded draw: the loss and gradient alone (no tolerance reads it)."""
    indices = inputs.targets if inputs.kind == "hard" else None  # soft targets: in the draw's blocks
    rows = Rows((point.batch_size, point.width), torch.float64, torch.device(point.device), walk)
    return reference(rows, indices, inputs.kind, options, conditioning=False)


def _references(point: Point, inputs: Inputs) -> tuple[Reference, Reference]:
    """float64 on the rounded inputs (the verdict's, with the conditioning its tolerance reads)
    and on the unrounded draw (the total error: loss and gradient alone). Neither holds the draw:
    the first reads the rounded tensors (no variant has run yet), the second walks the draw's
    blocks (made on the walk that filled the inputs, `_make_inputs`; else made again from the
    seed); each keeps its per-row losses and figures, and its
    gradient only where that is small (streamed.py, Gradient). The class weights are part of
    the problem, not of its storage: both references take them as the variants receive them
    (rounded to the dtype)."""
    if point.dtype == "fp64":  # the rounded inputs are the draw (no subnormal term in fp64's range)
        indices = inputs.targets if inputs.kind == "hard" else None  # soft: in the draw's blocks
        ref = reference(_draw_rows(inputs), indices, inputs.kind, loss_options(point, inputs))
        return ref, ref
    if inputs.total is not None:  # made while the inputs were filled (_make_inputs)
        options, total = inputs.total
    else:
        options = loss_options(point, inputs)
        total = _total(point, inputs, options, inputs.draw.blocks)
    # the runner differentiates a scalar loss with SCALAR_UPSTREAM: the tolerance's subnormal
    # term is of that gradient
    scalar = SCALAR_UPSTREAM if point.reduction != "none" else 1.0
    ref = reference(inputs.logits, inputs.targets, inputs.kind, options, incoming=scalar)
    return ref, total


def _metamorphic(point: Point, inputs: Inputs) -> tuple[Inputs, tuple[Reference, Reference], str]:
    """The point's inputs with the classes permuted and the logits shifted (metamorphic.py),
    with the float64 reference of exactly those rounded inputs (no total error: the drawn
    inputs' rows have it), and what was done, in words."""
    moved, what = transformed(point, inputs)
    scalar = SCALAR_UPSTREAM if point.reduction != "none" else 1.0
    ref = reference(moved.logits, moved.targets, moved.kind, loss_options(point, moved), incoming=scalar)
    return moved, (ref, ref), what


def _variant_kwargs(variant: Variant, point: Point, inputs: Inputs) -> dict[str, Any]:
    """Every option the variant declares, by keyword, with the point's value (defaults too)."""
    values = {**point.kwarg_values(), "weight": inputs.weight}  # the weights as drawn
    if point.micro_batches > 1:  # the whole batch's kept rows, as a trainer counts them
        values["num_items_in_batch"] = int((inputs.targets != point.ignore_index).sum().item())
    return {name: values[name] for name in sorted(variant.options)}


def _feed(inputs: Inputs, variant: Variant, point: Point) -> Feed:
    targets = inputs.for_variant(variant.wants_one_hot(point.targets))
    if inputs.spatial is not None:  # (N, C, d) logits and (N, d) targets, F.cross_entropy's form
        targets = targets.view(inputs.spatial.shape[0], inputs.spatial.shape[2])
    return Feed(
        logits=inputs.logits if inputs.spatial is None else inputs.spatial,
        targets=targets,
        fresh=variant.overwrites_input,
        kwargs=_variant_kwargs(variant, point, inputs),
        splits=point.micro_batches,
    )


def _guarded(inputs: Inputs) -> dict[str, torch.Tensor]:
    """What no variant may write into: the class weights too, when the point has them. At a
    spatial_size the variants receive the (N, C, d) copy of the logits: that is the one guarded,
    seen as [N C, d] (the guard's column sums are then d, not C d, int64s: 8 C d bytes would be
    4x fp16 logits of one sample)."""
    logits = inputs.logits if inputs.spatial is None else inputs.spatial.view(-1, inputs.spatial.shape[2])
    tensors = {"logits": logits, "targets": inputs.targets}
    if inputs.weight is not None:
        tensors["weight"] = inputs.weight
    return tensors


def _grad_errors(
    grad: Tensor, ref: Reference, total: Reference, scale: Tensor | None
) -> tuple[float, dict[str, float], float]:
    """The gradient's error against both references in one walk, with the element-wise columns
    against the first: of the kept gradients where both are small, else of the draw, each block
    made once, rounded for the first reference, as drawn for the second, both references'
    gradient blocks made beside the variant's (never a whole float64 [B, C]). The rounded blocks
    are the tensors the variants received, bit for bit, and unlike those, no variant can have
    written into them."""
    ours, theirs, local = NormDiff(scale), NormDiff(scale), entrywise(ref, scale)
    if ref.gradient.kept is not None and total.gradient.kept is not None:
        walk = zip(ref.gradient.blocks_and_bounds(), total.gradient.blocks())
        for (rows, r, bound), (_, rt) in walk:
            ours.add(grad[rows], r, rows)
            theirs.add(grad[rows], rt, rows)
            if local is not None:
                local.add(grad[rows], r, bound, rows)
        return ours.rel(ref.grad_norm), element_columns(local), theirs.rel(total.grad_norm)
    rounded = ref.gradient.rows.dtype
    for rows, z, t in total.gradient.rows.blocks():
        g = grad[rows]
        r, bound = ref.gradient.block_and_bound(rows, z.to(rounded), None if t is None else t.to(rounded))
        ours.add(g, r, rows)
        if local is not None:
            local.add(g, r, bound, rows)
        theirs.add(g, total.gradient.block(rows, z, t), rows)
    return ours.rel(ref.grad_norm), element_columns(local), theirs.rel(total.grad_norm)


def _assess(outputs: Outputs, refs: tuple[Reference, Reference], point: Point) -> dict[str, Any]:
    """The accuracy columns: against float64 on the rounded inputs (the algorithm's error,
    which the verdict judges, norm-wise and element-wise) and on the unrounded draw (storage in
    the dtype plus algorithm). The gradient is of the runner's incoming gradient (fed_call):
    the references' are scaled to it."""
    loss, grad = outputs
    if grad is not None and grad.dim() == 3:  # spatial_size: the gradient of (N, C, d) logits
        grad = row_layout(grad)
    ref, ref_total = refs
    total = ref_total is not None and ref_total.finite
    g_err = g_total = local = None
    if grad is not None and ref.finite:
        scale = row_scale(ref, loss.dim())
        if total and ref_total is not ref:  # one walk for both gradient errors
            g_err, local, g_total = _grad_errors(grad, ref, ref_total, scale)
        elif ref_total is None:  # the runner's untimed native call: its norm-wise errors alone
            g_err, local = grad_rel_err(grad, ref, scale), {}
        else:
            g_err, local = grad_errors(grad, ref, scale)
            g_total = g_err if ref_total is ref else None
    cols = asdict(assess(loss, grad, ref, point.dtype, grad_err=g_err, local=local))
    if total:
        cols["loss_rel_err_total"] = (
            rel_err(cols["loss"], ref_total.loss) if loss.dim() == 0 else rows_rel_err(loss, ref_total.losses)
        )
        if grad is not None:
            if g_total is None:
                g_total = grad_rel_err(grad, ref_total, row_scale(ref_total, loss.dim()))
            cols["grad_rel_err_total"] = g_total
    return cols


def _compute_floor_s(point: Point, inputs: Inputs, mode: str) -> float | None:
    """None: the copy bandwidth is the floor. (A timed torch.exp pass is not a lower bound on a
    CPU: the fused kernels evaluate exp with other code, up to 8x faster; harness/measure/ceiling.py.)"""
    return None


FAMILY = Family(
    name="cross_entropy",
    registry=REGISTRY,
    point=point,
    make_inputs=_make_inputs,
    remake_inputs=make_inputs,  # a restore needs the tensors, not the total reference again
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
    metamorphic=_metamorphic,
)
