"""Device ceilings: the fastest any implementation could possibly go on this device.

Two rates, each measured once per run and device and cached for the process, each the
*fastest* sample (other work on the machine only ever slows a kernel, and a ceiling measured
low would put rows above it):
  - the copy bandwidth: one large device-to-device copy, bytes read plus bytes written, the
    same accounting as the byte model. The floor of a mode that writes as much as it reads
    (fwd_bwd writes the gradient).
  - the read bandwidth: one large buffer read once (the faster of two streaming Triton reads
    on CUDA, harness/measure/read_kernel.py; a sum on the CPU), or the copy bandwidth if that
    is faster. The floor of a mode that only reads (fwd writes B losses). A read-only stream
    outruns a copy: on an H200 triton_fused's forward moved 4.7 TB/s against a copy's 4.23,
    so with the copy rate as its floor 8 of its rows sat at 1.03-1.11x "the floor" (+sweep=gpu
    at 08dce5c).
A family may add a compute floor (harness/family.py); cross-entropy does not: timing one exp
pass on a CPU as its floor read 2.2 ms where F.cross_entropy took 0.28 ms (B=16, C=32768,
fp32, 2 shared cores), because torch.exp and the fused kernels do not run the same code, so
28 of 1,056 rows of `make run` sat "above the floor".

floor_time_s = max(bytes_moved / bandwidth of the mode, compute floor if any)
pct_of_floor = floor_time_s / time_median_s      (a fraction: 1.0 = at the floor)
"""

from __future__ import annotations

import functools

import torch

from harness.measure.timing import time_call

# Bytes copied each way: far beyond any L2/L3, so the copy runs at memory bandwidth. On CUDA
# 1 GiB, so a ~5 us launch is < 1% of the ~0.5 ms an H200 needs (2 GiB moved at ~4.3 TB/s).
COPY_BYTES = {"cpu": 256 * 1024 * 1024, "cuda": 1024 * 1024 * 1024}


def device_key(device: str) -> str:
    """One name per physical device, so "cuda" and "cuda:0" share one measurement."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(dev)


def copy_bandwidth_gbps(device: str) -> float:
    """GB/s (1e9 B/s) of a large device-to-device copy, counting bytes read plus written;
    measured on the first call for each device and cached for the process."""
    return _copy_bandwidth_gbps(device_key(device))


@functools.lru_cache(maxsize=None)
def _copy_bandwidth_gbps(device: str) -> float:
    dev = torch.device(device)
    nbytes = COPY_BYTES[dev.type]
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    stats = time_call(lambda: dst.copy_(src), dev, warmup=2, min_reps=5, min_time_s=0.05, max_reps=50)
    return copy_gbps(nbytes, stats.minimum)


def read_bandwidth_gbps(device: str) -> float:
    """GB/s of the fastest read of a large buffer (bytes read), never below the copy bandwidth:
    the floor of a mode that only reads. Measured on the first call per device, then cached."""
    return max(_read_bandwidth_gbps(device_key(device)), copy_bandwidth_gbps(device))


@functools.lru_cache(maxsize=None)
def _read_bandwidth_gbps(device: str) -> float:
    dev = torch.device(device)
    nbytes = COPY_BYTES[dev.type]
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
    calls = [lambda: x.sum()]
    if dev.type == "cuda":
        try:
            from harness.measure.read_kernel import readers

            calls = readers(x)
        except ImportError:  # no Triton: PyTorch's reduction, a slower (looser) read
            pass
    fastest = min(
        time_call(call, dev, warmup=2, min_reps=5, min_time_s=0.05, max_reps=50).minimum for call in calls
    )
    return nbytes / fastest / 1e9


def bandwidth_gbps(device: str, reads_only: bool) -> float:
    """The floor's rate for a mode: the read bandwidth if it only reads, else the copy's."""
    return read_bandwidth_gbps(device) if reads_only else copy_bandwidth_gbps(device)


def copy_gbps(nbytes: int, seconds: float) -> float:
    """GB/s of a copy of `nbytes`: each byte is read once and written once (2 x nbytes)."""
    return 2 * nbytes / seconds / 1e9


def floor_time_s(bytes_moved: int, gbps: float, compute_s: float | None) -> float:
    """Seconds: bytes_moved at the mode's bandwidth (GB/s), or a compute floor when that is longer.
    E.g. H200, B=8192, C=128256 bf16, fwd_bwd: 2L = 4.2e9 B at ~4300 GB/s = ~0.98 ms."""
    t = bytes_moved / (gbps * 1e9)
    return max(t, compute_s) if compute_s is not None else t


# A square product this size keeps an H100/H200's tensor cores at their sustained rate
# (2 * 8192^3 = 1.1e12 FLOP: ~1.5 ms in bf16, ~20 ms in fp32 without TF32).
MATMUL_SIZE = 8192


def matmul_flops(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of the fastest of a few [n, n] @ [n, n] products in `dtype` (2 n^3 FLOP each), on
    CUDA only (a CPU's matmul rate depends on its threads and blocking too much to be a floor);
    measured on the first call per device and dtype, then cached. The compute floor of a family
    whose work is matmuls (linear_cross_entropy: 6 N D V FLOP for the loss and both gradients)."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"matmul_flops is measured on CUDA only, not {device}")
    return _matmul_flops(device_key(device), dtype)


@functools.lru_cache(maxsize=None)
def _matmul_flops(device: str, dtype: torch.dtype) -> float:
    dev = torch.device(device)
    n = MATMUL_SIZE
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    stats = time_call(lambda: a @ b, dev, warmup=2, min_reps=5, min_time_s=0.05, max_reps=20)
    return 2 * n**3 / stats.minimum
