"""When a finite linear + cross-entropy result is `inaccurate`: the bound and its reasons.

Unlike the first family, the logits are not an input: every variant forms z = H W^T itself,
and the usual way (F.linear in the input dtype) rounds them to that dtype. A careful
implementation in this dtype cannot avoid, per logit, a relative error of

    e_z = u_d + u_c sqrt(D)

  u_d        the dtype's unit roundoff (2^-8 bf16, 2^-24 fp32): the logits and the returned
             loss, dH and dW are rounded to it once (a bf16 materialised head does this);
  u_c sqrt(D) the fp32 (fp64 for fp64) accumulation of D products, as a random walk of
             roundings: ~ u_c sqrt(D) |z| (the worst case, D u_c, is not seen in practice).

Carried to the results (logits of size up to zmax = the reference's mean max_v |z_bv|):

    loss      K_LOSS * (u_d + (e_z zmax + u_c (zmax + ln V)) loss_per_lse)
    gradient  K_GRAD * (2 u_d + S + u_c sqrt(max(N, V)))                     each of dH, dW, db

  - an absolute error e_z zmax in the logits shifts lse and z_y by as much; u_c (zmax + ln V)
    is lse's own rounding (the first family's loss_magnitude term). loss_per_lse (the
    reference's) says what one unit of such an error in every row costs the reduced loss,
    relatively: 1 / loss for the plain mean; with the options, sum_b (Q_b + 2 z_loss |lse_b|)
    over what the reduction divides by, over the loss (Q_b the row's target mass: the weight of
    its target under class weights), norm-wise over the rows for reduction none;
  - p = exp(z - lse) inherits the logit errors dz less their softmax-weighted mean (lse's
    error): |dp_bv| <= p_bv ((1 - p_bv) d_bv + sum_{j != v} p_bj d_bj) for logit errors
    |dz_bj| <= d_bj = u_d |z_bj| + u_c sqrt(D) max_j |z_bj|. Only the softmax part of
    dZ = P - Y carries it (with the options, the part of dZ in p, z-loss's included, times
    its row coefficient), so S = || that bound, entry by entry || / ||dZ||, which the reference
    sums as u_d and u_c sqrt(D) terms (`soft_error`). A row whose mass sits on one logit moves
    with it: lse shifts by the same error and p barely changes, where the earlier form,
    2 e_z zmax ||P|| / ||dZ||, charged every entry the largest logit's error twice (at bf16,
    scale 10, V = 32000 it was 3.3x this one, and passed ignored rows leaking into dH or dW);
    dZ and the returned gradient are each rounded once (2 u_d); dH sums V products, dW and db
    sum N, in fp32 at best (u_c sqrt of the longer).
    A softcap only shrinks the logits' errors (its derivative is at most 1), so the bound of
    the uncapped logits holds for the capped ones.

K_LOSS = 4, K_GRAD = 2 (harness/loss/verdict.py, every family's): the headroom for what the bound
leaves out. Over `+sweep=linear_cpu` at logit scales 1, 3, 10 and seeds 0-2 (N = 256, D = 128,
V = 4096 and 32000, bf16 and fp32) the worst correct variant sat at 0.46x the loss bound (bf16
materialized, whose loss is returned in bf16) and 0.25x the gradient bound (0.14x at scale 10 in
bf16); over `+sweep=linear_options` on the same scales and seeds (every option and the bias, 180
points) at 0.32x and 0.20x. The bound is norm-wise and judges dH, dW and db separately; it scales
with u_d, so a bf16 variant is never held to fp32. A gradient that misses a whole vocabulary chunk
is off by the chunk's share of ||dW|| (0.5 when a quarter of the classes is left out), far above
it in every dtype; tests/linear_cross_entropy/test_linear_bugs.py has it with the rest of the
family's bug catalogue, and the option bugs the bf16 bound does not flag, with their measured
figures (each below 8x the worst careful variant's error at its point).

Element-wise (K_ENTRY, `entry_units`): each row of dH and each class's row of dW against its
own per-entry bound (reference.py `_EntryBounds`), where a bug confined to one class or row
hides in the norm: docs/linear.md, Element-wise verdicts.
"""

from __future__ import annotations

import math

from harness.dtypes import DTYPES, compute_roundoff, unit_roundoff
from harness.linear_cross_entropy.point import Point
from harness.linear_cross_entropy.reference import Reference
from harness.loss.verdict import K_GRAD, K_LOSS, Tolerance


def tolerance(ref: Reference, point: Point) -> Tolerance:
    u_d, k, u_c = entry_units(point)
    zmax = ref.logit_max
    e_z = u_d + k
    xx, xy, yy = ref.soft_error
    softmax = math.sqrt(max(0.0, u_d * u_d * xx + 2 * u_d * k * xy + k * k * yy))
    return Tolerance(
        loss=K_LOSS * (u_d + (e_z * zmax + u_c * (zmax + math.log(point.num_classes))) * ref.loss_per_lse),
        grad=K_GRAD * (2 * u_d + softmax + u_c * math.sqrt(max(point.batch_size, point.num_classes))),
    )


def entry_units(point: Point) -> tuple[float, float, float]:
    """(u_d, u_c sqrt(D), u_c): the roundoffs both bounds are made of (module docstring)."""
    u_c = compute_roundoff(point.dtype)
    return unit_roundoff(DTYPES[point.dtype]), u_c * math.sqrt(point.hidden_size), u_c
