"""The inputs of one point: logits and targets, drawn in float64 and rounded once.

logits = logit_scale * N(0, 1), drawn in float64 from `seed` and cast to the point's dtype;
soft targets = softmax of an independent N(0, 1) draw (the notebook's construction), cast to
the same dtype; hard targets = uniform class indices. Every variant and the float64 reference
receive these same rounded tensors, so the reference measures the algorithm's error alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness.cross_entropy.point import Point

# Independent streams per seed: the logits do not change with the target kind, and the same
# standard-normal draw is reused across logit scales, so a failure boundary in `logit_scale`
# is the boundary of one fixed draw being stretched, not a new coin flip at each scale.
_LOGITS_STREAM, _TARGETS_STREAM = 0, 1


def _generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(2 * seed + stream)


@dataclass
class Inputs:
    logits: Tensor  # [B, C] point dtype, on the point's device
    targets: Tensor  # hard: [B] int64; soft: [B, C] point dtype
    logits_unrounded: Tensor  # [B, C] float64: the draw before rounding (for total error)
    targets_unrounded: Tensor  # hard: the same indices; soft: [B, C] float64 before rounding
    kind: str  # "soft" | "hard"

    def for_variant(self, one_hot: bool) -> Tensor:
        """Targets as a variant takes them: one-hot rows in the logits' dtype if asked."""
        if not one_hot:
            return self.targets
        rows = torch.zeros_like(self.logits)
        return rows.scatter_(1, self.targets[:, None], 1)


def make_inputs(point: Point) -> Inputs:
    device = torch.device(point.device)
    shape = (point.batch_size, point.num_classes)
    z = torch.randn(
        shape, dtype=torch.float64, device=device, generator=_generator(device, point.seed, _LOGITS_STREAM)
    )
    z.mul_(point.logit_scale)
    g = _generator(device, point.seed, _TARGETS_STREAM)
    if point.targets == "soft":
        t64 = torch.randn(shape, dtype=torch.float64, device=device, generator=g).softmax(dim=1)
        targets = t64.to(point.torch_dtype)
    else:
        targets = t64 = torch.randint(point.num_classes, (point.batch_size,), device=device, generator=g)
    return Inputs(
        logits=z.to(point.torch_dtype),
        targets=targets,
        logits_unrounded=z,
        targets_unrounded=t64,
        kind=point.targets,
    )
