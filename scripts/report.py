"""python scripts/report.py RUN_DIR [--out DIR] [--studies DIR ...] [--figures K,...]: write RUN_DIR's
report (default RUN_DIR/report/), with the study tables found under RUN_DIR and the --studies
folders; --figures draws only those figures (the tables are all made).

Prints the path of index.html and how long the report took. Exit code 2, with one line on
stderr and nothing written, for a RUN_DIR that is not a directory or holds no readable rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# harness/report/build.py FIGURES' keys, named here so that --help and a bad --figures need no
# matplotlib (tests/report/test_report.py checks the two agree)
FIGURE_KEYS = ("breaks", "boundary", "accuracy", "speed", "throughput", "memory", "flattening", "statuses")


def _rows_or_none(run_dir: Path) -> pd.DataFrame | None:
    """RUN_DIR's rows, or None after one line on stderr when it holds none.

    A page of "no data" for a mistyped folder (or one of corrupt files) reads like a run with
    timing off; refusing says what is wrong. harness.results.load names each skipped file."""
    from harness.results import load, parquet_files  # pandas and pyarrow, no matplotlib

    rows = load(run_dir)
    if not rows.empty:
        return rows
    count = len(parquet_files(run_dir))
    print(
        f"report: RUN_DIR {run_dir} holds no readable rows ({count} parquet file(s), each unreadable, "
        "not a harness rows file, or empty); give a run or sweep directory written by python -m harness",
        file=sys.stderr,
    )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the HTML report of a harness run or sweep.")
    parser.add_argument("run_dir", type=Path, help="run or sweep directory holding rows.parquet files")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/report)")
    parser.add_argument(
        "--studies",
        type=Path,
        action="append",
        default=[],
        help="a folder holding study tables (study-NAME.parquet), e.g. make run's flattening study "
        "(repeatable)",
    )
    parser.add_argument(
        "--history",
        type=Path,
        default=None,
        help="a scripts/history.py plot folder to show as the last section",
    )
    parser.add_argument(
        "--figures",
        default=None,
        help="draw only these figures, comma-separated (" + ", ".join(FIGURE_KEYS) + "); "
        "the others' places say they were not drawn, every table is still made. Default: all",
    )
    args = parser.parse_args(argv)
    only = None
    if args.figures is not None:
        only = [k.strip() for k in args.figures.split(",") if k.strip()]
        unknown = [k for k in only if k not in FIGURE_KEYS]
        if unknown:
            print(
                f"report: --figures {unknown[0]} is not a figure; allowed: {', '.join(FIGURE_KEYS)}",
                file=sys.stderr,
            )
            return 2
    if not args.run_dir.is_dir():
        print(
            f"report: RUN_DIR {args.run_dir} is not a directory; give a run or sweep directory "
            "holding rows.parquet files",
            file=sys.stderr,
        )
        return 2
    if args.out is not None:
        # The first existing folder above --out must be a folder we can write: a path under
        # a file cannot be created, and finding that out after the figures wastes the run.
        existing = next(p for p in (args.out, *args.out.parents) if p.exists())
        if not existing.is_dir():
            print(
                f"report: --out {args.out} is not usable: {existing} is a file; give a directory "
                "(created if missing)",
                file=sys.stderr,
            )
            return 2
    start = time.perf_counter()
    rows = _rows_or_none(args.run_dir)
    if rows is None:
        return 2
    from harness.report import build_report  # matplotlib and seaborn only once the arguments are good

    missing = [s for s in [*args.studies, *([args.history] if args.history else [])] if not s.is_dir()]
    if missing:
        print(f"report: {missing[0]} (--studies / --history) is not a directory", file=sys.stderr)
        return 2
    index = build_report(
        args.run_dir, args.out, tuple(args.studies), args.history, rows=rows, figures_only=only
    )
    print(f"report: {index} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
