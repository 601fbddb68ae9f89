"""The class weights and ignored rows a point draws, and the random streams of the option draws, shared by the
families so that a point with the same (C, seed, dtype, device) gets the same weights in both."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# The option draws (which rows are ignored, the class weights, zipf's ranks) come from streams
# of their own, offset by 2^62 from the families' own streams (each family draws its inputs
# from small stream numbers), so turning an option on changes nothing else about the inputs.
OPTIONS_STREAM = 1 << 62
# What each option draw is, as the stream offset within a seed's four.
RANKS, IGNORED_ROWS, WEIGHTS, MASKED = 0, 1, 2, 3

WEIGHT_RANGE = (0.5, 2.0)  # class weights: uniform in this range (a 4x spread, as frequency weights)
# signed: zero and negative weights as torch allows them, the range PyTorch's OpInfo samples draw
SIGNED_RANGE = (-9.0, 9.0)


def options_generator(device: torch.device, seed: int, what: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((OPTIONS_STREAM + 4 * seed + what) % (1 << 63))


def ignore_rows(targets: Tensor, point: Any, generator: torch.Generator) -> Tensor:
    """`targets` [B] with round(ignore_fraction * B) rows, chosen at random by `generator`, set to
    ignore_index, in place. Reads the point's ignore_fraction, ignore_index and batch_size."""
    n = round(point.ignore_fraction * point.batch_size)
    if n == 0:
        return targets
    rows = torch.randperm(point.batch_size, device=targets.device, generator=generator)[:n]
    return targets.index_fill_(0, rows, point.ignore_index)


def class_weights(point: Any) -> Tensor | None:
    """[C] in the point's dtype, or None: the given weights, or the seeded ones of `seeded`.
    Reads the point's class_weights, num_classes, seed, torch_dtype and device."""
    if point.class_weights == "none":
        return None
    device = torch.device(point.device)
    if isinstance(point.class_weights, tuple):  # given on the command line
        return torch.tensor(point.class_weights, dtype=torch.float64, device=device).to(point.torch_dtype)
    g = options_generator(device, point.seed, WEIGHTS)
    lo, hi = SIGNED_RANGE if point.class_weights == "signed" else WEIGHT_RANGE
    w = torch.rand(point.num_classes, dtype=torch.float64, device=device, generator=g)
    return w.mul_(hi - lo).add_(lo).to(point.torch_dtype)
