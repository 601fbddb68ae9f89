"""One point's own cost, accuracy only: its wall time and the process's peak RSS, each run in a
fresh process (the harness's footprint, docs/operations.md).

    python scripts/point_cost.py [--runs N] [--floor] [OVERRIDE ...]
    python scripts/point_cost.py dtype=fp32 targets=soft 'variants=[online]'

The overrides are the CLI's (`python -m harness ...`); the defaults here are the footprint
issue's point: batch_size=2048 num_classes=32768, one variant (torch_cross_entropy), timing and
memory off. The time is the point's alone (job.run: inputs, references, calls, judgement), not
the process's start (Python, torch, Hydra: 1.5-2 s); the peak is the whole process's
(getrusage's ru_maxrss), imports included. Runs one after the other, never side by side:
another process beside it takes cores and memory bandwidth from it.

--floor: the same process without the harness's work, its floor: the point's inputs made, each
variant called once (forward and backward, as the runner feeds it), and the family's native op
where it is not one of them (the point calls it once, untimed, for `err_vs_native`); no
reference, guard or judgement. Its peak is what the calls themselves need beside their inputs;
the harness's own share of a point's peak is the difference.
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


def _floor(points: list, variants: list, num_threads: int | None) -> list[str]:
    """--floor: each point's inputs as a restore remakes them (no reference made on their walk)
    and one forward and backward of each variant, and of the native op where the point's rows
    call it untimed, with the job's threads; "called" a call."""
    import torch

    from harness import job

    torch.set_num_threads(num_threads or job.sweep_threads())
    for point in points:
        family = point.family
        calls = list(variants)
        if family.native in family.registry and all(v.name != family.native for v in calls):
            calls.append(family.registry[family.native])
        inputs = (family.remake_inputs or family.make_inputs)(point)
        for v in calls:
            if not family.unsupported(v, point):  # the point makes no call of it either
                family.call(v.fn, family.feed(inputs, v, point), "fwd_bwd")()
        del inputs
    return ["called"]


def _child(overrides: list[str], floor: bool) -> None:
    """In the fresh process: compose the job as the CLI does, run its points, print the figures."""
    sys.path.insert(0, str(REPO))  # this checkout's harness, not the one an environment installed
    from hydra import compose, initialize_config_dir

    import harness.app  # noqa: F401 - registers the schema the config's defaults name
    from harness import job

    names = {o.split("=", 1)[0] for o in overrides}
    merged = [d for d in DEFAULTS if d.split("=", 1)[0] not in names] + overrides
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=merged)
    points, variants = job.check(cfg)
    start = time.perf_counter()
    if floor:
        statuses = _floor(points, variants, cfg.get("num_threads"))
    else:
        rows = job.run(
            points, variants, cfg.timing, cfg.memory, metadata={}, num_threads=cfg.get("num_threads")
        )
        statuses = sorted({r["status"] for r in rows})
    point_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(
        json.dumps(
            {"points": len(points), "point_s": point_s / len(points), "peak": peak, "statuses": statuses}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes, one after the other")
    parser.add_argument("--floor", action="store_true", help="the inputs and the variants' calls alone")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        _child(overrides, args.floor)
        return
    if args.runs < 1:
        sys.exit(f"point_cost: --runs={args.runs} is not allowed: use an integer >= 1")
    results = []
    for _ in range(args.runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", *(["--floor"] if args.floor else []), *overrides],
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
