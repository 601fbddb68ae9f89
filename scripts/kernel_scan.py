"""triton_fused's paths and launch settings on a GPU: time, x floor and accuracy of each.

    python scripts/kernel_scan.py                 # bf16/fp32 x hard/soft, C = 32000, 128256, 262144
    python scripts/kernel_scan.py --quick         # bf16, hard targets only
    python scripts/kernel_scan.py --budget-s 300  # stop scanning after 300 s (default 150)
    python scripts/kernel_scan.py --paths stream,onepass   # only these paths

B = 8192. For each (C, dtype, targets): fwd_bwd (the loss and the gradient written) by the
stream path (the earlier two-pass kernel, 8192 x 16), onepass where the row fits in one block
(warps 8/16/32), split in its cooperative form over CHUNK {4096, 8192, 16384} x warps {4, 8, 16},
and its two_launch form at one setting; fwd (loss only) by the stream path at three settings.
Each is timed with triton.testing.do_bench (median) and checked against a float64 computation
on the GPU (relative error of the mean loss, norm-wise relative error of the gradient; flagged
'!' above 1e-2 for 16-bit and 1e-5 for fp32/fp64).

x floor = median / (bytes / copy bandwidth), bytes as in harness/cross_entropy/traffic.py:
L (+ L for soft targets, + 8B for hard) for fwd, plus L written for fwd_bwd; the copy
bandwidth is harness.measure.ceiling.copy_bandwidth_gbps("cuda"). At the end: one markdown
table, and the fastest accurate setting per (C, dtype, targets, mode) as a dict literal in
the format of LAUNCH_TABLE in harness/kernel/launch_table.py. Without CUDA: one line, exit 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

B = 8192
CLASSES = (32000, 128256, 262144)
SPLIT_GRID = [(chunk, warps) for chunk in (4096, 8192, 16384) for warps in (4, 8, 16)]
ONEPASS_WARPS = (8, 16, 32)
FWD_STREAM = [(8192, 4), (8192, 8), (16384, 8)]
FLAG = {"bf16": 1e-2, "fp32": 1e-5}
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
ROWS_PER_CHECK = 512  # float64 temporaries of 512 x 262144 x 8 B = 1 GB each


def configs(c: int, one_pass_max: int) -> list[tuple[str, str, int, int]]:
    """(mode, path, BLOCK or CHUNK, warps), most informative first."""
    out = [("fwd_bwd", "stream", 8192, 16)]
    from triton import next_power_of_2

    if next_power_of_2(c) <= one_pass_max:
        out += [("fwd_bwd", "onepass", next_power_of_2(c), w) for w in ONEPASS_WARPS]
    out += [("fwd_bwd", "cooperative", chunk, w) for chunk, w in SPLIT_GRID]
    out += [("fwd_bwd", "two_launch", 8192, 16)]
    out += [("fwd", "stream", blk, w) for blk, w in FWD_STREAM]
    return out


def make_case(c: int, dtype, hard: bool, seed: int = 0):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    z = (3 * torch.randn(B, c, device="cuda", generator=g)).to(dtype)
    if hard:
        t = torch.randint(c, (B,), device="cuda", generator=g)
    else:
        t = torch.empty(B, c, device="cuda", dtype=dtype)
        for r in range(0, B, 1024):  # softmax in fp32 chunks, then rounded to the dtype
            t[r : r + 1024] = (
                torch.randn(min(1024, B - r), c, device="cuda", generator=g).softmax(1).to(dtype)
            )
    return z, t


def reference_loss(z, t, hard: bool):
    """float64 per-row losses [B], in row blocks."""
    import torch

    out = torch.empty(B, dtype=torch.float64, device="cuda")
    for r in range(0, B, ROWS_PER_CHECK):
        zz = z[r : r + ROWS_PER_CHECK].double()
        lse = torch.logsumexp(zz, 1)
        if hard:
            out[r : r + ROWS_PER_CHECK] = lse - zz.gather(1, t[r : r + ROWS_PER_CHECK, None])[:, 0]
        else:
            tt = t[r : r + ROWS_PER_CHECK].double()
            out[r : r + ROWS_PER_CHECK] = tt.sum(1) * lse - (tt * zz).sum(1)
    return out


def errors(z, t, hard: bool, loss, grad, ref_loss) -> tuple[float, float]:
    """(relative error of the mean loss, ||grad - ref|| / ||ref|| of the mean loss's gradient)."""
    import torch

    ref_mean = ref_loss.mean()
    loss_err = ((loss.double().mean() - ref_mean).abs() / ref_mean.abs()).item()
    if grad is None:
        return loss_err, float("nan")
    num = torch.zeros((), dtype=torch.float64, device="cuda")
    den = torch.zeros((), dtype=torch.float64, device="cuda")
    for r in range(0, B, ROWS_PER_CHECK):
        zz = z[r : r + ROWS_PER_CHECK].double()
        p = torch.softmax(zz, 1)
        if hard:
            g = p
            g.scatter_add_(1, t[r : r + ROWS_PER_CHECK, None], -torch.ones_like(p[:, :1]))
        else:
            tt = t[r : r + ROWS_PER_CHECK].double()
            g = tt.sum(1, keepdim=True) * p - tt
        g /= B
        num += (grad[r : r + ROWS_PER_CHECK].double() - g).square().sum()
        den += g.square().sum()
    return loss_err, (num.sqrt() / den.sqrt()).item()


HEADER = "| C | dtype | targets | mode | path | BLOCK/CHUNK | warps | ms | x floor | loss err | grad err |"


def scan_case(
    c: int, dname: str, kind: str, gbps: float, deadline: float, paths: set, lines: list[str], best: dict
) -> bool:
    """Every setting at one (C, dtype, targets); False when the budget ran out."""
    import torch
    from triton.testing import do_bench

    from harness import kernel

    hard = kind == "hard"
    z, t = make_case(c, getattr(torch, DTYPES[dname]), hard)
    grad = torch.empty_like(z)
    ref_loss = reference_loss(z, t, hard)
    logits_bytes = z.numel() * z.element_size()
    target_bytes = 8 * B if hard else logits_bytes
    for mode, path, blk, warps in configs(c, kernel.ONE_PASS_MAX_BLOCK):
        if path not in paths:
            continue
        if time.perf_counter() > deadline:
            return False
        buf = grad if mode == "fwd_bwd" else None
        nbytes = logits_bytes + target_bytes + (logits_bytes if buf is not None else 0)
        head = f"| {c} | {dname} | {kind} | {mode} | {path} | {blk} | {warps} |"
        call = functools.partial(kernel.rows, z, t, buf, blk, warps, path)
        try:
            loss = call()
            torch.cuda.synchronize()
            loss_err, grad_err = errors(z, t, hard, loss, buf, ref_loss)
            ms = do_bench(call, warmup=10, rep=40, return_mode="median")
        except Exception as e:  # noqa: BLE001 - one bad setting must not end the scan
            lines.append(f"{head} failed: {type(e).__name__}: {str(e)[:100]} |")
            print(lines[-1], flush=True)
            continue
        xf = ms / 1e3 / (nbytes / (gbps * 1e9))
        bad = loss_err > FLAG[dname] or (grad_err == grad_err and grad_err > FLAG[dname])
        lines.append(f"{head} {ms:.3f} | {xf:.3f} | {loss_err:.1e} | {grad_err:.1e}{' !' if bad else ''} |")
        print(lines[-1], flush=True)
        key = (c, dname, kind, mode)
        setting = ("split" if path == "cooperative" else path, blk, warps)
        if not bad and path != "two_launch" and (key not in best or xf < best[key][0]):
            best[key] = (xf, setting)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bf16, hard targets only")
    parser.add_argument("--budget-s", type=float, default=150.0, help="stop scanning after this wall time")
    parser.add_argument("--paths", default="stream,onepass,cooperative,two_launch", help="paths to scan")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("kernel_scan: this machine has no CUDA device: run it on a GPU machine", file=sys.stderr)
        sys.exit(2)
    import triton

    from harness.measure.ceiling import copy_bandwidth_gbps

    t0 = time.perf_counter()
    gbps = copy_bandwidth_gbps("cuda")
    name = torch.cuda.get_device_name()
    print(f"# kernel_scan: {name}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"copy bandwidth {gbps / 1e3:.2f} TB/s; B={B}; budget {args.budget_s:.0f} s\n", flush=True)
    print(HEADER + "\n|" + "---|" * 11, flush=True)
    lines: list[str] = []
    best: dict[tuple[int, str, str, str], tuple[float, tuple[str, int, int]]] = {}
    cases = [
        (c, dname, kind)
        for kind in (("hard",) if args.quick else ("hard", "soft"))
        for dname in (("bf16",) if args.quick else ("bf16", "fp32"))
        for c in CLASSES
    ]
    for c, dname, kind in cases:
        if not scan_case(c, dname, kind, gbps, t0 + args.budget_s, set(args.paths.split(",")), lines, best):
            print(f"\nbudget of {args.budget_s:.0f} s spent: stopping the scan", flush=True)
            break
        torch.cuda.empty_cache()

    print(f"\n## All settings ({time.perf_counter() - t0:.0f} s)\n")
    print(HEADER + "\n|" + "---|" * 11)
    print("\n".join(lines))
    print("\n## Best per (C, dtype, targets, mode), fastest without a flagged error\n")
    where = "LAUNCH_TABLE in harness/kernel/launch_table.py"
    print(f"# measured on {torch.cuda.get_device_name()}, B={B}: paste into {where}")
    print("{")
    for key, (xf, setting) in best.items():
        print(f"    {key!r}: {setting!r},  # {xf:.3f}x floor")
    print("}", flush=True)


if __name__ == "__main__":
    main()
