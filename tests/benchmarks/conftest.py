"""pytest-benchmark hooks: the machine record of a saved benchmark names the devices and torch.

pytest-benchmark's own machine info knows the CPU and Python only; comparing two saved runs
(`--benchmark-compare`) is meaningful only when these also match, so they are stored with it.
"""

from __future__ import annotations

import torch

from harness.metadata import device_name


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    # the devices test_variants_bench.py times on: the CPU, and CUDA when present
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    machine_info["devices"] = {d: device_name(d) for d in devices}
    machine_info["device_name"] = device_name(devices[-1])  # the accelerator when there is one
    machine_info["torch_version"] = torch.__version__
    machine_info["num_threads"] = torch.get_num_threads()
