"""The results format: one fixed pyarrow schema, atomic writes, and `load` for a run directory.

Each job writes one file, `rows.parquet`, in its own output directory. The file is written
under a hidden temporary name and renamed into place, so a reader never sees half a file and
a job killed mid-write leaves only a hidden temporary, which `load` ignores.

Columns (one row per point x variant x mode):

  configuration  variant family targets batch_size num_classes hidden_size bias dtype logit_scale
                 device mode seed (family: the problem family that measured the row,
                 cross_entropy in files written before the column; hidden_size: D of
                 linear_cross_entropy, bias: whether its layer has a bias [V]; 0 and false on a
                 cross-entropy row, and in files written before them)
  loss options   logits logit_offset mask_fraction pad_vocab_to spatial_size target_confidence
                 ignore_fraction ignore_index label_smoothing z_loss softcap (0: no cap)
                 class_weights micro_batches reduction: one
                 column per option of harness/loss/declared.py (vocabulary.OPTION_DEFAULTS; older
                 files load with those)
  sharding       tp (vocab_parallel_cross_entropy: the ranks; 1 on the other families' rows and in
                 older files, a key column); rank_loss_spread bitwise_unsharded collectives_fwd
                 collectives_bwd collective_bytes_fwd collective_bytes_bwd comm_model_s comm_model_tp8_s
                 link_gbps rank_peak_mem_bytes (the ranks' agreement, the collectives counted and
                 their modelled time, the other ranks' peak: docs/vocab_parallel.md; null elsewhere)
  outcome        status (harness/vocabulary.py, STATUSES), message
  accuracy       loss loss_ref loss_rel_err grad_rel_err nan_count inf_count, loss_tolerance
                 grad_tolerance (the thresholds the errors were judged against);
                 grad_hidden_rel_err grad_weight_rel_err grad_bias_rel_err (linear_cross_entropy:
                 dH's, dW's and, with a bias, dbias's errors, grad_rel_err the largest; null on a
                 cross-entropy row, and grad_bias_rel_err without a bias);
                 grad_row_err grad_class_err grad_target_err grad_entry_ratio (element-wise,
                 cross_entropy fwd_bwd: the worst row's and class's relative gradient error,
                 the hard targets' entries', and the worst of them over its per-entry bound,
                 above 1 inaccurate; harness/loss/errors.py Entrywise); meta_loss_rel_err
                 meta_grad_rel_err (cross_entropy fwd_bwd: the same call on the inputs with
                 the classes permuted and the logits shifted, against their own float64
                 reference; harness/cross_entropy/metamorphic.py)
  time           time_median_s time_iqr_s time_min_s reps time_samples_s (raw samples, wall),
                 time_wait_samples_s (the calling thread's run-queue wait in each sample: other
                 work's share of it; CPU only),
                 time_rel_native time_rel_samples (each sample over the native op's of the same
                 round: the variants of a point are timed interleaved, harness/measure/timing.py)
  memory         peak_mem_bytes (above what existed before the call), harness_bytes (what the
                 harness itself held at the point while the variant ran: inputs, float64
                 references, guard; counted from their tensors, on the point's device)
  throughput     bytes_moved (the family's byte model, e.g. harness/cross_entropy/traffic.py) gbps
  stability      loss_rel_err_total grad_rel_err_total (against float64 on the *unrounded*
                 logits: storage plus algorithm), err_vs_native grad_err_vs_native (this
                 variant's error over the family's native op's at the point, floored
                 at u: torch_cross_entropy, or materialized for linear_cross_entropy)
  cost           compile_time_s (one-time setup such as torch.compile, kept out of the timings)
  ceiling        device_copy_gbps, device_read_gbps (measured copy and read bandwidths),
                 floor_time_s (bytes_moved at the read bandwidth for fwd, which only reads, and
                 at the copy bandwidth for fwd_bwd), pct_of_floor (floor_time_s / time_median_s)
  environment    calib_before_s calib_after_s (a fixed logsumexp timed before and after the
                 point: the machine's speed), runnable_others (other runnable tasks, mean over
                 the row's rounds) cpu_cores wait_share (run-queue wait over wall time of
                 the samples) cpu_steal_frac gpu_sm_clock_mhz gpu_throttle_reasons (NVML), contended
                 contention (timed under contention, and why: harness/measure/contention.py)
  timing check   do_bench_ratio (CUDA with Triton: time_median_s over triton.testing.do_bench's
                 median for the same call; 1.0 = the two timers agree)
  run            run_id sweep timestamp git_commit git_dirty torch_version python_version
                 device_name num_threads harness_version

Time and memory columns are null when their measurement is off or the call failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.loss import declared
from harness.vocabulary import COLUMN_DEFAULTS, KEY_COLUMNS, ROWS_FILE, STUDY_PREFIX

if TYPE_CHECKING:  # pyarrow's to_pandas imports pandas where a frame is made: writing rows needs none
    import pandas as pd

SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("family", pa.string()),
        ("targets", pa.string()),
        ("batch_size", pa.int64()),
        ("num_classes", pa.int64()),
        ("hidden_size", pa.int64()),
        ("bias", pa.bool_()),
        ("tp", pa.int64()),
        ("dtype", pa.string()),
        ("logit_scale", pa.float64()),
        ("device", pa.string()),
        *((o.name, getattr(pa, o.column)()) for o in declared.OPTIONS),  # one column per option
        ("mode", pa.string()),
        ("seed", pa.int64()),
        ("status", pa.string()),
        ("message", pa.string()),
        ("loss", pa.float64()),
        ("loss_ref", pa.float64()),
        ("loss_rel_err", pa.float64()),
        ("grad_rel_err", pa.float64()),
        ("grad_hidden_rel_err", pa.float64()),
        ("grad_weight_rel_err", pa.float64()),
        ("grad_bias_rel_err", pa.float64()),
        ("loss_tolerance", pa.float64()),
        ("grad_tolerance", pa.float64()),
        ("grad_row_err", pa.float64()),
        ("grad_class_err", pa.float64()),
        ("grad_target_err", pa.float64()),
        ("grad_entry_ratio", pa.float64()),
        ("meta_loss_rel_err", pa.float64()),
        ("meta_grad_rel_err", pa.float64()),
        ("rank_loss_spread", pa.float64()),
        ("bitwise_unsharded", pa.bool_()),
        ("collectives_fwd", pa.int64()),
        ("collectives_bwd", pa.int64()),
        ("collective_bytes_fwd", pa.int64()),
        ("collective_bytes_bwd", pa.int64()),
        ("comm_model_s", pa.float64()),
        ("comm_model_tp8_s", pa.float64()),
        ("link_gbps", pa.float64()),
        ("rank_peak_mem_bytes", pa.int64()),
        ("nan_count", pa.int64()),
        ("inf_count", pa.int64()),
        ("time_median_s", pa.float64()),
        ("time_iqr_s", pa.float64()),
        ("time_min_s", pa.float64()),
        ("reps", pa.int64()),
        ("time_samples_s", pa.list_(pa.float64())),
        ("time_wait_samples_s", pa.list_(pa.float64())),
        ("time_rel_native", pa.float64()),
        ("time_rel_samples", pa.list_(pa.float64())),
        ("peak_mem_bytes", pa.int64()),
        ("harness_bytes", pa.int64()),
        ("bytes_moved", pa.int64()),
        ("gbps", pa.float64()),
        ("loss_rel_err_total", pa.float64()),
        ("grad_rel_err_total", pa.float64()),
        ("err_vs_native", pa.float64()),
        ("grad_err_vs_native", pa.float64()),
        ("compile_time_s", pa.float64()),
        ("device_copy_gbps", pa.float64()),
        ("device_read_gbps", pa.float64()),
        ("floor_time_s", pa.float64()),
        ("pct_of_floor", pa.float64()),
        ("do_bench_ratio", pa.float64()),
        ("calib_before_s", pa.float64()),
        ("calib_after_s", pa.float64()),
        ("runnable_others", pa.float64()),
        ("cpu_cores", pa.int64()),
        ("wait_share", pa.float64()),
        ("cpu_steal_frac", pa.float64()),
        ("gpu_sm_clock_mhz", pa.float64()),
        ("gpu_throttle_reasons", pa.int64()),
        ("contended", pa.bool_()),
        ("contention", pa.string()),
        ("run_id", pa.string()),
        ("sweep", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("git_commit", pa.string()),
        ("git_dirty", pa.bool_()),
        ("torch_version", pa.string()),
        ("python_version", pa.string()),
        ("device_name", pa.string()),
        ("num_threads", pa.int64()),
        ("harness_version", pa.string()),
    ]
)

_KEY_METADATA = b"harness.point_key"


def write_rows(rows: Iterable[dict], directory: Path, point_key: str) -> Path:
    """Write rows atomically to directory/rows.parquet, tagged with the point's key."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f".{ROWS_FILE}.*.tmp"):  # left by a job killed mid-write
        stale.unlink(missing_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    table = table.replace_schema_metadata({_KEY_METADATA: point_key.encode()})
    final = directory / ROWS_FILE
    tmp = directory / f".{ROWS_FILE}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:  # the bytes reach the disk before the name does
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def _family_before_the_column(table: pa.Table) -> pa.Array:
    """The family of rows written before the `family` column: the linear family's rows are the
    ones with a hidden size D > 0 (it was the only family with a layer); every other row is the
    first family's."""
    if "hidden_size" not in table.column_names:
        return pa.array([COLUMN_DEFAULTS["family"]] * table.num_rows, pa.string())
    linear = pc.fill_null(pc.greater(table["hidden_size"], 0), False)
    return pc.if_else(linear, "linear_cross_entropy", COLUMN_DEFAULTS["family"]).combine_chunks()


def stored_key(directory: Path) -> str | None:
    """The point key of directory/rows.parquet, or None if absent or unreadable."""
    try:
        meta = pq.read_schema(directory / ROWS_FILE).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    key = meta.get(_KEY_METADATA)
    return key.decode() if key is not None else None


def parquet_files(path: Path) -> list[Path]:
    """Every visible rows .parquet file under path (nested multirun folders included).
    Hidden files and folders (temporaries) and study tables are left out."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not p.name.startswith(STUDY_PREFIX)
    )


def _warn(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr)


def load(path: str | os.PathLike) -> pd.DataFrame:
    """Every row under a run (or sweep) directory as one DataFrame with the SCHEMA columns.

    A path that does not exist raises FileNotFoundError (an empty frame would read as "no rows
    measured"). A file that cannot be read, or that is not a harness rows file (a foreign parquet file
    without the key columns), is named on stderr and skipped; the rest still load. Files from
    an older harness that lack newer columns load with those columns null (the loss options with
    their defaults, so that old and new runs join on the key columns).
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"no results at {path}: no such file or directory")
    tables = []
    for file in parquet_files(Path(path)):
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowException) as exc:
            _warn(f"skipping unreadable results file {file}: {str(exc).splitlines()[0]}")
            continue
        if "family" not in table.column_names:
            table = table.append_column("family", _family_before_the_column(table))
        # written before the options (or hidden_size, bias) existed
        for name, value in COLUMN_DEFAULTS.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.array([value] * table.num_rows, SCHEMA.field(name).type))
        missing = [c for c in (*KEY_COLUMNS, "status") if c not in table.column_names]
        if missing:
            _warn(f"skipping {file}: not a harness rows file (no column {missing[0]!r})")
            continue
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    for name in SCHEMA.names:
        if name not in frame.columns:
            frame[name] = None
    # A null option (a row written without it) is the plain loss: the key columns never hold NaN,
    # which pandas' groupby and merges would drop or fail to match.
    return frame.fillna({k: v for k, v in COLUMN_DEFAULTS.items() if k in frame.columns})
