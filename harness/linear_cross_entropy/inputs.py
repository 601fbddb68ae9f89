"""The inputs of one point: hidden states, a classifier weight (and bias) and targets, drawn in
float64 and rounded once.

  hidden  [N, D] ~ N(0, 1): a normalised final hidden state (what an RMSNorm hands the head).
  weight  [V, D] ~ N(0, logit_scale^2 / D): each logit z_nv = h_n . w_v is then a sum of D
          products of variance logit_scale^2 / D, so z ~ N(0, logit_scale^2) as the first
          family's logits are (std = logit_scale), whatever D is.
  bias    [V] (`bias=true`): the logits' variance is shared half and half, weight ~
          N(0, logit_scale^2 / (2 D)) and bias ~ N(0, logit_scale^2 / 2), so z = h . w + b
          still has std logit_scale; each class gets a fixed offset, as a unigram prior.
  targets [N] uniform class indices, with round(ignore_fraction * N) rows, chosen at random,
          set to ignore_index.
  class weights [V] (`class_weights`): the loss core's draw (harness/loss/weights.py), the
          first family's too: seeded ones uniform in [0.5, 2), rounded to the dtype.

Every variant and the float64 reference receive the same rounded tensors (the reference
measures the algorithm's error alone); the unrounded draw is kept for the total error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.linear_cross_entropy.point import Point
from harness.loss.weights import class_weights, ignore_rows

# Independent streams per seed, as in the first family: the hidden states do not change with V,
# the weight's standard-normal draw is reused across logit scales (a scale is one fixed draw
# stretched), and which rows are ignored comes from a stream of its own.
_HIDDEN_STREAM, _WEIGHT_STREAM, _TARGETS_STREAM, _IGNORE_STREAM = 0, 1, 2, 3
# The bias's draw has a stream of its own, offset by 2^62 as the first family's option draws are
# (harness/loss/weights.py: the class weights, which both families draw, are offset + 2),
# so turning it on leaves the other draws as they were (the weight is the same draw, scaled).
_BIAS_STREAM = 1 << 62


def _generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((4 * seed + stream) % (1 << 63))


@dataclass
class Inputs:
    hidden: Tensor  # [N, D] point dtype, on the point's device
    weight: Tensor  # [V, D] point dtype
    targets: Tensor  # [N] int64, ignore_index on ignored rows
    hidden_unrounded: Tensor | None  # [N, D] float64 before rounding (for the total error)
    weight_unrounded: Tensor | None  # [V, D] float64 before rounding
    bias: Tensor | None = None  # [V] point dtype (bias=true)
    bias_unrounded: Tensor | None = None  # [V] float64 before rounding
    class_weight: Tensor | None = None  # [V] point dtype (class_weights other than none)


def make_inputs(point: Point) -> Inputs:
    device = torch.device(point.device)
    n, d, v = point.batch_size, point.hidden_size, point.num_classes
    h64 = torch.randn(
        (n, d), dtype=torch.float64, device=device, generator=_generator(device, point.seed, _HIDDEN_STREAM)
    )
    w64 = torch.randn(
        (v, d), dtype=torch.float64, device=device, generator=_generator(device, point.seed, _WEIGHT_STREAM)
    )
    share = 0.5 if point.bias else 1.0  # of the logits' variance that comes from the weight
    w64.mul_(point.logit_scale * math.sqrt(share / d))
    b64 = None
    if point.bias:
        g_bias = _generator(device, point.seed, _BIAS_STREAM)
        b64 = torch.randn(v, dtype=torch.float64, device=device, generator=g_bias)
        b64.mul_(point.logit_scale * math.sqrt(1.0 - share))
    g = _generator(device, point.seed, _TARGETS_STREAM)
    targets = torch.randint(v, (n,), device=device, generator=g)
    targets = ignore_rows(targets, point, _generator(device, point.seed, _IGNORE_STREAM))
    return Inputs(
        hidden=h64.to(point.torch_dtype),
        weight=w64.to(point.torch_dtype),
        targets=targets,
        hidden_unrounded=h64,
        weight_unrounded=w64,
        bias=None if b64 is None else b64.to(point.torch_dtype),
        bias_unrounded=b64,
        class_weight=class_weights(point),  # the core's draw: it reads V, seed, dtype, device
    )
