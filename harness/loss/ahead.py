"""An iterator's next item made in a second thread while the caller uses this one.

A point's float64 draw is serial work on a CPU: torch's `normal_` fills uniforms, then calls
libm's log, sin and cos one value at a time (16 ns an element: 1.2 s for the logits of
B = 2048, C = 32768, as much again for soft targets), and every walk of the draw makes it again
(harness/cross_entropy/inputs.py). The references that read the blocks are the other half of a
walk's work. Made one block ahead in a second thread, with the caller's torch threads one fewer
meanwhile, the two halves share the cores: that point, fp32, soft targets, one variant, accuracy
only, took 10.5-12.4 s and takes 8.0-9.5 s; with hard targets 5.7-7.5 s and 4.7-5.4 s (fp32),
5.3-7.0 s and 4.7-5.3 s (bf16), on the 2-core machine (docs/operations.md).

What this promises, since the items are a seeded draw's blocks:
  - the same items in the same order: the iterator runs in one thread, start to end, as it would
    in the caller's (its generators are consumed in order; each block's values do not depend on
    the threads that make them, tests/loss/test_ahead.py);
  - one item made ahead at most: the next is begun when the caller takes this one, so besides
    the caller's block one more is alive (32 MiB of float64 per drawn tensor), not a queue;
  - the thread ends with the walk: at the last item, at an error (raised in the caller, at the
    item where it happened), or when the caller stops early (the item being made is finished
    first, at most one block's time); nothing runs behind a later timed call;
  - the caller's torch threads are put back as they were.
"""

from __future__ import annotations

import threading
from typing import Iterator, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

_END = object()  # the producer's last hand-off: no more items (or an error)


# The number of tensors that share a storage (c10's use count; private, so looked up, and
# without it every block is new).
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _users(t: Tensor) -> int:
    return _use_count(t.untyped_storage()._cdata)


class Recycled:
    """Buffers a producer fills again once nothing refers to them: `empty(shape)` is a view of
    one whose every earlier view has died, else of a new one. A thread that allocates 32 MiB
    blocks while the caller allocates and frees its 2 MiB temporaries fragments glibc's heap:
    the caller's temporaries take the holes the blocks leave, each new block extends the heap,
    and a walk of the soft point (fp32, B = 2048, C = 32768) grew the process by 0.5-0.9 GB
    where one thread kept it at 0.47 GB. Reused, a walk's blocks stay 2-4 a stream. A view
    alive anywhere (the caller's block, a slice of it, a list that keeps it) holds its buffer:
    it is never written while it can be read."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self._dtype, self._device = dtype, device
        self._owned: list[tuple[Tensor, int]] = []  # (buffer, its users with no view alive)

    def empty(self, shape: tuple[int, ...]) -> Tensor:
        for buf, alone in self._owned:
            if buf.shape == shape and _users(buf) == alone:
                return buf.view(shape)
        buf = torch.empty(shape, dtype=self._dtype, device=self._device)
        if _use_count is not None:
            self._owned.append((buf, _users(buf)))
        return buf.view(shape)


class _Handoff:
    """One slot between the producer thread and the caller: `made` when the slot holds an item
    (or the end), `wanted` when the caller has taken it and the next may be begun."""

    def __init__(self, items: Iterator) -> None:
        self._items = items
        self._made = threading.Semaphore(0)
        self._wanted = threading.Semaphore(0)
        self._slot: object = None
        self._error: BaseException | None = None
        self._stopping = False

    def produce(self) -> None:
        """The producer thread: makes each item when the last one was taken, its own ops (a
        block's scaling, its softmax) on one thread: the caller's threads have the other cores.
        (A new thread would otherwise start torch's intra-op team at the caller's count: on a
        16-core machine 15 more threads per producer, beside the caller's 15.)"""
        torch.set_num_threads(1)
        try:
            for item in self._items:
                self._slot = item
                del item  # the slot holds it alone: taken, it is the caller's
                self._made.release()
                self._wanted.acquire()
                if self._stopping:
                    return
            self._slot = _END
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            self._error, self._slot = e, _END
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:  # a generator's own cleanup (a nested `ahead` stops its thread)
                close()
        self._made.release()

    def take(self) -> object:
        """The caller: the next item (_END after the last), the next one begun meanwhile."""
        self._made.acquire()
        item, self._slot = self._slot, None
        if self._error is not None:
            raise self._error
        if item is not _END:
            self._wanted.release()
        return item

    def stop(self) -> None:
        """The caller leaves: the producer ends at its next hand-off."""
        self._stopping = True
        self._wanted.release()


def ahead(items: Iterator[T], spare_core: bool = True) -> Iterator[T]:
    """`items`, each made in a second thread while the caller uses the one before (module
    docstring). spare_core: the caller's torch intra-op threads are one fewer while it runs (the
    producer's core), and with one (the job was given one core: num_threads=1) there is none to
    spare: the items are made in the caller's thread, as without this. False: a producer started
    inside another's, which took the spare core already (and whose thread would read its lowered
    count): always a thread, the caller's threads left alone."""
    threads = torch.get_num_threads()
    if spare_core and threads < 2:
        yield from items
        return
    handoff = _Handoff(items)
    worker = threading.Thread(target=handoff.produce, name="harness-ahead", daemon=True)
    if spare_core:
        torch.set_num_threads(threads - 1)
    worker.start()
    try:
        while (item := handoff.take()) is not _END:
            yield item
            del item  # the caller's next request: it has moved on from this one
    finally:
        handoff.stop()
        worker.join()
        if spare_core:
            torch.set_num_threads(threads)
