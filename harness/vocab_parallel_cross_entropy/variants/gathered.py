"""The naive vocabulary-parallel loss: all-gather the logits, then the unsharded loss on every rank.

Every rank assembles the whole [N, V] (each shard padded to ceil(V / tp) columns, as an
all-gather takes equal sizes, the padding cut off after), computes F.cross_entropy with the
options on it, and keeps its own columns of the gradient. Each rank computes the same loss,
so the backward of the gather is a slice, not a sum over ranks: summing, as
torch.distributed.nn.functional.all_gather's backward does, multiplies the gradient by tp
(tests/vocab_parallel_bugs.py holds that bug). One all-gather of N x V in the input dtype
forward, none backward; the memory of the whole logits on every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from harness.dtypes import DTYPES
from harness.loss.composed import composed_loss
from harness.loss.options import Keywords, LossOptions, Unpack

from . import Shard, register

OPTIONS = {"ignore_index", "label_smoothing", "z_loss", "softcap", "weight", "reduction"}


def COLLECTIVES(point: Any) -> dict[str, list[tuple[str, int]]]:
    width = math.ceil(point.num_classes / point.tp)
    el = DTYPES[point.dtype].itemsize
    return {"fwd": [("all_gather", point.batch_size * width * point.tp * el)], "bwd": []}


def gather_columns(z: Tensor, shard: Shard) -> Tensor:
    """The whole [N, V] from every rank's columns (no autograd)."""
    width = math.ceil(shard.num_classes / shard.tp)
    padded = F.pad(z, (0, width - z.shape[1])).contiguous()
    parts = [torch.empty_like(padded) for _ in range(shard.tp)]
    dist.all_gather(parts, padded, group=shard.group)
    bounds = [
        (min(r * width, shard.num_classes), min((r + 1) * width, shard.num_classes)) for r in range(shard.tp)
    ]
    return torch.cat([part[:, : b - a] for part, (a, b) in zip(parts, bounds)], dim=1)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, shard: Shard) -> Tensor:
        ctx.start, ctx.stop = shard.start, shard.stop
        return gather_columns(z, shard)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # every rank computed the same loss from the same logits: its columns' gradient is its own
        return grad[:, ctx.start : ctx.stop].contiguous(), None


def unsharded_loss(z: Tensor, targets: Tensor, options: LossOptions) -> Tensor:
    """The eager composition of the options (harness/loss/composed.py) on whole logits, computed
    in fp32 (fp64 for fp64), returned in z's dtype. The upcast is passed unnamed, so that the cap
    frees it, as a model's `x = softcap * tanh(x / softcap)` does; this family masks no class."""
    compute = torch.float64 if z.dtype == torch.float64 else torch.float32
    return composed_loss(z.to(compute), targets, options, masked=False).to(z.dtype)


@register(
    "all_gather", options=OPTIONS, description="all-gather the logits, then F.cross_entropy on every rank"
)
def all_gather(logits: Tensor, targets: Tensor, shard: Shard, **options: Unpack[Keywords]) -> Tensor:
    return unsharded_loss(_Gather.apply(logits, shard), targets, LossOptions.of_keywords(options))
