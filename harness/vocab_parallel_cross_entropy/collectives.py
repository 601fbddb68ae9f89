"""Collectives counted as they are called, and the time they would take on a stated link.

`Counted` is a TorchDispatchMode: every collective a variant issues (torch.distributed's
c10d ops, and the functional collectives DTensor and torch.compile use) passes through the
dispatcher, so it is seen whatever Python API called it, with its payload. Nothing is
assumed from a variant's name: the rows' collective counts and bytes are what was called.

The payload of a collective is the bytes of its result on one rank: the tensor all-reduced,
the whole tensor an all-gather assembles, the shard a reduce-scatter leaves. The modelled time
is a ring's (the algorithm NCCL uses for large payloads on NVLink): an all-reduce sends
2 (tp - 1) / tp of its payload over each rank's link in 2 (tp - 1) steps, an all-gather or a
reduce-scatter (tp - 1) / tp in tp - 1 steps (a reduce-scatter's payload is the shard, so its
bytes are (tp - 1) times it), each step paying the link's latency. At tp = 1 a collective
moves nothing. tests/vocab_parallel_cross_entropy/ checks the counts and bytes against each
built-in variant's declared collectives (variants/*.py, `COLLECTIVES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# one ring step's latency on NVLink (a few microseconds: NCCL's own tuning model uses 0.6-5 us
# per hop); the bandwidth term dominates from about 100 kB on
LINK_LATENCY_S = 2e-6

_KINDS = {
    "allreduce_": "all_reduce",
    "all_reduce": "all_reduce",
    "all_reduce_": "all_reduce",
    "allgather_": "all_gather",
    "_allgather_base_": "all_gather",
    "allgather_into_tensor_coalesced_": "all_gather",
    "all_gather_into_tensor": "all_gather",
    "all_gather_into_tensor_out": "all_gather",
    "reduce_scatter_": "reduce_scatter",
    "_reduce_scatter_base_": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter",
    "broadcast_": "broadcast",
    "broadcast": "broadcast",
    "alltoall_": "all_to_all",
    "alltoall_base_": "all_to_all",
    "all_to_all_single": "all_to_all",
}
_NAMESPACES = ("c10d", "_c10d_functional", "c10d_functional")


@dataclass(frozen=True)
class Collective:
    kind: str  # all_reduce | all_gather | reduce_scatter | broadcast | all_to_all
    payload: int  # bytes of the result on one rank


class Counted(TorchDispatchMode):
    """Records each collective dispatched while it is active, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Collective] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(getattr(t, "__name__", "") == "DTensor" for t in types):
            # a mode runs before tensor subclasses: let DTensor desugar the op into plain ops
            # and collectives first, which then come back through here (CommDebugMode does this)
            return NotImplemented
        out = func(*args, **(kwargs or {}))
        if isinstance(func, torch._ops.HigherOrderOperator):
            return out
        ns, name = func.namespace, func._schema.name.split("::")[-1]
        kind = _KINDS.get(name) if ns in _NAMESPACES else None
        if kind is not None:
            self.calls.append(Collective(kind, _payload(kind, name, args, out)))
        return out


def _tensors(x) -> list:
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _payload(kind: str, name: str, args: tuple, out) -> int:
    if kind == "all_gather" and name in ("allgather_", "_allgather_base_"):
        return _nbytes(_tensors(args[0]))  # the output list (or tensor) it fills
    if kind == "all_gather":
        return (
            _nbytes(_tensors(out))
            if name != "allgather_into_tensor_coalesced_"
            else _nbytes(_tensors(args[0]))
        )
    if kind == "reduce_scatter" and name in ("reduce_scatter_", "_reduce_scatter_base_"):
        return _nbytes(_tensors(args[0]))  # the shard it leaves
    if kind == "reduce_scatter":
        return _nbytes(_tensors(out))
    return _nbytes(_tensors(args[0]))


def wire_bytes(c: Collective, tp: int) -> float:
    """Bytes one rank sends over its link for `c` in a ring of tp ranks."""
    if tp <= 1:
        return 0.0
    if c.kind == "all_reduce":
        return 2.0 * (tp - 1) / tp * c.payload
    if c.kind == "reduce_scatter":
        return (tp - 1) * c.payload
    return (tp - 1) / tp * c.payload  # all-gather, broadcast (pipelined), all-to-all


def steps(c: Collective, tp: int) -> int:
    if tp <= 1:
        return 0
    return 2 * (tp - 1) if c.kind == "all_reduce" else tp - 1


def modelled_s(calls: list[Collective], tp: int, link_gbps: float) -> float:
    """The ring's time for `calls` on links of link_gbps (GB/s each way), latency included."""
    return sum(wire_bytes(c, tp) / (link_gbps * 1e9) + steps(c, tp) * LINK_LATENCY_S for c in calls)
