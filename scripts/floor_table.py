"""The markdown table of a run's variants against the device's floor: time, x floor, peak
memory, error, and the timer's agreement with do_bench.

    python scripts/floor_table.py results/reference/h200/gpu --classes 128256 --dtype bf16 --targets hard
    python scripts/floor_table.py RUN --variants triton_fused torch_compile --mode fwd

One line per (point, variant, mode), fastest first within a point. `x floor` is
time_median_s / floor_time_s (1.0 is at the floor of the byte model: the read bandwidth for fwd,
the copy bandwidth for fwd_bwd). The byte model's fwd_bwd floor is 2L with hard targets (read the
logits, write the gradient) and 3L with soft ones (their probabilities are read too); the point
column names which (L = the logits' bytes).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.results import load

DEFAULT = ["triton_fused", "torch_compile", "liger_cross_entropy", "torch_cross_entropy"]


def _num(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _floor_label(targets: str, mode: str) -> str:
    """The byte model's floor in logits' worth of bytes (harness/cross_entropy/traffic.py)."""
    soft = targets == "soft"
    return f"({(3 if soft else 2) if mode == 'fwd_bwd' else (2 if soft else 1)}L)"


def table(run: Path, variants: list[str], modes: list[str], where: dict[str, list] | None = None) -> str:
    rows = load(run)
    rows = rows[rows.variant.isin(variants) & rows["mode"].isin(modes) & rows.time_median_s.notna()]
    for column, values in (where or {}).items():  # --classes, --dtype, --targets
        if values:
            rows = rows[rows[column].isin(values)]
    if rows.empty:
        raise SystemExit(f"floor_table: no timed rows of {', '.join(variants)} under {run}")
    lines = [
        "| point | variant | mode | time | x floor | peak memory | loss error | grad error "
        "| ours / do_bench |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["batch_size", "num_classes", "dtype", "targets", "logit_scale"]
    for key, point in rows.groupby(keys, sort=True):
        b, c, dtype, targets, scale = key
        for _, r in point.sort_values(["mode", "time_median_s"]).iterrows():
            lines.append(
                f"| B={b} C={c} {dtype} {targets} s={scale:g} {_floor_label(targets, r['mode'])} "
                f"| `{r.variant}` | {r['mode']} "
                f"| {r.time_median_s * 1e3:.3f} ms | {_num(r.time_median_s / r.floor_time_s, '.2f')}x "
                f"| {_num(r.peak_mem_bytes / 2**30, '.2f')} GiB | {_num(r.loss_rel_err, '.1e')} "
                f"| {_num(r.grad_rel_err, '.1e')} | {_num(r.do_bench_ratio, '.2f')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run or sweep directory")
    parser.add_argument("--variants", nargs="+", default=DEFAULT)
    parser.add_argument("--mode", nargs="+", default=["fwd", "fwd_bwd"], choices=["fwd", "fwd_bwd"])
    parser.add_argument("--classes", nargs="+", type=int, help="only these class counts")
    parser.add_argument("--dtype", nargs="+", help="only these dtypes")
    parser.add_argument("--targets", nargs="+", choices=["hard", "soft"], help="only these target kinds")
    args = parser.parse_args()
    if not args.run.exists():
        print(f"floor_table: {args.run}: no such directory", file=sys.stderr)
        sys.exit(2)
    where = {"num_classes": args.classes, "dtype": args.dtype, "targets": args.targets}
    print(table(args.run, args.variants, args.mode, where))


if __name__ == "__main__":
    main()
