"""Device ceilings: the floor arithmetic, the copy-bandwidth accounting and its cache."""

from __future__ import annotations

import pytest
import torch

from harness.measure import ceiling
from harness.measure.timing import TimingStats


def test_floor_is_bytes_over_bandwidth_or_a_compute_floor():
    # 4.2e9 B at 4200 GB/s is 1 ms; a compute floor only counts when it is longer.
    assert ceiling.floor_time_s(4_200_000_000, 4200.0, None) == pytest.approx(1e-3)
    assert ceiling.floor_time_s(4_200_000_000, 4200.0, 5e-4) == pytest.approx(1e-3)
    assert ceiling.floor_time_s(4_200_000_000, 4200.0, 3e-3) == pytest.approx(3e-3)
    assert ceiling.floor_time_s(1_000, 1.0, None) == pytest.approx(1e-6)


def test_copy_counts_bytes_read_plus_written():
    assert ceiling.copy_gbps(10**9, 1.0) == pytest.approx(2.0)
    assert ceiling.copy_gbps(2**28, 0.5) == pytest.approx(2 * 2**28 / 0.5 / 1e9)


def test_copy_bandwidth_is_measured_once_per_device(monkeypatch):
    calls = []

    def fake_time_call(fn, device, **kwargs):
        calls.append(str(device))
        fn()  # the copy itself runs
        return TimingStats.of([0.01, 0.02, 0.03])  # fastest 0.01 s

    monkeypatch.setattr(ceiling, "time_call", fake_time_call)
    monkeypatch.setitem(ceiling.COPY_BYTES, "cpu", 1 << 20)
    ceiling._copy_bandwidth_gbps.cache_clear()
    try:
        first = ceiling.copy_bandwidth_gbps("cpu")
        second = ceiling.copy_bandwidth_gbps("cpu")
    finally:
        ceiling._copy_bandwidth_gbps.cache_clear()  # no fake figure leaks into other tests
    assert calls == ["cpu"]
    assert first == second == pytest.approx(2 * (1 << 20) / 0.01 / 1e9)


def test_device_key_names_one_device_once():
    assert ceiling.device_key("cpu") == "cpu"
    if torch.cuda.is_available():
        assert ceiling.device_key("cuda") == f"cuda:{torch.cuda.current_device()}"


def test_the_fastest_copy_sets_the_ceiling(monkeypatch):
    # Load only slows a copy: the fastest of the samples is the device's, the median is not.
    monkeypatch.setattr(ceiling, "time_call", lambda fn, device, **kw: TimingStats.of([0.01, 0.04, 0.05]))
    monkeypatch.setitem(ceiling.COPY_BYTES, "cpu", 1 << 20)
    ceiling._copy_bandwidth_gbps.cache_clear()
    try:
        gbps = ceiling.copy_bandwidth_gbps("cpu")
    finally:
        ceiling._copy_bandwidth_gbps.cache_clear()
    assert gbps == pytest.approx(2 * (1 << 20) / 0.01 / 1e9)
