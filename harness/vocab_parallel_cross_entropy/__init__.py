"""Vocabulary-parallel cross-entropy: the loss when the logits' classes are split over tp ranks
(docs/vocab_parallel.md), the harness's third problem family.

Under tensor parallelism rank r holds the logits' columns [N, V/tp] and the loss needs the
global row max, the global sum of exponentials and the target's logit: collectives. Each point
runs on torch.distributed (ranks.py: this process is rank 0, tp - 1 helper processes the rest;
gloo on the loopback on CPU and with one GPU, NCCL with a GPU per rank), and each row holds:

  - the loss's and the gathered gradient's errors against the *unsharded* float64 reference
    (reference.py), judged by the first family's bound (tolerance.py); the worst rank's loss;
  - `rank_loss_spread`: how far the ranks' losses are from rank 0's (0 when they agree bit for
    bit, as an all-reduced result must), and `bitwise_unsharded`: whether loss and gradient are
    F.cross_entropy's on the whole logits, bit for bit (torchtitan's test of `loss_parallel`);
  - the collectives counted in forward and in backward, with their bytes (collectives.py), and
    `comm_model_s`: a ring's time for them on a link of `link_gbps`, at the point's tp;
  - time (of the slowest rank: each call ends at a barrier) and peak memory (rank 0's, and
    `rank_peak_mem_bytes`, the largest of the other ranks').

  point.py       the settings (tp among them), validated, and the shards' layout
  inputs.py      the logits, targets (one on every shard) and class weights, as every rank draws them
  reference.py   the float64 loss and gradient of the whole logits
  tolerance.py   the bound
  collectives.py the counting and the communication model
  ranks.py       the helper processes, their calls and their faults
  variants/      megatron (hand-written), all_gather (naive), loss_parallel (PyTorch's DTensor)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.dtypes import DTYPES
from harness.family import Family, Outputs
from harness.loss import verdict
from harness.loss.errors import gradients, incoming, nonfinite_counts, norm_rel_err, rel_err
from harness.loss.options import LossOptions
from harness.measure.isolation import Feed
from harness.registry import Variant

from . import collectives
from .inputs import Inputs, make_inputs, shard
from .point import READS, Point, point
from .ranks import RANKS, Result
from .reference import Reference, reference
from .tolerance import tolerance
from .variants import REGISTRY

NATIVE = "all_gather"  # F.cross_entropy on the whole logits, on every rank: err_vs_native's divisor


@dataclass
class PointInputs:
    """Rank 0's view of a point: the whole inputs (for the references) and its own shard."""

    whole: Inputs
    logits: Tensor  # rank 0's columns, its own tensor: what its variant receives
    targets: Tensor
    class_weight: Tensor | None


@dataclass(frozen=True)
class Unsharded:
    """F.cross_entropy's own loss and gradient on the whole logits (plain options only): what a
    variant claiming bitwise equality with the unsharded PyTorch result is compared with."""

    loss: Tensor | None
    grad: Tensor | None


def _make_inputs(p: Point) -> PointInputs:
    whole = make_inputs(p)
    return PointInputs(whole, shard(whole, p, 0), whole.targets, whole.class_weight)


def _options(p: Point, inputs: PointInputs) -> LossOptions:
    weight = None if inputs.class_weight is None else inputs.class_weight.to(torch.float64)
    return LossOptions.of_point(p.option_values(), weight)


def _unsharded(p: Point, inputs: PointInputs) -> Unsharded:
    """F.cross_entropy on the whole logits with the options it has (None under z-loss or a cap)."""
    if p.z_loss > 0 or p.softcap:
        return Unsharded(None, None)
    z = inputs.whole.logits.detach().clone().requires_grad_()
    loss = F.cross_entropy(
        z,
        inputs.targets,
        weight=inputs.class_weight,
        ignore_index=p.ignore_index,
        label_smoothing=p.label_smoothing,
        reduction=p.reduction,
    )
    (grad,) = gradients(loss, (z,), incoming(loss))
    return Unsharded(loss.detach(), grad)


def _references(p: Point, inputs: PointInputs) -> tuple[Any, Any]:
    """(reference on the rounded logits, with the unsharded PyTorch result beside it; reference
    on the unrounded draw). The unrounded float64 logits are dropped once used."""
    options = _options(p, inputs)
    ref = reference(inputs.whole.logits, inputs.targets, options)
    total = (
        ref
        if inputs.whole.logits_unrounded is None
        else reference(inputs.whole.logits_unrounded, inputs.targets, options)
    )
    inputs.whole.logits_unrounded = None
    return (ref, _unsharded(p, inputs)), total


def _guarded(inputs: PointInputs) -> dict[str, Tensor]:
    """Rank 0's shard and what every rank shares; each helper checks its own shard (ranks.py)."""
    tensors = {"logits": inputs.logits, "targets": inputs.targets}
    if inputs.class_weight is not None:
        tensors["class_weight"] = inputs.class_weight
    return tensors


def _feed(inputs: PointInputs, variant: Variant, p: Point) -> Feed:
    names = sorted(variant.options)
    values = {**p.kwarg_values(), "weight": inputs.class_weight}
    feed = Feed(
        logits=inputs.logits,
        targets=inputs.targets,
        fresh=variant.overwrites_input,
        kwargs={name: values[name] for name in names},
    )
    feed.point, feed.option_names = p, names
    return feed


def fed_call(fn: Callable, feed: Feed, mode: str, backwards: int = 1) -> Callable[[], Outputs]:
    """One repetition: every rank calls the variant on its shard (ranks.py). The first call of
    each (variant, mode) also counts its collectives and each helper's peak memory. Returns
    rank 0's loss, and its gradient shard in fwd_bwd (assess gathers every rank's)."""
    spec = f"{fn.__module__}:{fn.__qualname__}"
    first = [True]

    def run() -> Outputs:
        count, first[0] = first[0], False
        result = RANKS.call(fn, spec, feed, mode, backwards, count)
        return result.loss, result.grad

    return run


def _assess(outputs: Outputs, refs: tuple[Any, Any], p: Point) -> dict[str, Any]:
    (ref, unsharded), total = refs
    results = RANKS.fetch()
    losses = [r.loss.to(torch.float64) for r in results]
    grad = None
    if outputs[1] is not None:
        grad = torch.cat([r.grad.to(results[0].grad.device) for r in results], dim=1)
    nan = inf = 0
    for t in [*losses, *([grad] if grad is not None else [])]:
        a, b = nonfinite_counts(t.reshape(-1))
        nan, inf = nan + a, inf + b
    value = float(losses[0].mean().item())
    cols: dict[str, Any] = {"loss": value, "loss_ref": ref.loss, "nan_count": nan, "inf_count": inf}
    cols.update(_collective_columns(results, p))
    cols["rank_loss_spread"] = max(_loss_err(each, losses[0], p.reduction) for each in losses)
    wrote = [rank for rank, r in enumerate(results) if r.wrote]
    if not ref.finite:
        return {**cols, "status": "no_reference", "message": ref.missing}
    cols["bitwise_unsharded"] = _bitwise(results[0].loss, grad, unsharded)

    def loss_err(reference_: Reference) -> float:
        return max(
            _loss_err(each, reference_.losses if p.reduction == "none" else reference_.loss, p.reduction)
            for each in losses
        )

    tol = tolerance(ref, p.dtype)
    cols.update(loss_rel_err=loss_err(ref), loss_tolerance=tol.loss)
    if total is not None and total.finite:
        cols["loss_rel_err_total"] = loss_err(total)
    if grad is not None:
        cols.update(grad_rel_err=norm_rel_err(grad, ref.grad, ref.grad_norm), grad_tolerance=tol.grad)
        if total is not None and total.finite:
            cols["grad_rel_err_total"] = norm_rel_err(grad, total.grad, total.grad_norm)
    if wrote:
        names = ", ".join(str(r) for r in wrote)
        return {
            **cols,
            "status": "wrote_input",
            "message": f"rank {names} wrote into its logits shard (restored)",
        }
    judged = [(cols["loss_rel_err"], tol.loss), (cols.get("grad_rel_err"), tol.grad)]
    return {**cols, "status": verdict.status(bool(nan or inf), judged), "message": ""}


def _loss_err(loss: Tensor, ref: Any, reduction: str) -> float:
    if reduction == "none":
        ref_t = ref if isinstance(ref, Tensor) else torch.as_tensor(ref)
        diff = torch.linalg.vector_norm(loss.to(torch.float64) - ref_t.to(torch.float64)).item()
        norm = torch.linalg.vector_norm(ref_t.to(torch.float64)).item()
        return diff / norm if norm else diff
    return rel_err(float(loss.item()), float(ref) if not isinstance(ref, Tensor) else float(ref.item()))


def _bitwise(loss: Tensor, grad: Tensor | None, unsharded: Unsharded) -> bool | None:
    if unsharded.loss is None:
        return None
    same = torch.equal(loss.cpu(), unsharded.loss.cpu())
    if grad is not None:
        same = same and torch.equal(grad.cpu(), unsharded.grad.cpu())
    return bool(same)


def _collective_columns(results: list[Result], p: Point) -> dict[str, Any]:
    """Rank 0's counted collectives (every rank issues the same ones, or the message says so)."""
    first = results[0]
    if first.fwd is None:
        return {}
    cols: dict[str, Any] = {
        "collectives_fwd": len(first.fwd),
        "collectives_bwd": len(first.bwd),
        "collective_bytes_fwd": sum(c.payload for c in first.fwd),
        "collective_bytes_bwd": sum(c.payload for c in first.bwd),
        "comm_model_s": collectives.modelled_s(first.fwd + first.bwd, p.tp, p.link_gbps),
        # the same collectives on a ring of 8 (one NVLink node): what a CPU run at tp = 2
        # says of the call at the scale it is run at. An all-reduce's payload (N values) and
        # an all-gather's (the whole N x V) do not depend on tp, but for an all-gather's
        # padding to ceil(V / tp) columns (a few columns of V)
        "comm_model_tp8_s": collectives.modelled_s(first.fwd + first.bwd, 8, p.link_gbps),
        "link_gbps": p.link_gbps,
    }
    peaks = [r.peak for r in results[1:] if r.peak is not None]
    if peaks:
        cols["rank_peak_mem_bytes"] = max(peaks)
    return cols


def _bytes_moved(p: Point, mode: str) -> int:
    """The fewest bytes one rank must move: read its shard (fwd), and write its gradient (fwd_bwd)."""
    n = p.batch_size * max(b - a for a, b in p.shards) * DTYPES[p.dtype].itemsize
    return n if mode == "fwd" else 2 * n


FAMILY = Family(
    name="vocab_parallel_cross_entropy",
    registry=REGISTRY,
    point=point,
    make_inputs=_make_inputs,
    references=_references,
    guarded=_guarded,
    unsupported=Variant.unsupported_at,
    feed=_feed,
    call=fed_call,
    assess=_assess,
    bytes_moved=_bytes_moved,
    compute_floor_s=lambda p, inputs, mode: None,
    reads=READS,
    native=NATIVE,
    second_backward=lambda fn, feed: fed_call(fn, feed, "fwd_bwd", backwards=2),
)
