"""Wall time of whole sweeps and the share of it spent outside the timed repetitions.

    python scripts/sweep_cost.py [SWEEP ...]      (default: smoke cpu)

Each sweep runs as `python -m harness +sweep=NAME` in a subprocess, exactly as a user runs it,
into a temporary directory. "Timed" is the sum of every raw sample the rows hold; everything
else (interpreter start, Hydra, inputs, float64 references, accuracy and memory calls,
warm-ups, parquet writes) is overhead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.results import load

TARGETS_S = {"smoke": 30.0, "cpu": 120.0}  # the sweeps' wall-time targets on 2 cores


def measure(sweep: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / sweep
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "harness", f"+sweep={sweep}", f"hydra.sweep.dir={out}"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"sweep_cost: +sweep={sweep} failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows = load(out)
    timed = float(sum(sum(s) for s in rows.time_samples_s.dropna()))
    return {
        "sweep": sweep,
        "points": rows.groupby(
            ["batch_size", "num_classes", "dtype", "logit_scale", "targets", "seed"]
        ).ngroups,
        "rows": len(rows),
        "wall_s": wall,
        "timed_s": timed,
        "overhead": 1 - timed / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="*", default=["smoke", "cpu"])
    args = parser.parse_args()
    print(f"{'sweep':8} {'points':>6} {'rows':>6} {'wall s':>8} {'timed s':>8} {'overhead':>9}  target")
    for sweep in args.sweeps:
        r = measure(sweep)
        target = TARGETS_S.get(sweep)
        verdict = (
            "" if target is None else f"wall < {target:.0f} s: {'yes' if r['wall_s'] < target else 'NO'}"
        )
        print(
            f"{r['sweep']:8} {r['points']:6d} {r['rows']:6d} {r['wall_s']:8.1f} {r['timed_s']:8.1f} "
            f"{r['overhead']:9.0%}  {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
