"""Timing discipline: sample counts, the L2 flush size, the CUDA sample loop and do_bench."""

from __future__ import annotations

import time
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from harness.measure import timing
from harness.measure.timing import TimingStats, do_bench_ratio, l2_flush_bytes, time_cpu

from ..conftest import python_c


def test_stats_of_samples():
    s = TimingStats.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s.median, s.minimum, s.iqr) == (3.0, 1.0, 2.0)
    assert s.samples == [4.0, 1.0, 3.0, 2.0, 5.0]  # raw samples kept in measured order


def test_cpu_reps_respect_min_reps_min_time_and_cap():
    calls = []
    stats = time_cpu(lambda: calls.append(1), warmup=2, min_reps=7, min_time_s=0.0, max_reps=100)
    assert len(stats.samples) == 7 and len(calls) == 9  # 2 warm-up calls are not samples
    stats = time_cpu(lambda: time.sleep(0.002), warmup=0, min_reps=1, min_time_s=0.02, max_reps=1000)
    assert sum(stats.samples) >= 0.02 and len(stats.samples) < 20
    stats = time_cpu(lambda: None, warmup=0, min_reps=1, min_time_s=1e9, max_reps=4)
    assert len(stats.samples) == 4


def test_l2_flush_size_comes_from_device_properties():
    # A fake properties object: the size must follow L2_cache_size, not a constant.
    assert l2_flush_bytes(SimpleNamespace(L2_cache_size=50 * 2**20)) == 100 * 2**20
    assert l2_flush_bytes(SimpleNamespace(L2_cache_size=6 * 2**20)) == 12 * 2**20
    # No L2 size reported: Triton's do_bench size, so the flush is never skipped.
    assert l2_flush_bytes(SimpleNamespace(L2_cache_size=0)) == timing.FALLBACK_FLUSH_BYTES
    assert l2_flush_bytes(SimpleNamespace()) == timing.FALLBACK_FLUSH_BYTES


class _Log:
    """Stands in for CUDA on a CPU machine: records the order of flushes, events and calls."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, enable_timing: bool = True):
        log = self

        class Event:
            def record(self) -> None:
                self.t = time.perf_counter()
                log.events.append("record")

            def synchronize(self) -> None:
                log.events.append("sync")

            def elapsed_time(self, end) -> float:  # ms, as CUDA events report
                return (end.t - self.t) * 1e3

        return Event()


def test_cuda_loop_flushes_before_every_sample(monkeypatch):
    log = _Log()
    flush = SimpleNamespace(zero_=lambda: log.events.append("flush"))
    props = SimpleNamespace(L2_cache_size=3 * 2**20)
    sizes = []

    def fake_buffer(device):
        sizes.append(l2_flush_bytes(props))
        return flush

    monkeypatch.setattr(timing, "flush_buffer", fake_buffer)
    monkeypatch.setattr(torch.cuda, "Event", log.event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.events.append("device_sync"))
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())
    stats = timing.time_cuda(
        lambda: log.events.append("fn"),
        torch.device("cuda"),
        warmup=2,
        min_reps=3,
        min_time_s=0.0,
        max_reps=10,
    )
    assert sizes == [6 * 2**20]
    assert len(stats.samples) == 3
    # Warm-up, one device sync, then per sample: flush, start, fn, end; the host waits once, after
    # the batch's last end event, so it never leaves the device idle inside an interval.
    assert log.events == ["fn", "fn", "device_sync"] + ["flush", "record", "fn", "record"] * 3 + ["sync"]


def test_cuda_batches_reach_min_time_and_respect_the_cap(monkeypatch):
    log = _Log()
    monkeypatch.setattr(timing, "flush_buffer", lambda device: SimpleNamespace(zero_=lambda: None))
    monkeypatch.setattr(torch.cuda, "Event", log.event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())
    stats = timing.time_cuda(
        lambda: time.sleep(0.002), torch.device("cuda"), warmup=0, min_reps=2, min_time_s=0.03, max_reps=1000
    )
    # 2 samples first, then a batch sized from their median to reach 30 ms: no sample-by-sample waits.
    assert sum(stats.samples) >= 0.03 and log.events.count("sync") <= 4
    stats = timing.time_cuda(
        lambda: None, torch.device("cuda"), warmup=0, min_reps=1, min_time_s=1e9, max_reps=100
    )
    assert len(stats.samples) == 100
    assert timing._batch_size([], 5, 1.0, 3) == 3
    assert timing._batch_size([0.1, 0.1], 2, 1.0, 1000) == 9  # (1.0 - 0.2) / 0.1 + 1
    assert timing._batch_size([0.0], 1, 1.0, 1000) == timing.MAX_BATCH


def test_do_bench_ratio_arithmetic_and_off_cuda():
    seen = []

    def fake_bench(fn, return_mode):
        seen.append(return_mode)
        fn()
        return 2.0  # ms

    calls = []
    ratio = do_bench_ratio(lambda: calls.append(1), torch.device("cuda"), 0.0021, bench=fake_bench)
    assert ratio == pytest.approx(1.05) and seen == ["median"] and calls == [1]
    assert do_bench_ratio(lambda: None, torch.device("cpu"), 0.0021, bench=fake_bench) is None
    assert do_bench_ratio(lambda: None, torch.device("cuda"), 0.0, bench=fake_bench) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_timing_agrees_with_do_bench():
    pytest.importorskip("triton")
    x = torch.randn(64 * 2**20, device="cuda")
    y = torch.empty_like(x)
    call = lambda: y.copy_(x)  # noqa: E731
    stats = timing.time_call(
        call, torch.device("cuda"), warmup=3, min_reps=20, min_time_s=0.05, max_reps=1000
    )
    ratio = do_bench_ratio(call, torch.device("cuda"), stats.median)
    assert 0.9 < ratio < 1.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_timing_agrees_with_do_bench_on_a_short_autograd_call():
    # A forward+backward of ~0.3-1 ms with several launches and autograd's host work between
    # them: the case where a per-sample host wait read 1.05-1.23x do_bench on an H200.
    pytest.importorskip("triton")
    z = torch.randn(8192, 32000, device="cuda", dtype=torch.bfloat16)
    y = torch.randint(32000, (8192,), device="cuda")

    def call():
        x = z.detach().requires_grad_()
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x, y), x)
        return g

    stats = timing.time_call(call, torch.device("cuda"), warmup=3, min_reps=30, min_time_s=0.1, max_reps=1000)
    ratio = do_bench_ratio(call, torch.device("cuda"), stats.median)
    assert stats.median >= 2e-4 and 0.95 < ratio < 1.05, (stats.median, ratio)


def test_the_collector_is_frozen_once_and_given_back_at_exit():
    # the first timing freezes what survives a collection, so that later collections before a
    # timing walk only the new objects; at exit the objects go back to the collector (else
    # Triton's bindings report their objects as leaked)
    code = (
        "import gc, torch\n"
        "from harness.measure.timing import time_call\n"
        "x = torch.ones(10)\n"
        "assert gc.get_freeze_count() == 0\n"
        "import atexit; atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count()))\n"
        "time_call(lambda: x * 2, torch.device('cpu'), warmup=1, min_reps=3, min_time_s=0.0, max_reps=5)\n"
        "frozen = gc.get_freeze_count()\n"
        "time_call(lambda: x * 2, torch.device('cpu'), warmup=1, min_reps=3, min_time_s=0.0, max_reps=5)\n"
        "assert frozen > 10000 and gc.get_freeze_count() == frozen, (frozen, gc.get_freeze_count())\n"
    )
    # atexit runs handlers last-in first-out: this one, registered first, ran after the unfreeze
    assert python_c(code) == "frozen at exit: 0"
