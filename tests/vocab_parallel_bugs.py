"""Bugs of vocabulary-parallel cross-entropy, each as the code that made it, for the tests to
prove the family's verdicts flag them (tests/vocab_parallel_cross_entropy/).

Each is the Megatron-style loss (three all-reduces: the row max, the sum of exponentials, the
target logit) written with autograd, with one thing wrong:

  local_label_smoothing   eps spread over the rank's own classes, not all V: at TP=8 the loss
                          was about 1% off torch's (bigscience Megatron-DeepSpeed #394)
  max_not_all_reduced     each rank shifts by its own row max and sums exp(z - m_r) with the
                          others' as if on one scale
  grad_scaled_by_tp       the sums reduced with torch.distributed.nn.functional.all_reduce, whose
                          backward all-reduces the gradient again: every rank computed the same
                          loss, so each shard's gradient comes out tp times too large
  ignore_on_one_shard     only rank 0 masks the ignored rows; the others count them, with a
                          target logit of 0, and divide by every row

The correct form, `sharded_loss(..)` with no flag, is in the tests as a control: the same code
with nothing wrong is `ok` wherever the bugs are judged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _SumAcrossRanks(torch.autograd.Function):
    """All-reduce SUM forward; backward the gradient as it is. Right when every rank computes the
    same loss from the sum: d loss / d (this rank's term) is d loss / d sum, on every rank."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def sharded_loss(
    logits: Tensor,
    targets: Tensor,
    shard,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    *,
    local_max: bool = False,
    local_smoothing: bool = False,
    autograd_all_reduce: bool = False,
    ignore_on_rank0_only: bool = False,
) -> Tensor:
    if autograd_all_reduce:
        from torch.distributed.nn.functional import all_reduce

        def total(x: Tensor) -> Tensor:
            return all_reduce(x, group=shard.group)
    else:

        def total(x: Tensor) -> Tensor:
            return _SumAcrossRanks.apply(x, shard.group)

    x = logits.float()
    m = x.detach().amax(dim=1)
    if not local_max:
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=shard.group)
    lse = m + torch.log(total(torch.exp(x - m[:, None]).sum(dim=1)))
    kept = targets != ignore_index
    if ignore_on_rank0_only and shard.rank != 0:
        kept = torch.ones_like(kept)
    here = kept & (targets >= shard.start) & (targets < shard.stop)
    local = torch.where(here, targets - shard.start, 0)
    z_y = total(torch.where(here, x.gather(1, local[:, None])[:, 0], 0.0))
    loss = lse - z_y
    eps = label_smoothing
    if eps > 0:
        if local_smoothing:  # the mean over this rank's classes stands for the mean over V
            smooth = lse - x.sum(dim=1) / x.shape[1]
        else:
            smooth = lse - total(x.sum(dim=1)) / shard.num_classes
        loss = (1 - eps) * loss + eps * smooth
    loss = loss * kept
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = loss.sum()
    else:
        out = loss.sum() / kept.sum()
    return out.to(logits.dtype)


def correct(logits, targets, shard, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return sharded_loss(logits, targets, shard, ignore_index, label_smoothing, reduction)


def local_label_smoothing(logits, targets, shard, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return sharded_loss(
        logits, targets, shard, ignore_index, label_smoothing, reduction, local_smoothing=True
    )


def max_not_all_reduced(logits, targets, shard, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return sharded_loss(logits, targets, shard, ignore_index, label_smoothing, reduction, local_max=True)


def grad_scaled_by_tp(logits, targets, shard, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return sharded_loss(
        logits, targets, shard, ignore_index, label_smoothing, reduction, autograd_all_reduce=True
    )


def ignore_on_one_shard(logits, targets, shard, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return sharded_loss(
        logits, targets, shard, ignore_index, label_smoothing, reduction, ignore_on_rank0_only=True
    )


BUGS = ("local_label_smoothing", "max_not_all_reduced", "grad_scaled_by_tp", "ignore_on_one_shard")
for _fn in (correct, local_label_smoothing, max_not_all_reduced, grad_scaled_by_tp, ignore_on_one_shard):
    _fn.harness_options = {"ignore_index", "label_smoothing", "reduction"}
