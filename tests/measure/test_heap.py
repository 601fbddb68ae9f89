"""The heap policy of accuracy-only runs (harness/heap.py): freed blocks are reused, not faulted in
again, and only where nothing is timed."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from harness import heap, job

from ..conftest import python_c

# Where a 48 MiB block comes from: glibc's count of bytes in mmapped chunks (mallinfo2's hblkhd)
# grows by it when the block is mapped on its own (by default: above the adjusting threshold's
# 32 MiB ceiling, so fresh pages at every allocation), and not at all when the heap serves it
MAPPED = (
    "import ctypes, sys, torch\n"
    "from harness import heap\n"
    "class Info(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',\n"
    "                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
    "libc = ctypes.CDLL('libc.so.6')\n"
    "libc.mallinfo2.restype = Info\n"
    "if sys.argv[1] == 'kept':\n"
    "    assert heap.keep_freed_blocks() and heap.keep_freed_blocks()  # once, then a no-op\n"
    "before = libc.mallinfo2().hblkhd\n"
    "block = torch.empty(6 << 20, dtype=torch.float64)\n"
    "print(libc.mallinfo2().hblkhd - before)\n"
)


def _mapped(kind: str) -> int:
    return int(python_c(MAPPED, kind))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_a_block_below_the_threshold_comes_from_the_heap():
    assert _mapped("default") >= 48 << 20  # mapped on its own: fresh pages, unmapped when freed
    assert _mapped("kept") == 0  # from the heap, where a freed block is found again
    assert heap.HEAP_BLOCK_BYTES > 1 << 25  # above a block of the draw (2^22 float64 elements)


@pytest.mark.parametrize("timed", [True, False])
def test_only_an_accuracy_only_job_keeps_freed_blocks(monkeypatch, timed):
    calls = []
    monkeypatch.setattr(heap, "keep_freed_blocks", lambda: calls.append(1) or True)
    job.run([], [], SimpleNamespace(enabled=timed, call_timeout_s=None), SimpleNamespace(enabled=False), {})
    assert calls == ([] if timed else [1])


# A freed 48 MiB block stays resident in a kept heap (that is the point of keeping it) until the
# heap's free pages are given back, as a walk of a large draw does at its end.
# `before_a_call`: as the runner gives them back (heap.give_back_kept), before a call that moves
# HEAP_BLOCK_BYTES or more, and only in a kept heap.
RESIDENT = (
    "import sys, torch\n"
    "from harness import heap\n"
    "def rss():\n"
    "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) << 10\n"
    "big, before_a_call = heap.HEAP_BLOCK_BYTES, sys.argv[1] == 'before_a_call'\n"
    "assert not (before_a_call and heap.give_back_kept(big))  # glibc's own trimming: nothing to do\n"
    "assert heap.keep_freed_blocks()\n"
    "block = torch.ones(6 << 20, dtype=torch.float64)\n"
    "small = torch.ones(1 << 10)  # above it: the heap's top cannot shrink past a live block\n"
    "del block\n"
    "assert not (before_a_call and heap.give_back_kept(big - 1))  # a small call reuses the blocks\n"
    "kept = rss()\n"
    "assert heap.give_back_kept(big) if before_a_call else heap.give_back_free_pages()\n"
    "print(kept - rss())\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
@pytest.mark.parametrize("how", ["free_pages", "before_a_call"])
def test_giving_back_the_free_pages_unmaps_a_freed_block_of_a_kept_heap(how):
    assert int(python_c(RESIDENT, how)) > 40 << 20


def test_the_harness_gives_its_freed_blocks_back_before_each_untimed_call(monkeypatch):
    # What the references and the guard freed is not resident under a call's own peak: a trim
    # before every (variant, mode)'s call and before the native op's untimed one.
    import torch

    from harness import runner
    from harness.cross_entropy.point import Point
    from harness.cross_entropy.variants import REGISTRY
    from harness.registry import Variant

    events = []
    monkeypatch.setattr(heap, "give_back_kept", lambda call_bytes: events.append("trim") or True)

    def plain(logits, targets):
        events.append("call")
        return torch.nn.functional.cross_entropy(logits, targets)

    off = SimpleNamespace(enabled=False)
    point = Point(64, 1000, "fp32", 3.0, "cpu", "hard", 0)
    rows = runner.run_point(point, [Variant("plain", plain)], off, off, {})
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert events[:4] == ["trim", "call", "trim", "call"]  # fwd, then fwd_bwd (then its checks' calls)
    assert events[-1] == "trim"  # then the native op's untimed call (its own function, not `plain`)
    assert "torch_cross_entropy" in REGISTRY and all(e in ("trim", "call") for e in events)
