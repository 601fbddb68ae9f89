"""python scripts/compare.py BASE_DIR NEW_DIR [--time-factor F] [--time-basis absolute|relative]
[--strict] [--memory-factor F] [--error-factor F] [--gate accuracy,time,memory]
[--markdown FILE] [--markdown-lines N] [--plot FILE] [--limit N] [--repeats]

The thresholds default to harness.compare.Thresholds; --help prints every default (a number
written here would go stale when they change).

Exit code: 0 nothing regressed (ambiguous time rows are listed, with why), 1 a gated
regression (or, with --strict, an ambiguous time row while time is gated), 2 nothing could be
compared (no rows in common, unusable input, a bad setting, an output that cannot be written; one line on
stderr). The rules are in harness/compare.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.compare import KINDS, TIME_BASES, Thresholds, UnusableInput, compare_dirs


def _fail(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        _fail(f"{message} (see --help)")


def _number(name: str, low: float, high: float, text: str):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not (low < v < high):
            _fail(f"{name}={s} is not allowed: use {text}")
        return v

    return parse


def _count(s: str) -> int:
    if not s.isdigit():
        _fail(f"--limit={s} is not allowed: use an integer >= 0")
    return int(s)


def _gates(s: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in s.split(",") if p.strip())
    if parts == ("all",):
        return KINDS
    if parts == ("none",):
        return ()
    bad = [p for p in parts if p not in KINDS]
    if bad or not parts:
        _fail(f"--gate={s} is not allowed: use all, none, or a comma list of {', '.join(KINDS)}")
    return parts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Thresholds()
    p = _Parser(description="Compare two harness runs: regressions found, noise ignored.")
    p.add_argument("base", help="baseline run (or sweep) directory")
    p.add_argument("new", help="run (or sweep) directory to judge")
    p.add_argument(
        "--time-factor",
        type=_number("--time-factor", 1, math.inf, "a number > 1"),
        default=d.time_factor,
        help="separation of the two runs' sample intervals that counts as a change "
        f"(default {d.time_factor})",
    )
    p.add_argument(
        "--time-basis",
        choices=TIME_BASES,
        default=d.time_basis,
        help="absolute: each row's own samples; relative: its samples over the native op's, timed "
        "interleaved at the same point (cancels a speed difference between two CI machines) "
        f"(default {d.time_basis})",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1) on an ambiguous time row too, when time is gated",
    )
    p.add_argument(
        "--memory-factor",
        type=_number("--memory-factor", 1, math.inf, "a number > 1"),
        default=d.memory_factor,
        help=f"peak-bytes ratio that counts (default {d.memory_factor})",
    )
    p.add_argument(
        "--error-factor",
        type=_number("--error-factor", 1, math.inf, "a number > 1"),
        default=d.error_factor,
        help=f"relative-error growth that counts (default {d.error_factor})",
    )
    p.add_argument(
        "--gate",
        type=_gates,
        default=KINDS,
        help="kinds whose regressions fail (exit 1): all (default), none, or e.g. accuracy,memory; "
        "the others are printed as information",
    )
    p.add_argument("--markdown", metavar="FILE", help="also write the report as markdown (a PR comment)")
    p.add_argument("--plot", metavar="FILE", help="also plot the time and memory ratios (seaborn)")
    p.add_argument(
        "--repeats",
        action="store_true",
        help="each directory holds repeated runs of one sweep (e.g. base/1, base/2): per configuration "
        "the fastest median counts (best of k), so a disturbance in one run is not a regression",
    )
    p.add_argument(
        "--markdown-lines",
        type=_count,
        default=40,
        help="longest markdown report, in lines (default 40; 0: no limit)",
    )
    p.add_argument(
        "--limit", type=_count, default=30, help="console rows per information section (default 30)"
    )
    return p.parse_args(argv)


def _writable_file(option: str, path: str | None) -> None:
    """An output file's folder must exist and be a folder: checked before any work is done."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        _fail(f"{option} {path}: folder {folder} does not exist; create it or choose another path")
    if Path(path).is_dir():
        _fail(f"{option} {path} is a directory; give a file name")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _writable_file("--markdown", args.markdown)
    _writable_file("--plot", args.plot)
    thresholds = Thresholds(
        time_factor=args.time_factor,
        time_basis=args.time_basis,
        strict=args.strict,
        memory_factor=args.memory_factor,
        error_factor=args.error_factor,
    )
    try:
        result = compare_dirs(args.base, args.new, thresholds, args.gate, repeats=args.repeats)
    except UnusableInput as exc:
        _fail(str(exc))
    if result.rows.empty:  # a gate that compared nothing must not pass
        _fail(
            f"nothing to compare: no configuration is in both runs ({len(result.only_base)} rows only in "
            f"{args.base}, {len(result.only_new)} only in {args.new}); compare runs of the same sweep"
        )
    from harness.report import (
        compare as compare_report,
    )  # tabulate/seaborn only once there is something to show

    print(compare_report.console(result, limit=args.limit), flush=True)
    try:
        if args.markdown:
            Path(args.markdown).write_text(compare_report.markdown(result, args.markdown_lines))
            print(f"compare: markdown in {args.markdown}")
        if args.plot:
            print(f"compare: plot in {compare_report.plot(result, args.plot)}")
    except OSError as exc:  # a full disk, a permission: not a regression (exit 1) but unusable
        _fail(f"could not write the output: {exc}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
