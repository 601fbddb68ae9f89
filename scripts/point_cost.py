"""One point's own cost, accuracy only: its wall time and the process's peak RSS, each run in a
fresh process (the harness's footprint, docs/operations.md).

    python scripts/point_cost.py [--runs N] [OVERRIDE ...]
    python scripts/point_cost.py dtype=fp32 targets=soft 'variants=[online]'

The overrides are the CLI's (`python -m harness ...`); the defaults here are the footprint
issue's point: batch_size=2048 num_classes=32768, one variant (torch_cross_entropy), timing and
memory off. The time is the point's alone (job.run: inputs, references, calls, judgement), not
the process's start (Python, torch, Hydra: 1.5-2 s); the peak is the whole process's
(getrusage's ru_maxrss), imports included. Runs one after the other, never side by side:
another process beside it takes cores and memory bandwidth from it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = [
    "batch_size=2048",
    "num_classes=32768",
    "variants=[torch_cross_entropy]",
    "timing.enabled=false",
    "memory.enabled=false",
]


def _child(overrides: list[str]) -> None:
    """In the fresh process: compose the job as the CLI does, run its points, print the figures."""
    from hydra import compose, initialize_config_dir

    import harness.app  # noqa: F401 - registers the schema the config's defaults name
    from harness import job

    names = {o.split("=", 1)[0] for o in overrides}
    merged = [d for d in DEFAULTS if d.split("=", 1)[0] not in names] + overrides
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=merged)
    points, variants = job.check(cfg)
    start = time.perf_counter()
    rows = job.run(points, variants, cfg.timing, cfg.memory, metadata={}, num_threads=cfg.get("num_threads"))
    point_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    statuses = sorted({r["status"] for r in rows})
    print(
        json.dumps(
            {"points": len(points), "point_s": point_s / len(points), "peak": peak, "statuses": statuses}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes, one after the other")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        _child(overrides)
        return
    if args.runs < 1:
        sys.exit(f"point_cost: --runs={args.runs} is not allowed: use an integer >= 1")
    results = []
    for _ in range(args.runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", *overrides],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            sys.exit(f"point_cost: the point failed: {last.split('Error: ', 1)[-1]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['point_s']:.2f} s a point, peak RSS {r['peak'] / 1e9:.2f} GB, {', '.join(r['statuses'])}")
    times = [r["point_s"] for r in results]
    peaks = [r["peak"] / 1e9 for r in results]
    print(f"median {statistics.median(times):.2f} s a point; peak RSS {min(peaks):.2f}-{max(peaks):.2f} GB")


if __name__ == "__main__":
    main()
