"""The words every layer shares: statuses, modes, the key columns of a row, file names, the
native variant. Defined once here; the runner, results, reports and compare import them.

Nothing here imports torch or pandas (nor does harness/loss/declared.py, which declares the
options): `compare` and the report read these names without loading a measuring stack.
"""

from __future__ import annotations

from harness.loss import declared

# Every status a row can hold, best first (reports keep this order):
#   ok            finite, and within the tolerance (harness/cross_entropy/tolerance.py)
#   unjudged      finite and within it, but the tolerance is 0.5 or more (relative): too loose
#                 to tell right from wrong, so never `ok` (harness/loss/verdict.py)
#   inaccurate    finite, beyond it
#   nonfinite     a NaN or inf in the loss or the gradient
#   no_reference  the rounded inputs have no finite float64 answer (fp16 logits past 65504):
#                 nothing to judge against, so never `ok`; time and memory are still measured
#   wrote_input   the variant wrote into the logits or targets it was given without declaring
#                 it (harness/registry.py: overwrites_input); the inputs were restored after it
#   error, oom    the call raised; timeout: a call ran past timing.call_timeout_s and was
#                 stopped (harness/measure/deadline.py); unsupported: the variant does not run
#                 at this point
STATUSES = (
    "ok",
    "unjudged",
    "inaccurate",
    "nonfinite",
    "no_reference",
    "wrote_input",
    "error",
    "oom",
    "timeout",
    "unsupported",
)
JUDGED = ("ok", "unjudged", "inaccurate")  # statuses whose errors are numbers
CALL_FAILED = ("error", "oom", "timeout")  # a call of the variant did not return
FAILED = (*CALL_FAILED, "unsupported")  # statuses with no usable result

# What one repetition does: the forward pass alone, or forward and the gradient.
MODES = ("fwd", "fwd_bwd")

# The first family's native op, PyTorch's own F.cross_entropy: the variant every other one's
# error is divided by (err_vs_native) and the control of every study. Each family names its own
# (Family.native; the linear family's is `materialized`).
NATIVE = "torch_cross_entropy"

# The loss options of a point and the logits' distribution (harness/loss/declared.py, where each
# is declared once), with the value each takes in the rows when a run does not set it: rows
# written before these settings existed load with these values, so an old run still joins a new
# one on the keys below. `softcap` is 0 in the rows when there is no cap (a null key would drop
# out of pandas' groupby and merges).
OPTION_DEFAULTS = {o.name: o.row_default for o in declared.OPTIONS}
OPTION_COLUMNS = tuple(OPTION_DEFAULTS)

# Settings of the layer only linear_cross_entropy (harness/linear_cross_entropy/) has, with the
# value the other family's rows hold: the hidden size D is 0 and `bias` False on a cross-entropy
# row (its logits are given, there is no layer). 0 and False, not null: a null key would drop
# out of pandas' groupby and merges, and rows written before a column existed load with these.
# `tp`, the ranks of vocab_parallel_cross_entropy (harness/vocab_parallel_cross_entropy/), is 1
# on the other families' rows: one rank holds every class.
SHAPE_DEFAULTS = {"hidden_size": 0, "bias": False, "tp": 1}
# The family that measured a row (harness/job.py, FAMILIES): rows written before the column
# existed are the first family's.
FAMILY_DEFAULT = {"family": "cross_entropy"}
# Every column a row may lack (an older file, a row built by hand), with the value it reads as.
COLUMN_DEFAULTS = {**FAMILY_DEFAULT, **OPTION_DEFAULTS, **SHAPE_DEFAULTS}

# What determines a point's inputs, in the order the rows hold them ...
POINT_COLUMNS = (
    "family",
    "targets",
    "batch_size",
    "num_classes",
    "hidden_size",
    "bias",
    "tp",
    "dtype",
    "logit_scale",
    "device",
    *OPTION_COLUMNS,
    "seed",
)
# ... and what identifies a row: two runs' rows with equal keys measured the same thing.
KEY_COLUMNS = ("variant", *POINT_COLUMNS[:-1], "mode", "seed")

# Files a run writes. Inside a sweep folder everything but the rows starts with "_" (or "."):
# pyarrow.dataset and duckdb globs skip such names, so they read the rows and nothing else.
ROWS_FILE = "rows.parquet"  # one per point folder: that point's rows (results.SCHEMA)
STUDY_PREFIX = "study-"  # study-NAME.parquet: a study's own table, not rows
THEORY_FILE = "_theory.json"  # a sweep's predicted failing scales (cross_entropy/theory.py)
SWEEP_FILE = "_multirun.yaml"  # the sweep's composed config, for the record
# (each point folder's log is `_job.log`, named in conf/config.yaml's hydra.job_logging)


def study_file(name: str) -> str:
    """The file name of study NAME's table."""
    return f"{STUDY_PREFIX}{name}.parquet"
