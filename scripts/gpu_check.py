"""The GPU check: the CUDA tests, the headline point and triton_fused's launch-settings scan,
printed as one report, in under 5 minutes on one H200 or H100.

    python scripts/gpu_check.py            # or: make gpu-check
    python scripts/gpu_check.py --quick    # the scan at C = 128256 only

1. pytest of the modules with CUDA paths (kernel, timer, ceilings, memory, variants, sweeps);
2. `+sweep=gpu` at its headline point (B=8192, C=128256, bf16, hard targets) with triton_fused,
   torch_compile, Liger-Kernel (when it imports) and F.cross_entropy: the floor table
   (scripts/floor_table.py);
3. triton_fused's row kernel over BLOCK x num_warps at B=8192, bf16, hard targets, for C =
   32000, 128256, 262144: do_bench medians over the copy-bandwidth floor, fwd and fwd_bwd; the
   chosen defaults (harness/cross_entropy/kernel.py) are marked, and the best setting of each.

Without CUDA it stops with one line (exit 2). Reads nothing from and writes nothing to the
project's results; the headline rows go to a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CUDA_TESTS = [
    "tests/test_triton_fused.py",
    "tests/test_timing.py",
    "tests/test_ceiling.py",
    "tests/test_memory.py",
    "tests/test_variants.py",
    "tests/test_gpu_sweep.py",
]
HEADLINE = [
    "num_classes=128256",
    "dtype=bf16",
    "targets=hard",
    "variants=[triton_fused,torch_compile,torch_cross_entropy]",
]
SETTINGS = [(block, warps) for block in (2048, 4096, 8192, 16384) for warps in (4, 8, 16, 32)]


def _section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def cuda_tests() -> int:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
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


def scan(classes: list[int]) -> None:
    import torch
    from triton.testing import do_bench

    from harness.cross_entropy import kernel
    from harness.measure.ceiling import copy_bandwidth_gbps

    gbps = copy_bandwidth_gbps("cuda")
    print(f"copy bandwidth {gbps / 1e3:.2f} TB/s; x floor = do_bench median / (bytes moved / bandwidth)\n")
    print("| C | BLOCK | warps | fwd ms | fwd x floor | fwd_bwd ms | fwd_bwd x floor |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator(device="cuda").manual_seed(0)
    for c in classes:
        b = 8192
        z = torch.randn(b, c, device="cuda", generator=g).to(torch.bfloat16)
        y = torch.randint(c, (b,), device="cuda", generator=g)
        grad = torch.empty_like(z)
        logits_bytes = z.numel() * z.element_size()
        floors = {"fwd": logits_bytes / (gbps * 1e9), "fwd_bwd": 2 * logits_bytes / (gbps * 1e9)}
        defaults = {
            "fwd": kernel._launch_params(c, None, writes_grad=False),
            "fwd_bwd": kernel._launch_params(c, None, writes_grad=True),
        }
        best: dict[str, tuple[float, tuple[int, int]]] = {}
        for block, warps in SETTINGS:
            ms = {
                mode: do_bench(functools.partial(kernel.rows, z, y, buf, block, warps), return_mode="median")
                for mode, buf in (("fwd", None), ("fwd_bwd", grad))
            }
            cells = []
            for mode in ("fwd", "fwd_bwd"):
                x = ms[mode] / 1e3 / floors[mode]
                if mode not in best or x < best[mode][0]:
                    best[mode] = (x, (block, warps))
                mark = " (default)" if defaults[mode] == (block, warps) else ""
                cells += [f"{ms[mode]:.3f}", f"{x:.2f}{mark}"]
            print(f"| {c} | {block} | {warps} | " + " | ".join(cells) + " |", flush=True)
        print(
            f"\nC={c}: best fwd {best['fwd'][1]} at {best['fwd'][0]:.2f}x, "
            f"best fwd_bwd {best['fwd_bwd'][1]} at {best['fwd_bwd'][0]:.2f}x\n"
        )
        del z, y, grad
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scan C = 128256 only")
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
    status = cuda_tests()
    _section("Headline point: B=8192, C=128256, bf16, hard targets (our timer)")
    status = headline() or status
    _section("triton_fused launch settings (do_bench)")
    scan([128256] if args.quick else [32000, 128256, 262144])
    print(f"\ngpu_check: {time.perf_counter() - t0:.0f} s", flush=True)
    sys.exit(1 if status else 0)


if __name__ == "__main__":
    main()
