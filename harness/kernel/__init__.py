"""harness's own fused cross-entropy kernel in Triton, shared by both loss families: triton_fused
(harness/cross_entropy/variants/triton_fused.py) calls `cross_entropy`; fused_linear
(harness/linear_cross_entropy/variants/fused.py) calls `rows` and `scale_` on each block of logits.

  device.py        the @triton.jit helpers and kernels (stream, onepass, split in its cooperative
                   and two_launch forms, the scale kernels), with the numerics and design behind them
  launch_table.py  LAUNCH_TABLE and `plan`: the path and settings of each shape (scripts/kernel_scan.py
                   measures them on a GPU and prints a replacement table)
  host.py          input and option checks, `Options`, `rows`, `scale_`, `scale_rows_`, the autograd
                   Function and `cross_entropy`

Importing this package imports triton, so the variants import it at their first call (`import
harness` never does). The names here are re-exports: a test that patches one patches it in the
module that reads it (LAUNCH_TABLE in launch_table, `rows` in host), not here.
"""

from harness.kernel.host import (
    PLAIN,
    REDUCTIONS,
    FusedCrossEntropy,
    Options,
    check_inputs,
    check_options,
    cross_entropy,
    rows,
    scale_,
    scale_rows_,
)
from harness.kernel.launch_table import LAUNCH_TABLE, ONE_PASS_MAX_BLOCK, PATHS, Plan, dtype_key, plan

__all__ = [
    "LAUNCH_TABLE",
    "ONE_PASS_MAX_BLOCK",
    "PATHS",
    "PLAIN",
    "REDUCTIONS",
    "FusedCrossEntropy",
    "Options",
    "Plan",
    "check_inputs",
    "check_options",
    "cross_entropy",
    "dtype_key",
    "plan",
    "rows",
    "scale_",
    "scale_rows_",
]
