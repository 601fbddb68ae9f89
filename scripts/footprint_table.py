"""Which shapes of `+sweep=gpu` and `+sweep=gpu_full` fit on 40, 80 and 141 GB cards: the
harness's own bytes (harness/cross_entropy/footprint.py) plus the variants' own peaks, as
measured on an H200 (F.cross_entropy's fwd_bwd: 3 L above its inputs; the largest of the
registered variants, `naive_exp`: 6 L), where L is the logits' bytes.

    python scripts/footprint_table.py            # the markdown table (README, docs/operations.md)
    python scripts/footprint_table.py --full     # every gpu_full shape, with the bytes

A shape "fits" a card when the harness's resident bytes plus the larger of its transient bytes
and the variant's peak stay within what the card offers a process (the capacity torch reports,
less 0.5 GiB of CUDA context).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cross_entropy.footprint import peak_bytes, resident_bytes  # noqa: E402
from harness.cross_entropy.point import Point  # noqa: E402

GIB = 2**30
# What torch.cuda.get_device_properties(0).total_memory reports, in GiB, less the context.
CARDS = {"40 GB": 39.4 - 0.5, "80 GB": 79.1 - 0.5, "141 GB": 139.8 - 0.5}
# The variants' own fwd_bwd peak over the logits' bytes, from the H200 rows (shared GPU facts):
# F.cross_entropy 3.0 at every shape measured; naive_exp 6.0 (bf16, C = 128256).
NATIVE_PEAK, WORST_PEAK = 3.0, 6.0
BATCH = 8192  # gpu's B, and gpu_full's larger one (its B = 4096 needs half the logits)
CLASSES = (32000, 50257, 128256, 262144)  # gpu_full's (gpu's: 32000, 128256, 262144)
COLUMNS = (("bf16", "hard"), ("bf16", "soft"), ("fp32", "hard"), ("fp32", "soft"))


def _point(c: int, dtype: str, targets: str, b: int = BATCH) -> Point:
    return Point(b, c, dtype, 1.0, "cuda", targets, seed=0)


def smallest_card(point: Point, factor: float) -> str:
    logits = point.batch_size * point.num_classes * point.torch_dtype.itemsize
    need = peak_bytes(point, int(factor * logits)) / GIB
    for card, usable in CARDS.items():
        if need <= usable:
            return card
    return "none"


def table() -> str:
    """Per C and (dtype, targets) at B = 8192: the smallest card on which every variant fits,
    and, where it differs, the one on which F.cross_entropy does."""
    head = "| C | " + " | ".join(f"{d} {t}" for d, t in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for c in CLASSES:
        cells = []
        for dtype, targets in COLUMNS:
            p = _point(c, dtype, targets)
            every, native = smallest_card(p, WORST_PEAK), smallest_card(p, NATIVE_PEAK)
            cells.append(every if every == native else f"{every} ({native} for F.cross_entropy)")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full() -> str:
    lines = [
        "| B | C | dtype | targets | L GiB | harness resident GiB | with F.cross_entropy GiB "
        "| with naive_exp GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in (4096, 8192):
        for c in CLASSES:
            for dtype in ("fp16", "bf16", "fp32"):
                for targets in ("hard", "soft"):
                    p = _point(c, dtype, targets, b)
                    logits = b * c * p.torch_dtype.itemsize
                    native = peak_bytes(p, int(NATIVE_PEAK * logits)) / GIB
                    worst = peak_bytes(p, int(WORST_PEAK * logits)) / GIB
                    lines.append(
                        f"| {b} | {c} | {dtype} | {targets} | {logits / GIB:.2f} | "
                        f"{resident_bytes(p) / GIB:.2f} | {native:.1f} | {worst:.1f} |"
                    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every gpu_full shape, with the bytes")
    args = parser.parse_args()
    print(full() if args.full else table())


if __name__ == "__main__":
    main()
