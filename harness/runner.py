"""Measure every variant at one point: accuracy, peak memory and time, in both modes.

For each (variant, mode) the order is: one call checked against the float64 reference (it
also validates the variant before anything is timed), one call under the memory tracker, then
the timed repetitions. A variant that raises (SystemExit and a KeyboardInterrupt of its own
included), returns something other than a scalar or runs out of memory gives a row with that
status and message; the other variants still run. After each variant the point's inputs are
checked bit for bit and restored if it wrote into them (harness/measure/isolation.py).

What the inputs are, how a variant is called and how its result is judged are the point's
family's (harness/family.py); this module is the same for every family.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from harness import heap, interrupts
from harness.dtypes import DTYPES, unit_roundoff
from harness.family import Family
from harness.loss.errors import row_blocks
from harness.measure import calibration, ceiling, deadline, environment
from harness.measure.contention import contention
from harness.measure.isolation import Guard
from harness.measure.memory import call_with_peak, held_bytes, peak_bytes
from harness.measure.timing import Slot, TimingStats, do_bench_ratio, paired_ratios, time_interleaved
from harness.registry import Variant
from harness.vocabulary import MODES


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, SystemExit):  # sys.exit(3) has "3" as its text: say what happened
        return f"SystemExit: the variant called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _stopped_by_user(exc: BaseException) -> bool:
    """A Ctrl-C stops the sweep; a KeyboardInterrupt or SystemExit a variant raises does not."""
    return isinstance(exc, KeyboardInterrupt) and interrupts.requested()


def measure_variant(
    family: Family,
    variant: Variant,
    mode: str,
    point: Any,
    inputs: Any,
    guard: Guard,
    refs: tuple[Any, Any],
    timing: Any,
    memory: Any,
    meta: tuple[Any, tuple[Any, Any], str] | None = None,
) -> tuple[dict, Slot | None]:
    """One row's accuracy and memory fields for (variant, mode) at this point, and the Slot to
    time it in when timing is on and the row is fit to time (time_point times every slot of the
    point together, interleaved).

    refs: float64 on the rounded inputs (algorithm error) and on the unrounded draw (storage in
    the dtype plus algorithm); guard: the point's inputs as they were made; meta: the family's
    metamorphic inputs with their references (`_metamorphic`), None where not checked."""
    row: dict[str, Any] = {"status": "ok", "message": "", "bytes_moved": family.bytes_moved(point, mode)}
    why = family.unsupported(variant, point)
    if why:
        row.update(status="unsupported", message=why)
        return row, None
    device = torch.device(point.device)
    try:
        feed = family.feed(inputs, variant, point)
        fn = variant.setup(variant.fn) if variant.setup is not None else variant.fn
        call = family.call(fn, feed, mode)
        heap.give_back_kept(row["bytes_moved"])  # the harness's freed blocks not under the call's peak
        feed.refresh()
        with deadline.armed():
            if memory.enabled and variant.setup is None:
                # One untimed call gives both the result to check and the peak bytes.
                outputs, row["peak_mem_bytes"] = call_with_peak(call, device)
            else:
                t0 = time.perf_counter()
                outputs = call()  # the first call: where a compiling variant compiles
                if variant.setup is not None:
                    row["compile_time_s"] = time.perf_counter() - t0
        feed.release()
        row.update(family.assess(outputs, refs, point))
        twice = (
            mode == "fwd_bwd"
            and family.second_backward is not None
            and family.bytes_moved(point, "fwd") <= SECOND_BACKWARD_MAX_BYTES
        )
        first = _fingerprint(outputs[1]) if twice else None
        del outputs
        if wrote := guard.changed():  # wrote into what every later variant receives: not timed
            row.update(status="wrote_input", message=_wrote_input(variant, wrote))
            return row, None
        if twice:
            row.update(_second_backward(family, fn, feed, refs, point, row, first))
            if wrote := guard.changed():
                row.update(status="wrote_input", message=_wrote_input(variant, wrote))
                return row, None
        # Checked again only after a call since the last check: a fingerprint of the logits is
        # a pass over them (0.1 s at B = 2048, C = 32768 fp32 on a CPU), twice a row otherwise.
        called = False
        if mode == "fwd_bwd" and meta is not None:
            row.update(_metamorphic(family, fn, variant, point, meta, row))
            called = True
        if memory.enabled and "peak_mem_bytes" not in row:  # compiled: measure a compiled call
            feed.refresh()
            with deadline.armed():
                row["peak_mem_bytes"] = peak_bytes(call, device)
            feed.release()
            called = True
        if called and (wrote := guard.changed()):
            row.update(status="wrote_input", message=_wrote_input(variant, wrote))
            return row, None
    except (Exception, SystemExit, KeyboardInterrupt, deadline.CallTimeout) as exc:  # a result
        if _stopped_by_user(exc):
            raise
        row = {"bytes_moved": row["bytes_moved"], **_failure(exc)}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if wrote := guard.changed():
            row["message"] += "; " + _wrote_input(variant, wrote)
        return row, None
    if not timing.enabled:
        return row, None
    return row, Slot(call, feed.refresh, feed.release, fresh=feed.fresh)


# The second backward is one more call, with its own graph and gradients: at B=2048, C=32768
# fp32 (256 MiB of logits, accuracy only) it added 2.1 s and 0.55 GB of peak RSS to the point's
# 11.1 s and 1.46 GB. It is made where the inputs a forward reads are at most this many bytes:
# every CPU-sweep point and test, the small GPU points; a variant's backward semantics do not
# change with the size, and the largest points keep the harness's footprint (docs/operations.md).
SECOND_BACKWARD_MAX_BYTES = 64 << 20

# A point's log line comes when the point is done; one that runs longer says where it is this
# often (a GPU point of fp32 soft C = 262144 with every variant once ran 240 s without a line).
HEARTBEAT_S = 30.0
_log = logging.getLogger("harness")


def _fingerprint(grad: Any) -> tuple[float, ...]:
    """Two float64 sums per gradient tensor (of the entries, of their squares): equal for a
    second backward that gives the same gradient, bit for bit or to the last digits of a
    reordered sum, at the cost of one pass instead of a walk of the reference. Block by block: a
    float64 copy of a whole bf16 gradient and its square were 8x its bytes, more than the
    variant's own backward at the largest points that take a second one."""
    tensors = grad if isinstance(grad, tuple) else (grad,)
    out: list[float] = []
    for t in tensors:
        t = t.detach().reshape(1) if t.dim() == 0 else t.detach()
        total = torch.zeros(2, dtype=torch.float64, device=t.device)
        for rows in row_blocks(t):
            d = t[rows].to(torch.float64)
            total += torch.stack((d.sum(), d.square().sum()))
        out += total.tolist()
    return tuple(out)


def _second_backward(
    family: Family, fn: Any, feed: Any, refs: tuple, point: Any, row: dict, first: tuple | None = None
) -> dict:
    """The status and message a second backward of one graph leaves the row with (nothing when
    its gradient is judged as the first's was). One more untimed call: the loss again, a backward
    with retain_graph=True, then the backward that is judged. A second backward that raises is
    a refusal, not a wrong answer (F.linear_cross_entropy's chunked backward, torch.compile's
    donated buffers and fused_linear refuse it by design): the row keeps its status, and its
    message says so. Only a different gradient, given silently, changes the status; one whose
    fingerprint matches the first's (`_fingerprint`) is the first's, and is not judged again."""
    twice = family.second_backward(fn, feed)
    feed.refresh()
    try:
        with deadline.armed():
            outputs = twice()
    except (Exception, deadline.CallTimeout) as exc:
        note = f"a second backward (retain_graph=True) is refused: {_one_line(exc)}"
        return {"message": f"{row['message']}; {note}" if row.get("message") else note}
    finally:
        feed.release()
    if first is not None and _same(_fingerprint(outputs[1]), first):
        return {}
    second = family.assess(outputs, refs, point)
    if second["status"] == row["status"] or second["status"] not in ("inaccurate", "nonfinite"):
        return {}
    err, tol, first = (
        d.get(k, math.nan)
        for d, k in ((second, "grad_rel_err"), (second, "grad_tolerance"), (row, "grad_rel_err"))
    )
    return {
        "status": second["status"],
        "message": (
            f"a second backward (retain_graph=True) gave another gradient: error {err:.3g} "
            f"against {tol:.3g}, the first {first:.3g}"
        ),
    }


def _metamorphic(
    family: Family, fn: Any, variant: Variant, point: Any, meta: tuple[Any, tuple[Any, Any], str], row: dict
) -> dict:
    """The meta_ error columns of one more untimed fwd_bwd call on the metamorphic inputs, and
    the status it leaves the row with: a row `ok` (or `unjudged`) on the drawn inputs that is
    `inaccurate` or `nonfinite` on these takes that status, and its message says with what. A
    call that raises there is noted, not judged (as a refused second backward)."""
    moved, refs, what = meta
    if not refs[0].finite:  # e.g. fp16 logits shifted past 65504: nothing to judge against
        return {}
    feed = family.feed(moved, variant, point)
    feed.refresh()
    try:
        with deadline.armed():
            outputs = family.call(fn, feed, "fwd_bwd")()
    except (Exception, deadline.CallTimeout) as exc:
        note = f"with {what}, the call raised: {_one_line(exc)}"
        return {"message": f"{row['message']}; {note}" if row.get("message") else note}
    finally:
        feed.release()
    cols = family.assess(outputs, refs, point)
    out = {"meta_loss_rel_err": cols.get("loss_rel_err"), "meta_grad_rel_err": cols.get("grad_rel_err")}
    if cols["status"] in ("inaccurate", "nonfinite") and row["status"] in ("ok", "unjudged"):
        why = cols.get("message") or (
            f"loss error {_g(cols.get('loss_rel_err'))} against {_g(cols.get('loss_tolerance'))}, "
            f"gradient error {_g(cols.get('grad_rel_err'))} against {_g(cols.get('grad_tolerance'))}"
        )
        out.update(status=cols["status"], message=f"{cols['status']} with {what}: {why}")
    return out


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal to about 1e-12 relative: a sum reordered between two backwards moves its last digits."""
    return len(a) == len(b) and all(x == y or abs(x - y) <= 1e-12 * max(abs(x), abs(y)) for x, y in zip(a, b))


def _failure(exc: BaseException) -> dict:
    """status and message of a call that raised: timeout, oom or error."""
    if isinstance(exc, deadline.CallTimeout):
        return {"status": "timeout", "message": str(exc)}
    return {"status": "oom" if _is_oom(exc) else "error", "message": _one_line(exc)}


def time_point(
    family: Family, point: Any, inputs: Any, rows: list[dict], slots: list[Slot | None], timing: Any
) -> None:
    """Time every slot of the point together, interleaved (harness/measure/timing.py), between
    two calibrations, and fill each timed row's time, relative-time, ceiling and environment
    columns in place. A call that raises while timed turns its row into that failure (its
    accuracy columns stay: they were measured)."""
    timed = [(row, slot) for row, slot in zip(rows, slots) if slot is not None]
    if not timed:
        return
    device = torch.device(point.device)
    threads, n_cores = torch.get_num_threads(), environment.cores()
    own = threads if device.type == "cpu" else 1  # the host thread only, on CUDA: cores it needs
    calib_before = calibration.calibrate(point.device)
    cpu_before = environment.CpuTimes.read()
    time_interleaved(
        [slot for _, slot in timed],
        device,
        timing.warmup,
        timing.min_reps,
        timing.min_time_s,
        timing.max_reps,
        probe=environment.LoadProbe(),
        stop=_stopped_by_user,
    )
    steal = environment.steal_fraction(cpu_before, environment.CpuTimes.read())
    sm_clock, reasons = environment.gpu_state(point.device)
    calib_after = calibration.calibrate(point.device)
    natives = {
        row["mode"]: slot for row, slot in timed if row["variant"] == family.native and slot.error is None
    }
    for row, slot in timed:
        if slot.error is not None:
            row.update(_failure(slot.error))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        stats = TimingStats.of(slot.samples)
        waits = slot.waits if len(slot.waits) == len(slot.samples) else []
        native = natives.get(row["mode"])
        rel = paired_ratios(slot, native) if native is not None else []
        row.update(
            time_median_s=stats.median,
            time_iqr_s=stats.iqr,
            time_min_s=stats.minimum,
            reps=len(stats.samples),
            time_samples_s=stats.samples,
            time_wait_samples_s=waits or None,
            time_rel_native=float(np.median(rel)) if rel else None,
            time_rel_samples=rel or None,
            gbps=row["bytes_moved"] / stats.median / 1e9 if stats.median > 0 else None,
            calib_before_s=calib_before,
            calib_after_s=calib_after,
            cpu_steal_frac=steal,
            gpu_sm_clock_mhz=sm_clock,
            gpu_throttle_reasons=reasons,
            **contention(
                device=point.device,
                threads=own,
                cores=n_cores,
                others=slot.others,
                wall_s=sum(slot.samples),
                wait_s=sum(waits) if waits else None,
                steal=steal,
                calib_before_s=calib_before,
                calib_after_s=calib_after,
                throttle_reasons=reasons,
            ),
        )
        row.update(_ceiling(family, point, inputs, row["mode"], row["bytes_moved"], stats.median))
        if device.type == "cuda" and not slot.fresh:
            row["do_bench_ratio"] = do_bench_ratio(slot.fn, device, stats.median)


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def _wrote_input(variant: Variant, names: list[str]) -> str:
    return (
        f"{variant.name} wrote into the inputs it was given ({', '.join(names)}; restored for the "
        "next variant); if it "
        "overwrites them by design, register it with overwrites_input=True (or set "
        "fn.harness_overwrites_input = True) to get a fresh copy before every call"
    )


def _ceiling(family: Family, point: Any, inputs: Any, mode: str, nbytes: int, median_s: float) -> dict:
    """Ceiling columns: the device's bandwidths and how close this median is to the floor. A
    forward only reads (its outputs are B losses), so its floor is at the read bandwidth; a
    forward+backward writes a gradient as large as its input, so its floor is at the copy's."""
    gbps = ceiling.bandwidth_gbps(point.device, reads_only=mode == "fwd")
    floor = ceiling.floor_time_s(nbytes, gbps, family.compute_floor_s(point, inputs, mode))
    return {
        "device_copy_gbps": ceiling.copy_bandwidth_gbps(point.device),
        "device_read_gbps": ceiling.read_bandwidth_gbps(point.device),
        "floor_time_s": floor,
        "pct_of_floor": floor / median_s if median_s > 0 else None,
    }


def _native_errors(
    family: Family, rows: list[dict], inputs: Any, refs: tuple[Any, Any], point: Any
) -> tuple[float, float]:
    """(loss, gradient) relative error of the native op at this point: from its fwd_bwd row
    when it was measured, else from one untimed call."""
    for row in rows:
        if (
            row["variant"] == family.native
            and row["mode"] == "fwd_bwd"
            and row.get("grad_rel_err") is not None
        ):
            return row["loss_rel_err"], row["grad_rel_err"]
    if family.native not in family.registry:
        return math.nan, math.nan
    native = family.registry[family.native]
    heap.give_back_kept(family.bytes_moved(point, "fwd_bwd"))
    try:
        outputs = family.call(native.fn, family.feed(inputs, native, point), "fwd_bwd")()
        cols = family.assess(outputs, (refs[0], None), point)  # no total: nothing here reads it
    except Exception:
        return math.nan, math.nan
    if cols.get("loss_rel_err") is None or cols.get("grad_rel_err") is None:
        return math.nan, math.nan
    return cols["loss_rel_err"], cols["grad_rel_err"]


def _add_err_vs_native(
    family: Family, rows: list[dict], inputs: Any, refs: tuple[Any, Any], point: Any
) -> None:
    """err_vs_native = max(err, u) / max(native err, u): flash-attention's relative rule
    (an implementation may be at most ~2x the plain op's error against the same reference);
    the floor at u keeps two essentially exact results from giving 0/0 or a huge ratio. The
    native op is the family's (Family.native)."""
    if not any(r.get("loss_rel_err") is not None for r in rows):
        return
    u = unit_roundoff(DTYPES[point.dtype])
    native_loss, native_grad = _native_errors(family, rows, inputs, refs, point)
    for row in rows:
        if row.get("loss_rel_err") is not None:
            row["err_vs_native"] = max(row["loss_rel_err"], u) / max(native_loss, u)
        if row.get("grad_rel_err") is not None:
            row["grad_err_vs_native"] = max(row["grad_rel_err"], u) / max(native_grad, u)


def _failed_point(family: Family, point: Any, variants: list[Variant], exc: Exception) -> list[dict]:
    """Rows for a point whose inputs or reference could not be made (e.g. out of memory for
    B x C in float64): every (variant, mode) gets the status and message, so the point is
    recorded, not lost, and the sweep goes on."""
    status = "oom" if _is_oom(exc) else "error"
    return [
        {
            "variant": v.name,
            "mode": mode,
            **point.columns(),
            "status": status,
            "message": f"inputs: {_one_line(exc)}",
            "bytes_moved": family.bytes_moved(point, mode),
        }
        for v in variants
        for mode in MODES
    ]


def run_point(point: Any, variants: list[Variant], timing: Any, memory: Any, metadata: dict) -> list[dict]:
    """All rows of one point: len(variants) x len(MODES), in that order."""
    family: Family = point.family
    try:
        inputs = family.make_inputs(point)
        refs = family.references(point, inputs)
        guarded = family.guarded(inputs)
        # A restore remakes the inputs from the point's seed: the guard holds no copy of the large ones.
        remake = lambda: family.guarded((family.remake_inputs or family.make_inputs)(point))  # noqa: E731
        guard = Guard(*guarded.values(), names=tuple(guarded), remake=remake)
        held = held_bytes(inputs, *refs, guard)
        meta = None  # where a second backward is made, so is the metamorphic call (same bound)
        if family.metamorphic is not None and family.bytes_moved(point, "fwd") <= SECOND_BACKWARD_MAX_BYTES:
            meta = family.metamorphic(point, inputs)
    except Exception as exc:
        if point.device.startswith("cuda"):
            torch.cuda.empty_cache()
        return [{**row, **metadata} for row in _failed_point(family, point, variants, exc)]
    rows, slots = [], []
    started = last_word = time.monotonic()
    for i, variant in enumerate(variants):
        for mode in MODES:
            interrupts.check()
            with interrupts.immediate():
                measured, slot = measure_variant(
                    family, variant, mode, point, inputs, guard, refs, timing, memory, meta
                )
            now = time.monotonic()
            if now - last_word >= HEARTBEAT_S:
                last_word = now
                _log.info(
                    "  %s: %s %s judged, %d of %d variants, %.0f s into the point",
                    point.label(), variant.name, mode, i + 1, len(variants), now - started,
                )  # fmt: skip
            if measured.get("status") == "oom":
                measured["message"] += f"; the harness held {_gib(held)} of it (inputs, references, guard)"
            rows.append(
                {
                    "variant": variant.name,
                    "mode": mode,
                    **point.columns(),
                    **measured,
                    "harness_bytes": held,
                    **metadata,
                }
            )
            slots.append(slot)
    interrupts.check()
    with interrupts.immediate():
        time_point(family, point, inputs, rows, slots, timing)
    del slots  # the calls hold their feeds (and a compiled variant's graph)
    changed = guard.changed()
    if changed:  # a variant wrote into the inputs on a later call than its first few
        for row in rows:
            if row.get("time_median_s") is not None:
                row["message"] = (row["message"] + "; " if row["message"] else "") + (
                    f"the {', '.join(changed)} changed while the point was timed (restored)"
                )
    _add_err_vs_native(family, rows, inputs, refs, point)
    return rows
