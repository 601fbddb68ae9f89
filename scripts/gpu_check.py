"""The GPU check: the CUDA tests, the headline point and triton_fused's launch-settings scan,
printed as one report, in under 5 minutes on one H200 or H100.

    python scripts/gpu_check.py            # or: make gpu-check
    python scripts/gpu_check.py --full-scan   # the scan at bf16 and fp32, hard and soft targets
    python scripts/gpu_check.py --pytest-log FILE   # also keep pytest's whole output
    python scripts/gpu_check.py --no-scan     # the tests and the headline point only (the kernel unchanged)

1. pytest of the modules with CUDA paths (kernel, timer, ceilings, memory, variants, sweeps,
   fused_linear's kernel path);
2. `+sweep=gpu` at its headline point (B=8192, C=128256, bf16, hard targets) with triton_fused,
   torch_compile, Liger-Kernel (when it imports) and F.cross_entropy: the floor table
   (scripts/floor_table.py);
3. triton_fused's kernel paths and launch settings (scripts/kernel_scan.py) at B=8192, C =
   32000, 128256, 262144, bf16 and fp32, hard and soft targets: do_bench medians over the
   copy-bandwidth floor, fwd and fwd_bwd, each setting checked against float64 on the GPU, and
   the best setting of each shape (LAUNCH_TABLE in harness/kernel/launch_table.py comes from it).

Without CUDA it stops with one line (exit 2). Reads nothing from and writes nothing to the
project's results; the headline rows go to a temporary directory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CUDA_TESTS = [
    "tests/cross_entropy/test_triton_fused.py",
    "tests/measure/test_timing.py",
    "tests/measure/test_ceiling.py",
    "tests/measure/test_memory.py",
    "tests/cross_entropy/test_variants.py",
    "tests/cli/test_gpu_sweep.py",
    "tests/linear_cross_entropy/test_linear_fused.py",
    "tests/cross_entropy/test_triton_options.py",
    "tests/measure/test_interleaved.py",
    "tests/measure/test_contention.py",
]
HEADLINE = [
    "num_classes=128256",
    "dtype=bf16",
    "targets=hard",
    "variants=[triton_fused,torch_compile,torch_cross_entropy]",
]


def _section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def cuda_tests(log: Path | None) -> int:
    """pytest of CUDA_TESTS, one line a test (-v) written to `log` as it runs: a device call
    stopped at its limit still leaves which tests passed and failed (on 2026-12-04 a quiet run
    cut at 90 s left only dots to map back onto the collection)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = log if log is not None else Path(tmp) / "pytest.txt"
        with out.open("w") as f:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-v", "-rfEs", "-p", "no:cacheprovider", *CUDA_TESTS],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
            )
        lines = out.read_text().strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    print("\n".join(failed + lines[-1:]) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return proc.returncode


def headline() -> int:
    variants = HEADLINE[:]
    try:
        import liger_kernel  # noqa: F401

        variants[-1] = variants[-1].replace("]", ",liger_cross_entropy]")
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "+sweep=gpu", *variants, f"hydra.sweep.dir={tmp}/headline"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(f"the headline point failed: {proc.stderr.strip()[-800:]}")
            return proc.returncode
        table = subprocess.run(
            [sys.executable, "scripts/floor_table.py", f"{tmp}/headline"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        print(table.stdout + f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return table.returncode


def scan(quick: bool, budget_s: float) -> int:
    """The kernel scan in its own process, stopped (with what it printed so far) past its budget."""
    args = [sys.executable, "scripts/kernel_scan.py", "--budget-s", str(budget_s)] + (
        ["--quick"] if quick else []
    )
    try:
        proc = subprocess.run(args, cwd=REPO, timeout=budget_s + 60)
    except subprocess.TimeoutExpired:
        print(f"the kernel scan ran past {budget_s + 60:.0f} s and was stopped", flush=True)
        return 1
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full-scan", action="store_true", help="scan fp32 and soft targets too (default: bf16, hard)"
    )
    parser.add_argument("--pytest-log", type=Path, help="write pytest's whole output here")
    parser.add_argument(
        "--no-scan", action="store_true", help="skip the kernel scan (its launch table is already measured)"
    )
    parser.add_argument(
        "--scan-budget-s",
        type=float,
        help="wall time of the kernel scan (default 75 s; 300 s with --full-scan)",
    )
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_check: this machine has no CUDA device: run it on a GPU machine (README, The GPU path)",
            file=sys.stderr,
        )
        sys.exit(2)
    t0 = time.perf_counter()
    print(f"# GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    _section("CUDA tests")
    status = cuda_tests(args.pytest_log)
    _section("Headline point: B=8192, C=128256, bf16, hard targets (our timer)")
    status = headline() or status
    if not args.no_scan:
        _section("triton_fused kernel paths and launch settings (do_bench)")
        status = scan(not args.full_scan, args.scan_budget_s or (300.0 if args.full_scan else 75.0)) or status
    print(f"\ngpu_check: {time.perf_counter() - t0:.0f} s", flush=True)
    sys.exit(1 if status else 0)


if __name__ == "__main__":
    main()
