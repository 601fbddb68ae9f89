"""Measure every variant at one point: accuracy, peak memory and time, in both modes.

For each (variant, mode) the order is: one call checked against the float64 reference (it
also validates the variant before anything is timed), one call under the memory tracker, then
the timed repetitions. A variant that raises (SystemExit and a KeyboardInterrupt of its own
included), returns something other than a scalar or runs out of memory gives a row with that
status and message; the other variants still run. After each variant the point's inputs are
checked bit for bit and restored if it wrote into them (harness/measure/isolation.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Callable

import time

import torch
from torch import Tensor

from harness import interrupts
from harness.config import Point
from harness.inputs import Inputs, make_inputs
from harness.dtypes import DTYPES, unit_roundoff
from harness.measure import ceiling
from harness.measure.accuracy import assess, grad_rel_err, rel_err
from harness.measure.isolation import Feed, Guard
from harness.measure.memory import call_with_peak, peak_bytes
from harness.measure.timing import TimingStats, do_bench_ratio, time_call
from harness.measure.traffic import bytes_moved
from harness.reference import Reference, reference
from harness.variants import REGISTRY, Variant

NATIVE = "torch_cross_entropy"   # the op every other variant's error is divided by

MODES = ("fwd", "fwd_bwd")


class BadResult(Exception):
    """The variant returned something that is not a scalar loss."""


def _check_scalar(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise BadResult(f"returned {type(out).__name__}, expected a 0-dim tensor (the mean loss)")
    if out.numel() != 1:
        raise BadResult(f"returned a tensor of shape {list(out.shape)}, expected a scalar (the mean loss)")
    return out.reshape(())


def make_call(fn: Callable, logits: Tensor, targets: Tensor, mode: str) -> Callable[[], tuple[Tensor, Tensor | None]]:
    """The work one repetition does: fwd under no_grad, or fwd + the gradient wrt logits."""
    return fed_call(fn, Feed(logits, targets), mode)


def fed_call(fn: Callable, feed: Feed, mode: str) -> Callable[[], tuple[Tensor, Tensor | None]]:
    """`make_call` reading its inputs from `feed` at each call (a fresh copy after a refresh)."""
    if mode == "fwd":
        def fwd() -> tuple[Tensor, None]:
            with torch.no_grad():
                return _check_scalar(fn(feed.logits, feed.targets)), None
        return fwd

    def fwd_bwd() -> tuple[Tensor, Tensor]:
        x = feed.logits.detach().requires_grad_()
        loss = _check_scalar(fn(x, feed.targets))
        if not loss.requires_grad:
            raise BadResult("returned a loss that does not depend on the logits (no gradient)")
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad
    return fwd_bwd


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, SystemExit):   # sys.exit(3) has "3" as its text: say what happened
        return f"SystemExit: the variant called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _stopped_by_user(exc: BaseException) -> bool:
    """A Ctrl-C stops the sweep; a KeyboardInterrupt or SystemExit a variant raises does not."""
    return isinstance(exc, KeyboardInterrupt) and interrupts.requested()


def measure(variant: Variant, mode: str, point: Point, inputs: Inputs, guard: Guard, ref: Reference,
            ref_total: Reference, timing: Any, memory: Any) -> dict:
    """One row's measured fields for (variant, mode) at this point.

    ref: float64 on the rounded inputs (algorithm error); ref_total: float64 on the unrounded
    draw (storage in the dtype plus algorithm); guard: the point's inputs as they were made."""
    row: dict[str, Any] = {"status": "ok", "message": "", "bytes_moved": bytes_moved(point, mode)}
    if not variant.runs_on(point.targets, point.device):
        row.update(status="unsupported",
                   message=f"{variant.name} runs on targets {sorted(variant.targets)} and devices {sorted(variant.devices)}")
        return row
    device = torch.device(point.device)
    try:
        feed = Feed(inputs.logits, inputs.for_variant(variant.wants_one_hot(point.targets)),
                    fresh=variant.overwrites_input)
        fn = variant.setup(variant.fn) if variant.setup is not None else variant.fn
        call = fed_call(fn, feed, mode)
        feed.refresh()
        if memory.enabled and variant.setup is None:
            # One untimed call gives both the result to check and the peak bytes.
            (loss, grad), row["peak_mem_bytes"] = call_with_peak(call, device)
        else:
            t0 = time.perf_counter()
            loss, grad = call()      # the first call: where a compiling variant compiles
            if variant.setup is not None:
                row["compile_time_s"] = time.perf_counter() - t0
        acc = assess(loss, grad, ref, point.dtype)
        row.update(asdict(acc))
        if ref_total.finite:
            row["loss_rel_err_total"] = rel_err(acc.loss, ref_total.loss)
            if grad is not None:
                row["grad_rel_err_total"] = grad_rel_err(grad, ref_total)
        del loss, grad
        if guard.changed():     # wrote into what every later variant receives: not timed
            row.update(status="wrote_input", message=_wrote_input(variant))
            return row
        if memory.enabled and "peak_mem_bytes" not in row:   # compiled: measure a compiled call
            feed.refresh()
            row["peak_mem_bytes"] = peak_bytes(call, device)
        if timing.enabled:
            stats: TimingStats = time_call(call, device, timing.warmup, timing.min_reps,
                                           timing.min_time_s, timing.max_reps, prepare=feed.refresh)
            row.update(time_median_s=stats.median, time_iqr_s=stats.iqr, time_min_s=stats.minimum,
                       reps=len(stats.samples), time_samples_s=stats.samples,
                       gbps=row["bytes_moved"] / stats.median / 1e9 if stats.median > 0 else None)
            row.update(_floor(point, inputs, row["bytes_moved"], stats.median))
            if device.type == "cuda" and not feed.fresh:   # do_bench cannot refresh between calls
                row["do_bench_ratio"] = do_bench_ratio(call, device, stats.median)
        if guard.changed():
            row.update(status="wrote_input", message=_wrote_input(variant))
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a variant's failure is a result
        if _stopped_by_user(exc):
            raise
        row = {"bytes_moved": row["bytes_moved"], "message": _one_line(exc),
               "status": "oom" if _is_oom(exc) else "error"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if guard.changed():
            row["message"] += "; " + _wrote_input(variant)
    return row


def _wrote_input(variant: Variant) -> str:
    return (f"{variant.name} wrote into the inputs it was given (restored for the next variant); if it "
            "overwrites them by design, register it with overwrites_input=True (or set "
            "fn.harness_overwrites_input = True) to get a fresh copy before every call")


def _floor(point: Point, inputs: Inputs, nbytes: int, median_s: float) -> dict:
    """Ceiling columns: the device's copy bandwidth and how close this median is to the floor."""
    copy_gbps = ceiling.copy_bandwidth_gbps(point.device)
    exp_s = inputs.exp_pass_s() if point.device == "cpu" else None
    floor = ceiling.floor_time_s(nbytes, copy_gbps, exp_s)
    return {"device_copy_gbps": copy_gbps, "floor_time_s": floor,
            "pct_of_floor": floor / median_s if median_s > 0 else None}


def _native_errors(rows: list[dict], inputs: Inputs, ref: Reference, point: Point) -> tuple[float, float]:
    """(loss, gradient) relative error of torch_cross_entropy at this point: from its fwd_bwd
    row when it was measured, else from one untimed call."""
    for row in rows:
        if row["variant"] == NATIVE and row["mode"] == "fwd_bwd" and row.get("grad_rel_err") is not None:
            return row["loss_rel_err"], row["grad_rel_err"]
    native = REGISTRY[NATIVE]
    try:
        loss, grad = make_call(native.fn, inputs.logits, inputs.for_variant(False), "fwd_bwd")()
    except Exception:
        return math.nan, math.nan
    acc = assess(loss, grad, ref, point.dtype)
    if acc.loss_rel_err is None or acc.grad_rel_err is None:
        return math.nan, math.nan
    return acc.loss_rel_err, acc.grad_rel_err


def _add_err_vs_native(rows: list[dict], inputs: Inputs, ref: Reference, point: Point) -> None:
    """err_vs_native = max(err, u) / max(native err, u): flash-attention's relative rule
    (an implementation may be at most ~2x the plain op's error against the same reference);
    the floor at u keeps two essentially exact results from giving 0/0 or a huge ratio."""
    if not any(r.get("loss_rel_err") is not None for r in rows):
        return
    u = unit_roundoff(DTYPES[point.dtype])
    native_loss, native_grad = _native_errors(rows, inputs, ref, point)
    for row in rows:
        if row.get("loss_rel_err") is not None:
            row["err_vs_native"] = max(row["loss_rel_err"], u) / max(native_loss, u)
        if row.get("grad_rel_err") is not None:
            row["grad_err_vs_native"] = max(row["grad_rel_err"], u) / max(native_grad, u)


def _failed_point(point_fields: dict, variants: list[Variant], exc: Exception, nbytes: dict) -> list[dict]:
    """Rows for a point whose inputs or reference could not be made (e.g. out of memory for
    B x C in float64): every (variant, mode) gets the status and message, so the point is
    recorded, not lost, and the sweep goes on."""
    status = "oom" if _is_oom(exc) else "error"
    return [{"variant": v.name, "mode": mode, **point_fields, "status": status,
             "message": f"inputs: {_one_line(exc)}", "bytes_moved": nbytes[mode]}
            for v in variants for mode in MODES]


def run_point(point: Point, variants: list[Variant], timing: Any, memory: Any,
              metadata: dict) -> list[dict]:
    """All rows of one point: len(variants) x len(MODES), in that order."""
    point_fields = {
        "targets": point.targets, "batch_size": point.batch_size, "num_classes": point.num_classes,
        "dtype": point.dtype, "logit_scale": point.logit_scale, "device": point.device, "seed": point.seed,
    }
    try:
        inputs = make_inputs(point)
        ref = reference(inputs.logits, inputs.targets, inputs.kind)
        ref_total = ref if point.dtype == "fp64" else reference(inputs.logits_unrounded, inputs.targets_unrounded, inputs.kind)
        guard = Guard(inputs.logits, inputs.targets, names=("logits", "targets"))
    except Exception as exc:
        if point.device.startswith("cuda"):
            torch.cuda.empty_cache()
        rows = _failed_point(point_fields, variants, exc, {m: bytes_moved(point, m) for m in MODES})
        return [{**row, **metadata} for row in rows]
    rows = []
    for variant in variants:
        for mode in MODES:
            interrupts.check()
            with interrupts.immediate():
                measured = measure(variant, mode, point, inputs, guard, ref, ref_total, timing, memory)
            rows.append({"variant": variant.name, "mode": mode, **point_fields, **measured, **metadata})
    _add_err_vs_native(rows, inputs, ref, point)
    return rows
