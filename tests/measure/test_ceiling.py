"""Device ceilings: the floor arithmetic, the copy-bandwidth accounting and its cache."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_read_bandwidth_counts_bytes_read_and_is_never_below_the_copy(monkeypatch):
    # Reads: n bytes in the fastest sample. A read slower than the copy is not a ceiling.
    monkeypatch.setitem(ceiling.COPY_BYTES, "cpu", 1 << 20)
    for read_s, expected in ((0.001, (1 << 20) / 0.001 / 1e9), (1.0, 2 * (1 << 20) / 0.01 / 1e9)):
        times = iter([TimingStats.of([0.01, 0.02]), TimingStats.of([read_s, 2 * read_s])])
        monkeypatch.setattr(ceiling, "time_call", lambda fn, device, _t=times, **kw: next(_t))
        ceiling._copy_bandwidth_gbps.cache_clear()
        ceiling._read_bandwidth_gbps.cache_clear()
        try:
            copy = ceiling.copy_bandwidth_gbps("cpu")  # measured first
            read = ceiling.read_bandwidth_gbps("cpu")
        finally:
            ceiling._copy_bandwidth_gbps.cache_clear()
            ceiling._read_bandwidth_gbps.cache_clear()
        assert read == pytest.approx(expected) and read >= copy


def test_a_forward_is_floored_at_the_read_rate_and_a_backward_at_the_copy(monkeypatch):
    monkeypatch.setattr(ceiling, "copy_bandwidth_gbps", lambda device: 100.0)
    monkeypatch.setattr(ceiling, "read_bandwidth_gbps", lambda device: 150.0)
    assert ceiling.bandwidth_gbps("cpu", reads_only=True) == 150.0
    assert ceiling.bandwidth_gbps("cpu", reads_only=False) == 100.0


def test_the_read_kernel_reads_every_element():
    # Compiled on a CUDA machine, else under Triton's interpreter on CPU tensors: a subprocess,
    # since the interpreter must be chosen before triton is imported.
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    code = (
        "import torch; from harness.measure.read_kernel import BLOCK, reader, row_reader; "
        # values 0..6: every partial sum is exact in fp32
        f"x = (torch.arange(3 * BLOCK + 5, device='{device}') % 7).float(); p = reader(x)(); "
        "assert p.shape == (4,), p.shape; "
        "assert float(p.double().sum()) == float(x.double().sum()), (p.sum(), x.sum()); "
        f"y = (torch.arange(3 * 40000, device='{device}') % 5).float(); r = row_reader(y, rows=3)(); "
        "assert r.shape == (3,) and float(r.double().sum()) == float(y.double().sum()), r; print('ok')"
    )
    env = {**os.environ, **({"TRITON_INTERPRET": "1"} if device == "cpu" else {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-1500:]
