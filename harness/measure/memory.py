"""Peak bytes a call allocates above what existed before it.

CUDA: the caching allocator's own peak statistic, reset before the call and read after.
CPU: PyTorch keeps no allocator statistics, so `LiveStorageTracker` follows every tensor
storage that an ATen operator returns while it is active (a TorchDispatchMode sees every op,
backward ones included) and counts its bytes until Python's weak reference to it dies. A
storage that aliases one of the op's inputs (views, in-place ops, `out=`) is not new and is
not counted; neither is anything that existed before the call. Scratch buffers private to a
single C++ kernel never reach Python and are not seen: the figure is the peak of the tensors
the variant materialises, which is what distinguishes one formulation from another.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    # a fake tensor (DTensor's sharding propagation runs ops on them) allocates nothing
    return [
        t.untyped_storage()
        for t in tree_leaves(tree)
        if isinstance(t, torch.Tensor) and type(t).__name__ != "FakeTensor" and not t.is_meta
    ]


def held_bytes(*holders: Any) -> int:
    """Bytes of the distinct storages the holders keep: the tensors among each one's attributes
    (a dataclass's fields, an object's __dict__; or what its `held()` returns, where it says),
    looking into tuples, lists and dicts there.
    A storage two holders share (the guard's view of the inputs, a reference used twice) counts
    once: the harness's own resident bytes at a point."""
    seen: dict[tuple[str, int], int] = {}
    for holder in holders:
        if hasattr(holder, "held"):
            values = holder.held()
        else:
            values = list(vars(holder).values()) if hasattr(holder, "__dict__") else [holder]
        for s in _storages(values):
            seen[(str(s.device), s.data_ptr())] = s.nbytes()
    return sum(seen.values())


def _data_ptr(storage: torch.UntypedStorage) -> int | None:
    """The storage's address; None for one with no data of its own (the wrapper a functional
    collective returns before it is waited on holds no storage: its result is counted when it
    is materialised)."""
    try:
        return storage.data_ptr()
    except RuntimeError:
        return None


class LiveStorageTracker(TorchDispatchMode):
    """Counts live bytes of the storages created by ops run under it; `peak` is the maximum."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Recent torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo, whose first
        # call imports torch._dynamo: 1.6 s of every harness process on a CPU, most of a tiny
        # sweep's start, for a process that may never compile. The wrapper matters only where
        # Dynamo runs (it must not trace this frame from inside a compiled call):
        # `_CompileSafeTracker` has it, and `tracker()` gives that one once Dynamo is loaded.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.ref] = {}

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if any(getattr(t, "__name__", "") == "DTensor" for t in types):
            # a mode runs before tensor subclasses: let DTensor turn the op into plain ops on
            # its local shards (which come back through here, with real storages) instead of
            # running its sharding propagation on fake tensors under the tracker
            return NotImplemented
        out = func(*args, **(kwargs or {}))
        inputs = {_data_ptr(s) for s in _storages((args, kwargs))}
        for storage in _storages(out):
            key, nbytes = _data_ptr(storage), storage.nbytes()
            if key is None or nbytes == 0 or key in inputs or key in self._tracked:
                continue
            self._tracked[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._release(k, n))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


class _CompileSafeTracker(LiveStorageTracker):
    """The tracker with its dispatch hidden from Dynamo, as torch makes every mode by default."""

    __torch_dispatch__ = torch._disable_dynamo(LiveStorageTracker.__torch_dispatch__, recursive=True)


def tracker() -> LiveStorageTracker:
    """A LiveStorageTracker; the Dynamo-safe one where Dynamo is loaded (a variant's setup
    imports it before its first tracked call: torch.compile runs there)."""
    return _CompileSafeTracker() if "torch._dynamo" in sys.modules else LiveStorageTracker()


def call_with_peak(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """(fn(), peak bytes allocated while it ran above those allocated before it).
    What `fn` returns counts: it is alive when the call ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - base)
    with tracker() as live:
        out = fn()
    return out, live.peak


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated while `fn()` runs, above those allocated before it."""
    return call_with_peak(fn, device)[1]
