"""The inputs of a vocabulary-parallel point, drawn in float64 and rounded once to the dtype.

logits [N, V] = logit_scale * N(0, 1); hard targets uniform over the V classes, except that
row r < tp takes the last class of rank r's shard: every shard, the last one included, holds a
target (a bug that only shows when the target is on another rank, or on the narrow last shard,
cannot hide behind a draw). The ignored rows and the class weights are the loss core's draws
(harness/loss/weights.py), from their own streams: the same rows and weights as the other
families' at the same (N, V, seed), and turning an option on changes nothing else.

Each rank draws the same inputs from the point's seed and keeps its own columns: nothing as
large as the logits travels between processes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from harness.dtypes import DTYPES
from harness.loss.weights import IGNORED_ROWS, class_weights, ignore_rows, options_generator


@dataclass
class Inputs:
    logits: Tensor  # [N, V] in the point's dtype, on its device
    targets: Tensor  # [N] int64
    class_weight: Tensor | None  # [V] in the point's dtype, or None
    # [N, V] float64 as drawn (the total error's reference), None at fp64; dropped once used
    logits_unrounded: Tensor | None


def make_inputs(point) -> Inputs:
    g = torch.Generator().manual_seed(point.seed)
    n, v = point.batch_size, point.num_classes
    z = torch.randn(n, v, dtype=torch.float64, generator=g) * point.logit_scale
    y = torch.randint(0, v, (n,), generator=g)
    for r, (_, stop) in enumerate(point.shards[:n]):
        y[r] = stop - 1
    ignore_rows(y, point, options_generator(torch.device("cpu"), point.seed, IGNORED_ROWS))
    weight = class_weights(replace(point, device="cpu"))
    dtype = DTYPES[point.dtype]
    return Inputs(
        logits=z.to(dtype).to(point.device),
        targets=y.to(point.device),
        class_weight=None if weight is None else weight.to(point.device),
        logits_unrounded=None if point.dtype == "fp64" else z.to(point.device),
    )


def shard(inputs: Inputs, point, rank: int) -> Tensor:
    """Rank `rank`'s columns of the logits, as its own contiguous tensor (a rank holds its shard,
    not a view of logits it never had)."""
    start, stop = point.shards[rank]
    return inputs.logits[:, start:stop].contiguous()
