"""Cost of large accuracy-only grids through the joblib launcher: wall time, time per point,
and how it grows with the number of points.

    python scripts/grid_cost.py [N ...]        (default: 250 500 1000)

Each grid is `seed` x dtype x targets at B=8, C=100 (tiny points, so the figure is the
harness's own per-point cost: Hydra composing the job, inputs, the float64 reference, one call
per variant and mode, the parquet write), run as
`python -m harness -m hydra/launcher=joblib hydra.launcher.n_jobs=2 timing.enabled=false ...`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.results import load

DTYPES = "fp16,bf16,fp32,fp64"
TARGETS = "soft,hard"


def run_grid(points: int) -> dict:
    seeds = points // 8  # 4 dtypes x 2 target kinds per seed
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grid"
        cmd = [
            sys.executable,
            "-m",
            "harness",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "timing.enabled=false",
            "memory.enabled=false",
            "batch_size=8",
            "num_classes=100",
            "exclude_variants=[torch_compile]",  # its compile would be the figure, not the harness
            f"dtype={DTYPES}",
            f"targets={TARGETS}",
            f"seed=range(0,{seeds})",
            f"hydra.sweep.dir={out}",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"grid_cost: {points} points failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows = load(out)
        files = len(list(out.rglob("rows.parquet")))
    return {"points": files, "rows": len(rows), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[250, 500, 1000])
    args = parser.parse_args()
    print(f"{'points':>6} {'rows':>6} {'wall s':>8} {'s/point':>8}")
    for n in args.sizes:
        r = run_grid(n)
        print(
            f"{r['points']:6d} {r['rows']:6d} {r['wall_s']:8.1f} {r['wall_s'] / r['points']:8.3f}", flush=True
        )


if __name__ == "__main__":
    main()
