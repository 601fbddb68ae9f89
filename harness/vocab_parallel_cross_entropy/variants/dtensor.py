"""PyTorch's own: F.cross_entropy on a DTensor sharded over the classes, under `loss_parallel()`.

The shards are wrapped as a DTensor with `Shard(1)` on a one-dimensional mesh of the tp ranks
(torch.chunk's layout, which the harness's shards follow, so uneven vocabularies need no
padding); PyTorch's test asserts 3 all-reduces forward and none backward. It takes
ignore_index, class weights and the reductions; label smoothing is "currently not supported"
(its docstring), and z-loss and the softcap are not F.cross_entropy's: `unsupported` rows.
Its backward must run inside `loss_parallel()` as well (outside, aten.nll_loss_backward meets
a DTensor and a plain tensor and raises): the function's `backward_context` says so, and the
family's call differentiates inside it (harness/vocab_parallel_cross_entropy/ranks.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.dtypes import DTYPES
from harness.loss.options import Keywords, Unpack

from . import Shard, register


def COLLECTIVES(point: Any) -> dict[str, list[tuple[str, int]]]:
    """The row max and the sum of exponentials in the computation dtype (fp32 for fp16/bf16, as
    torch._decomp's _log_softmax), then the target's log-probability in the *input* dtype: the
    log-softmax is rounded back to it before the loss (a bf16 point's third all-reduce is 2
    bytes a row; the counted bytes showed it)."""
    compute = 8 if point.dtype == "fp64" else 4
    n = point.batch_size
    return {
        "fwd": [
            ("all_reduce", n * compute),
            ("all_reduce", n * compute),
            ("all_reduce", n * DTYPES[point.dtype].itemsize),
        ],
        "bwd": [],
    }


@register(
    "loss_parallel",
    options={"ignore_index", "weight", "reduction"},
    description="torch.distributed.tensor.parallel.loss_parallel over a DTensor sharded on the classes",
)
def loss_parallel(logits: Tensor, targets: Tensor, shard: Shard, **options: Unpack[Keywords]) -> Tensor:
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor import Shard as ShardPlacement
    from torch.distributed.tensor.parallel import loss_parallel as parallel

    n, v = logits.shape[0], shard.num_classes
    dt = DTensor.from_local(
        logits, shard.mesh, [ShardPlacement(1)], run_check=False, shape=torch.Size([n, v]), stride=(v, 1)
    )
    with parallel():
        loss = F.cross_entropy(dt, targets, **options)  # ignore_index, weight, reduction: its own
    return loss.to_local() if isinstance(loss, DTensor) else loss


def _backward_context() -> Any:
    from torch.distributed.tensor.parallel import loss_parallel as parallel

    return parallel()


loss_parallel.backward_context = _backward_context
