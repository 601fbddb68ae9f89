"""Triton kernels tested without a GPU: on CPU tensors under Triton's interpreter.

The interpreter must be chosen before triton itself is imported: Triton decorates its own
library functions (tl.max, tl.sum, ...) at import time, compiled or interpreted. So importing
this module (first, in a test module that launches kernels) sets TRITON_INTERPRET=1 while the
test modules are collected; each module's `kernels` fixture restores the variable after its
last test, so that later tests and the CLI subprocesses they start see the machine as it is.
Where triton was already imported without the interpreter, the module's tests run again in a
fresh process instead (`rerun_in_a_fresh_process`).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from types import ModuleType
from typing import Iterator

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_BEFORE = os.environ.get("TRITON_INTERPRET")
IN_PROCESS = DEVICE == "cuda" or "triton" not in sys.modules or _BEFORE == "1"
if DEVICE == "cpu" and IN_PROCESS:
    os.environ["TRITON_INTERPRET"] = "1"


def kernels(fresh_test: str) -> Iterator[ModuleType]:
    """The body of a module-scoped fixture: harness.kernel, launched under the interpreter on CPU
    (Triton reads the variable again at a kernel's first launch, so it is set for the module's
    tests and restored after them)."""
    import pytest

    if not IN_PROCESS:
        pytest.skip(f"triton was imported before this module without the interpreter: {fresh_test} runs them")
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    yield importlib.import_module("harness.kernel")
    if DEVICE == "cpu":
        if _BEFORE is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _BEFORE


def rerun_in_a_fresh_process(test_file: str) -> None:
    """Run `test_file`'s tests in a new interpreter-mode process (skipped where they ran here)."""
    import pytest

    if IN_PROCESS:
        pytest.skip("the kernel tests run in this process")
    out = interpreted([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file])
    assert out.returncode == 0, out.stdout[-2000:]


def interpreted(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`argv` in a subprocess with TRITON_INTERPRET=1 (text output)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
