"""Run metadata written on every row, so any row can be traced to its machine and code."""

from __future__ import annotations

import functools
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

import harness

_SOURCE_DIR = Path(harness.__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_SOURCE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> tuple[str, bool]:
    """(commit, dirty) of the checkout the harness runs from; ("", False) outside git."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return "", False
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


@functools.lru_cache(maxsize=None)
def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:  # the CPU model, as the kernel reports it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(run_id: str, sweep: str, device: str) -> dict:
    commit, dirty = code_version()
    return {
        "run_id": run_id,
        "sweep": sweep,
        "timestamp": datetime.now(timezone.utc),
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device_name": device_name(device),
        "num_threads": torch.get_num_threads(),
        "harness_version": harness.__version__,
    }
