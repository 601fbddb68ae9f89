"""The vocabulary-parallel variants, each registered where it is defined.

A variant is the code every rank runs on its own shard:

    fn(logits [N, V_r], targets [N], shard: Shard, **options) -> loss

logits: this rank's columns, its own tensor (requires_grad in fwd_bwd); targets: every row's
global class index (replicated, as under tensor parallelism); shard: where the columns sit and
the process group to reduce over. It returns the reduced loss (a scalar, the same on every
rank) or, under reduction none, the [N] per-row losses; the runner differentiates it on every
rank and gathers the ranks' gradients in rank order. Options are received by keyword as in
the other families (the class weights as the replicated [V] vector `weight`).

A user's own variant loads by import path (`variants=[my_pkg.my_mod:my_loss]`) with the same
signature; every rank imports it.

`COLLECTIVES` (in each module): the collectives a built-in variant is expected to issue at a
point, in forward and in backward, which tests/vocab_parallel_cross_entropy/ checks against the
counted ones (collectives.py): the byte model checked against the bytes, not assumed by the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.loss import declared
from harness.registry import Registry

REGISTRY = Registry(
    "vocab_parallel_cross_entropy",
    signature="(logits [N, V_r], targets [N], shard: Shard, **options) -> loss",
    mechanisms={},
    options=declared.variant_kwargs("vocab_parallel_cross_entropy"),
    arity=3,
)
register = REGISTRY.register


@dataclass
class Shard:
    """Where a rank's columns sit, and what it reduces over."""

    rank: int
    tp: int
    start: int  # first global class index of this rank's columns
    stop: int  # one past the last
    num_classes: int  # V, the whole vocabulary
    group: Any  # the torch.distributed ProcessGroup of the tp ranks
    device: str
    _mesh: Any = None

    @property
    def mesh(self) -> Any:
        """A one-dimensional DeviceMesh over the group's ranks (DTensor's), made once."""
        if self._mesh is None:
            from torch.distributed.device_mesh import DeviceMesh

            device_type = self.device.split(":")[0]
            self._mesh = DeviceMesh.from_group(self.group, device_type)
        return self._mesh


from . import dtensor, gathered, megatron  # noqa: E402,F401  (registration order: the reports')
