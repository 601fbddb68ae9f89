"""The interleaved timer: round-robin order, sample counts, companions, relative samples,
failures of one slot, and the run-queue wait beside each sample."""

from __future__ import annotations

import time
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from harness.measure import timing
from harness.measure.environment import queue_wait_s
from harness.measure.timing import Slot, paired_ratios, time_interleaved

CPU = torch.device("cpu")


def _slot(log: list[str], name: str, **kw) -> Slot:
    return Slot(fn=lambda: log.append(name), **kw)


def test_every_round_calls_each_slot_once_in_order():
    log: list[str] = []
    slots = [_slot(log, "a"), _slot(log, "b"), _slot(log, "c")]
    time_interleaved(slots, CPU, warmup=1, min_reps=3, min_time_s=0.0, max_reps=100)
    # a warm-up round, then rounds a b c, a b c, ...: a busy spell falls on all
    assert log == ["a", "b", "c"] + ["a", "b", "c"] * 3
    assert [s.rounds for s in slots] == [[0, 1, 2]] * 3
    assert all(len(s.samples) == 3 for s in slots)


def test_every_slot_gets_the_same_rounds_until_they_reach_the_time_budget_together():
    # A slow call and a fast one: rounds continue until min_reps rounds and min_time_s of round
    # time, and every round holds both (the fast call's samples are not taken in emptier rounds).
    fast, slow = Slot(fn=lambda: None), Slot(fn=lambda: time.sleep(0.005))
    time_interleaved([fast, slow], CPU, warmup=0, min_reps=3, min_time_s=0.03, max_reps=1000)
    assert fast.rounds == slow.rounds == list(range(len(slow.samples)))
    assert 5 <= len(slow.samples) <= 8  # ~6 rounds of 5 ms reach 30 ms
    # A 500 ms call still gets min_reps samples: the budget only adds rounds to short ones.
    long = Slot(fn=lambda: time.sleep(0.05))
    time_interleaved([long], CPU, warmup=0, min_reps=5, min_time_s=0.01, max_reps=1000)
    assert len(long.samples) == 5
    capped = Slot(fn=lambda: None)
    time_interleaved([capped], CPU, warmup=0, min_reps=1, min_time_s=1e9, max_reps=40)
    assert len(capped.samples) == 40


def test_warmup_rounds_are_interleaved_too():
    log: list[str] = []
    time_interleaved(
        [_slot(log, "a"), _slot(log, "b")], CPU, warmup=2, min_reps=1, min_time_s=0.0, max_reps=1
    )
    assert log == ["a", "b", "a", "b", "a", "b"]


def test_paired_ratios_divide_sample_by_sample_within_a_round():
    a = Slot(fn=lambda: None, samples=[2.0, 4.0, 9.0], rounds=[0, 1, 3])
    native = Slot(fn=lambda: None, samples=[1.0, 2.0, 3.0], rounds=[0, 1, 2])
    assert paired_ratios(a, native) == [2.0, 2.0]  # round 3 has no native sample


def test_a_failing_slot_stops_alone_and_a_stop_request_is_raised():
    log: list[str] = []

    def flaky():
        log.append("f")
        if len(log) == 3:
            raise RuntimeError("third call fails")

    bad, good = Slot(fn=flaky), _slot(log, "g")
    time_interleaved([bad, good], CPU, warmup=1, min_reps=4, min_time_s=0.0, max_reps=100)
    assert isinstance(bad.error, RuntimeError) and bad.samples == [] and len(good.samples) == 4

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        time_interleaved(
            [Slot(fn=interrupted)], CPU, 0, 1, 0.0, 10, stop=lambda exc: isinstance(exc, KeyboardInterrupt)
        )


def test_prepare_and_release_wrap_every_call():
    log: list[str] = []
    s = Slot(
        fn=lambda: log.append("call"), prepare=lambda: log.append("prep"), release=lambda: log.append("rel")
    )
    time_interleaved([s], CPU, warmup=1, min_reps=2, min_time_s=0.0, max_reps=10)
    assert log == ["prep", "call", "rel"] * 3


def test_the_probe_is_read_once_a_round_and_kept_per_sample():
    reads = iter(range(100))
    a, b = Slot(fn=lambda: None), Slot(fn=lambda: None)
    time_interleaved([a, b], CPU, 0, 3, 0.0, 10, probe=lambda: float(next(reads)))
    assert a.others == b.others == [0.0, 1.0, 2.0]


@pytest.mark.skipif(queue_wait_s() is None, reason="the kernel reports no run-queue wait")
def test_waits_are_recorded_and_a_sleep_is_not_a_wait():
    # A call that sleeps is not waiting for a core: its wall time is its own.
    s = Slot(fn=lambda: time.sleep(0.01))
    time_interleaved([s], CPU, 0, 3, 0.0, 3)
    assert len(s.waits) == 3 and all(0 <= w < 0.005 for w in s.waits)


def test_cuda_rounds_flush_before_every_call_and_wait_once_per_batch(monkeypatch):
    events: list[str] = []

    class Event:
        def __init__(self, enable_timing: bool = True) -> None:
            pass

        def record(self) -> None:
            self.t = time.perf_counter()
            events.append("record")

        def elapsed_time(self, end) -> float:
            return (end.t - self.t) * 1e3

        def synchronize(self) -> None:
            events.append("sync")

    monkeypatch.setattr(
        timing, "flush_buffer", lambda device: SimpleNamespace(zero_=lambda: events.append("flush"))
    )
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("device_sync"))
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())
    a = Slot(fn=lambda: events.append("a"))
    b = Slot(fn=lambda: events.append("b"))
    time_interleaved([a, b], torch.device("cuda"), warmup=1, min_reps=2, min_time_s=0.0, max_reps=10)
    per_call = lambda name: ["flush", "record", name, "record"]  # noqa: E731
    assert events == ["a", "b", "device_sync"] + (per_call("a") + per_call("b")) * 2 + ["sync"]
    assert a.rounds == b.rounds == [0, 1] and a.waits == []  # no host waits recorded on CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_interleaved_cuda_timing_agrees_with_the_single_call_timer():
    x = torch.randn(64 * 2**20, device="cuda")
    y = torch.empty_like(x)
    z = torch.empty_like(x)
    copy, fill = Slot(fn=lambda: y.copy_(x)), Slot(fn=lambda: z.fill_(1.0))
    time_interleaved(
        [copy, fill], torch.device("cuda"), warmup=3, min_reps=20, min_time_s=0.05, max_reps=1000
    )
    alone = timing.time_call(lambda: y.copy_(x), torch.device("cuda"), 3, 20, 0.05, 1000)
    ratio = float(torch.tensor(copy.samples).median()) / alone.median
    assert 0.9 < ratio < 1.1 and copy.rounds == fill.rounds
