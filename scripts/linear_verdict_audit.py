"""python scripts/linear_verdict_audit.py: the linear family's verdicts on its correct variants,
element-wise and norm-wise, over a grid of its inputs.

N = 256, D = 128, V = 4096 and 32000, logit scales 1, 3 and 10, bf16, fp32 and fp64; the plain
mean, every option at once (smoothing, z-loss, softcap 30, class weights, a quarter of the rows
ignored) and reduction none with ignored rows; every registered CPU variant that takes the
point's options. Prints the worst element-wise ratio (grad_entry_ratio: the worst row of dH or
class's row of dW over K_ENTRY times its per-entry bound) per dtype, the highest rows, and every
row that is not `ok` (the documented findings: docs/linear.md). Accuracy only; about 3 minutes
on 2 cores. Run from the repository root.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ is not installed

import pandas as pd  # noqa: E402

from harness.linear_cross_entropy.variants import REGISTRY  # noqa: E402
from tests.conftest import job_config, run_job  # noqa: E402

OPTION_SETS = (
    {},
    {
        "label_smoothing": 0.1,
        "z_loss": 1e-4,
        "softcap": 30.0,
        "class_weights": "seeded",
        "ignore_fraction": 0.25,
    },
    {"reduction": "none", "ignore_fraction": 0.25},
)
LOSS_OPTIONS = ("label_smoothing", "z_loss", "softcap")


def main() -> int:
    names = [n for n, v in REGISTRY.items() if "cpu" in v.devices]
    out = []
    for dtype, scale, v, opts in itertools.product(
        ("bf16", "fp32", "fp64"), (1.0, 3.0, 10.0), (4096, 32000), OPTION_SETS
    ):
        wanted = {k for k in LOSS_OPTIONS if k in opts}
        use = [n for n in names if wanted <= REGISTRY[n].options]
        cfg = job_config(
            family="linear_cross_entropy", batch_size=256, hidden_size=128, num_classes=v, dtype=dtype,
            logit_scale=scale, variants=use, **opts,
        )  # fmt: skip
        rows = pd.DataFrame(run_job(cfg))
        for _, r in rows[rows["mode"] == "fwd_bwd"].iterrows():
            said = " ".join(f"{k}={x}" for k, x in opts.items()) or "plain"
            out.append(
                dict(
                    dtype=dtype, scale=scale, V=v, options=said,
                    variant=r.variant, status=r.status, entry_ratio=r.get("grad_entry_ratio"),
                    row_err=r.get("grad_row_err"), class_err=r.get("grad_class_err"),
                    norm_ratio=r.grad_rel_err / r.grad_tolerance if r.status != "unsupported" else None,
                )
            )  # fmt: skip
    df = pd.DataFrame(out)
    judged = df[df.status != "unsupported"]
    print(
        "worst element-wise ratio of each dtype:",
        judged.groupby("dtype").entry_ratio.max().round(3).to_dict(),
    )
    print(judged.sort_values("entry_ratio", ascending=False).head(8).to_string(index=False))
    print("\nnot ok:")
    print(judged[judged.status != "ok"].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
