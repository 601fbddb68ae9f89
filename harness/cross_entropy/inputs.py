"""The inputs of one point: logits and targets, drawn in float64 and rounded once.

Logits (the `logits` setting):
  normal  logit_scale * N(0, 1), the notebook's draw.
  zipf    LLM-like rows: z_bc = logit_scale * (-ZIPF_ALPHA * ln r_bc + ZIPF_NOISE * N(0, 1)), where
          r_b is a random permutation of the ranks 1..C (each row has its own top classes). A
          trained language model's next-token distribution is like this: a few classes hold most
          of the mass and the loss sits near 2-3 nats. With alpha = 1.6 and noise 0.5 the rows'
          entropy is 2.4-2.7 nats and the top class holds ~0.44 at C = 1000, 32000 and 128256
          (measured on 16 rows each), and hard targets are drawn from each row's own softmax, so
          the mean loss is that entropy: the range of a real model, where Gaussian logits give
          ln C + s^2/2 (7-12 nats).
Targets: soft = softmax of an independent N(0, 1) draw (the notebook's construction), cast to
the point's dtype; hard = uniform class indices (normal logits) or drawn from the row's softmax
(zipf logits), with round(ignore_fraction * B) rows, chosen at random, set to ignore_index.
Class weights (`class_weights=seeded`): uniform in [0.5, 2) per class, rounded to the dtype.

Every variant and the float64 reference receive these same rounded tensors, so the reference
measures the algorithm's error alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness.cross_entropy.point import Point
from harness.loss.weights import IGNORED_ROWS, RANKS, class_weights, options_generator

# Independent streams per seed: the logits do not change with the target kind, and the same
# standard-normal draw is reused across logit scales, so a failure boundary in `logit_scale`
# is the boundary of one fixed draw being stretched, not a new coin flip at each scale.
_LOGITS_STREAM, _TARGETS_STREAM = 0, 1
# The option draws (which rows are ignored, the class weights, zipf's ranks) come from the loss
# core's streams (harness/loss/weights.py), so turning an option on changes nothing else.

ZIPF_ALPHA = 1.6  # the logit of the class of rank r is -alpha ln r (+ noise)
ZIPF_NOISE = 0.5  # standard deviation of the per-logit noise, in nats
# Rows per block when shuffling zipf ranks: about 2^22 elements of float64/int64 temporaries.
_BLOCK_ELEMENTS = 1 << 22


def _generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(2 * seed + stream)


def _zipf_logits(point: Point, device: torch.device, g: torch.Generator) -> Tensor:
    """[B, C] float64: -alpha ln(rank) + noise * N(0, 1), ranks shuffled per row, times the scale."""
    b, c = point.batch_size, point.num_classes
    z = torch.randn((b, c), dtype=torch.float64, device=device, generator=g).mul_(ZIPF_NOISE)
    log_rank = torch.arange(1, c + 1, dtype=torch.float64, device=device).log_().mul_(-ZIPF_ALPHA)
    ranks = options_generator(device, point.seed, RANKS)
    step = max(1, _BLOCK_ELEMENTS // c)
    for lo in range(0, b, step):
        hi = min(lo + step, b)
        order = torch.rand((hi - lo, c), dtype=torch.float64, device=device, generator=ranks).argsort(dim=1)
        z[lo:hi] += log_rank[order]
    return z.mul_(point.logit_scale)


def _softmax_draw(z: Tensor, g: torch.Generator) -> Tensor:
    """One class per row drawn from softmax(z_b) (float64), in blocks of rows."""
    out = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    step = max(1, _BLOCK_ELEMENTS // z.shape[1])
    for lo in range(0, z.shape[0], step):
        hi = min(lo + step, z.shape[0])
        out[lo:hi] = torch.multinomial(z[lo:hi].softmax(dim=1), 1, generator=g)[:, 0]
    return out


def _ignore_rows(targets: Tensor, point: Point) -> Tensor:
    """round(ignore_fraction * B) rows, chosen at random, get ignore_index."""
    n = round(point.ignore_fraction * point.batch_size)
    if n == 0:
        return targets
    g = options_generator(targets.device, point.seed, IGNORED_ROWS)
    rows = torch.randperm(point.batch_size, device=targets.device, generator=g)[:n]
    return targets.clone().index_fill_(0, rows, point.ignore_index)


@dataclass
class Inputs:
    logits: Tensor  # [B, C] point dtype, on the point's device
    targets: Tensor  # hard: [B] int64; soft: [B, C] point dtype
    # The draw before rounding, for the total error's reference (dropped once it is made):
    logits_unrounded: Tensor | None  # [B, C] float64
    targets_unrounded: Tensor | None  # hard: the same indices; soft: [B, C] float64
    kind: str  # "soft" | "hard"
    weight: Tensor | None = None  # [C] class weights in the point's dtype (class_weights=seeded)

    def for_variant(self, one_hot: bool) -> Tensor:
        """Targets as a variant takes them: one-hot rows in the logits' dtype if asked."""
        if not one_hot:
            return self.targets
        rows = torch.zeros_like(self.logits)
        return rows.scatter_(1, self.targets[:, None], 1)  # (no ignored rows: such variants are unsupported)


def make_inputs(point: Point) -> Inputs:
    device = torch.device(point.device)
    shape = (point.batch_size, point.num_classes)
    g_logits = _generator(device, point.seed, _LOGITS_STREAM)
    if point.logits == "zipf":
        z = _zipf_logits(point, device, g_logits)
    else:
        z = torch.randn(shape, dtype=torch.float64, device=device, generator=g_logits)
        z.mul_(point.logit_scale)
    g = _generator(device, point.seed, _TARGETS_STREAM)
    if point.targets == "soft":
        t64 = torch.randn(shape, dtype=torch.float64, device=device, generator=g).softmax(dim=1)
        targets = t64.to(point.torch_dtype)
    else:
        if point.logits == "zipf":  # the model's own distribution: the loss is the rows' entropy
            targets = _softmax_draw(z, g)
        else:
            targets = torch.randint(point.num_classes, (point.batch_size,), device=device, generator=g)
        targets = t64 = _ignore_rows(targets, point)
    return Inputs(
        logits=z.to(point.torch_dtype),
        targets=targets,
        logits_unrounded=z,
        targets_unrounded=t64,
        kind=point.targets,
        weight=class_weights(point),
    )
