"""Items made one ahead in a second thread (harness/loss/ahead.py), and the draw made that way
(harness/cross_entropy/inputs.py Draw): the same items, one ahead at most, the thread gone and
the caller's threads given back however the walk ends."""

from __future__ import annotations

import importlib
import threading
import time

import pytest
import torch

from harness import heap
from harness.cross_entropy.inputs import make_inputs
from harness.cross_entropy.point import Point
from harness.loss.ahead import ahead


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "harness-ahead"]


def _counted(n: int, made: list[int], where: list[int] | None = None, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"block {i} cannot be made")
        made[0] += 1
        if where is not None:
            where.append(threading.get_ident())
        yield i


def test_the_items_come_in_order_from_another_thread_which_ends_with_them(two_threads):
    made, where = [0], []
    assert list(ahead(_counted(50, made, where))) == list(range(50))
    assert set(where) == {where[0]} and where[0] != threading.get_ident()  # one thread, not the caller
    assert _producers() == [] and torch.get_num_threads() == 2


def test_one_item_is_made_ahead_and_no_more(two_threads):
    # The caller holds item i: the producer has made i + 1 (the overlap) and waits; a queue
    # would have made i + 2 or more (one more block of the draw alive per item queued).
    made = [0]
    for i in ahead(_counted(6, made)):
        ahead_by = min(i + 2, 6)
        deadline = time.monotonic() + 5.0
        while made[0] < ahead_by and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)  # room to make one too many
        assert made[0] == ahead_by, (i, made[0])


def test_while_it_runs_the_caller_has_one_thread_fewer(two_threads):
    seen = [torch.get_num_threads() for _ in ahead(iter(range(3)))]
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    # a producer inside another's shares its core: the caller's threads are left alone
    assert [torch.get_num_threads() for _ in ahead(iter(range(3)), spare_core=False)] == [2, 2, 2]


def test_the_producer_makes_its_items_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:

        def counts():
            for _ in range(3):
                yield torch.get_num_threads()

        assert list(ahead(counts())) == [1, 1, 1]
        assert torch.get_num_threads() == 4  # the caller's, given back
    finally:
        torch.set_num_threads(before)


def test_an_error_in_the_producer_is_raised_in_the_caller_at_its_item(two_threads):
    got = []
    with pytest.raises(ValueError, match="block 3 cannot be made"):
        for i in ahead(_counted(10, [0], fail_at=3)):
            got.append(i)
    assert got == [0, 1, 2]
    assert _producers() == [] and torch.get_num_threads() == 2


def test_leaving_early_stops_the_producer_and_closes_its_items(two_threads):
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    walk = ahead(endless())
    assert [next(walk), next(walk)] == [0, 1]
    walk.close()  # a consumer that breaks out, or an exception in it
    assert closed == [True] and _producers() == [] and torch.get_num_threads() == 2


def test_a_walk_of_the_draw_left_early_stops_both_producers(monkeypatch, two_threads):
    # Soft targets are made in a producer of their own, read by the logits' producer: leaving
    # the walk must stop both (else one waits, holding a block, until it is collected).
    monkeypatch.setattr(inputs_module, "_BLOCK_ELEMENTS", 64)
    given_back = []
    monkeypatch.setattr(heap, "give_back_free_pages", lambda: given_back.append(1))
    walk = make_inputs(DRAWS[0]).draw.blocks()
    assert given_back == [1]  # the filling walk's end
    next(walk)
    assert len(_producers()) == 2
    walk.close()
    assert _producers() == [] and torch.get_num_threads() == 2
    assert given_back == [1, 1]  # its blocks' pages are not left under the next call


def test_with_one_thread_the_caller_makes_the_items_itself():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        where = []
        assert list(ahead(_counted(4, [0], where))) == [0, 1, 2, 3]
        assert set(where) == {threading.get_ident()}
    finally:
        torch.set_num_threads(before)


inputs_module = importlib.import_module("harness.cross_entropy.inputs")

# Points whose draw spans several blocks of 64 elements, with every per-block part of the draw:
# soft targets (their own producer), zipf's ranks, masked classes, a set target probability,
# an offset and padded columns.
DRAWS = [
    Point(7, 50, "bf16", 3.0, "cpu", "soft", seed=1),
    Point(9, 20, "fp32", 1.0, "cpu", "hard", seed=3, logits="zipf"),
    Point(9, 20, "fp16", 2.0, "cpu", "hard", seed=4, mask_fraction=0.25, target_confidence=0.9),
    Point(9, 20, "fp32", 2.0, "cpu", "soft", seed=5, logit_offset=30.0),
    Point(9, 20, "bf16", 2.0, "cpu", "hard", seed=6, pad_vocab_to=32),
]


@pytest.mark.parametrize("point", DRAWS, ids=lambda p: p.label())
def test_a_draw_made_ahead_is_the_callers_draw_bit_for_bit(point, monkeypatch, two_threads):
    monkeypatch.setattr(inputs_module, "_BLOCK_ELEMENTS", 64)
    calls = []
    monkeypatch.setattr(inputs_module, "ahead", lambda *a, **k: calls.append(1) or ahead(*a, **k))
    threaded = list(make_inputs(point).draw.blocks())
    made_ahead = len(calls)
    assert made_ahead and len(threaded) > 1  # the premise: several blocks, made ahead
    torch.set_num_threads(1)
    serial = list(make_inputs(point).draw.blocks())
    assert len(calls) == made_ahead  # with one thread, by the caller
    for (rows, z, t), (rows_s, z_s, t_s) in zip(threaded, serial, strict=True):
        assert rows == rows_s
        assert torch.equal(z.view(torch.int64), z_s.view(torch.int64))  # -inf and -0.0 too
        assert (t is None) == (t_s is None) and (t is None or torch.equal(t, t_s))


def test_a_recycled_buffer_is_written_again_only_when_no_view_of_it_is_alive():
    from harness.loss.ahead import Recycled

    buffers = Recycled(torch.float64, torch.device("cpu"))
    first = buffers.empty((4, 8)).fill_(1.0)
    at = first.data_ptr()
    kept = first[1:3]  # a slice the caller still reads
    del first
    second = buffers.empty((4, 8))
    assert second.data_ptr() != at and bool((kept == 1.0).all())  # a new buffer: the old one is read
    del kept, second
    third = buffers.empty((4, 8))  # both free now: one of them again, no third allocation
    assert len({b.data_ptr() for b, _ in buffers._owned}) == 2
    assert third.data_ptr() in {b.data_ptr() for b, _ in buffers._owned}
    assert buffers.empty((2, 8)).shape == (2, 8)  # another shape: a buffer of its own
