"""The tp ranks of a point: this process is rank 0, and tp - 1 helper processes the others.

Why rank 0 is the measuring process: the shared runner (harness/runner.py) calls, checks,
tracks and times one callable per (variant, mode); making that callable rank 0's own call
means every timed repetition is a real call of the variant on one rank, with the others
running theirs at the same moment, and nothing sent between processes but a short command.
Each call ends at a barrier (outside the counted collectives), so its time is the slowest
rank's, not rank 0's alone.

Helpers are forked from a forkserver that has imported torch once (`_context`), for a point's
(tp, device), and kept for the next point with the same ones. They draw the point's inputs
themselves from its seed (inputs.py): nothing as large as the logits crosses a pipe.
Rendezvous is on the loopback only (127.0.0.1, a free port).

Faults never hang the sweep and never leave a process behind:
  - a helper whose variant raises reports the error on its pipe and exits; rank 0's next
    collective then fails at once (the peer closed its connection), and the row says which
    rank raised what;
  - a helper that dies is seen the same way; one that hangs keeps rank 0 in a collective until
    the group's timeout (`tp_timeout_s`), which gloo enforces;
  - after any fault every helper is terminated (then killed) and the group destroyed; the next
    call starts a fresh one. Helpers are daemons and exit when their pipe closes, so a
    killed sweep takes them with it.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from harness.loss.errors import gradients, incoming
from harness.loss.returned import BadResult, checked_loss
from harness.measure import environment
from harness.measure.memory import call_with_peak

from .collectives import Collective, Counted
from .inputs import make_inputs, shard
from .variants import Shard


@dataclass
class Result:
    """One rank's outputs of its last call."""

    loss: Tensor
    grad: Tensor | None
    fwd: list[Collective] | None  # the collectives counted in the forward (first call only)
    bwd: list[Collective] | None
    peak: int | None = None  # bytes above those held before the call (first call only)
    wrote: bool = False  # the rank's logits shard changed during the call (restored)


def backend(device: str, tp: int) -> str:
    """nccl where each rank has its own GPU; gloo on CPU and with one GPU for all ranks."""
    if device.startswith("cuda") and tp > 1 and torch.cuda.device_count() >= tp:
        return "nccl"
    return "gloo"


def rank_device(device: str, tp: int, rank: int) -> str:
    """A rank's device, with its index: torch.cuda.set_device refuses a bare "cuda". With nccl
    rank r has GPU r; with one GPU (gloo) every rank shares the point's."""
    if backend(device, tp) == "nccl":
        return f"cuda:{rank}"
    d = torch.device(device)
    return f"cuda:{d.index or 0}" if d.type == "cuda" else device


def rank_call(
    fn: Callable,
    logits: Tensor,
    targets: Tensor,
    where: Shard,
    kwargs: dict,
    mode: str,
    backwards: int,
    count: bool,
) -> Result:
    """One call of the variant on this rank: forward (no_grad in fwd), then, in fwd_bwd, the
    gradient of its loss with the runner's incoming gradient, `backwards` times over one graph.
    With `count`, the collectives of each pass are recorded."""
    reduction = kwargs.get("reduction", "mean")
    rows = targets.shape[0]
    fwd, bwd = Counted(), Counted()
    if mode == "fwd":
        with torch.no_grad(), fwd if count else nullcontext():
            loss = checked_loss(fn(logits, targets, where, **kwargs), reduction, rows)
        return Result(loss.detach(), None, fwd.calls if count else None, [] if count else None)
    z = logits.detach().requires_grad_()
    with fwd if count else nullcontext():
        loss = checked_loss(fn(z, targets, where, **kwargs), reduction, rows)
    if not loss.requires_grad:
        raise BadResult("returned a loss that does not depend on the logits (no gradient)")
    context = getattr(fn, "backward_context", None)
    with bwd if count else nullcontext(), context() if context else nullcontext():
        (grad,) = gradients(loss, (z,), incoming(loss), backwards)
    return Result(loss.detach(), grad, fwd.calls if count else None, bwd.calls if count else None)


def option_kwargs(point: Any, names: list[str], class_weight: Tensor | None) -> dict:
    values = {**point.kwarg_values(), "weight": class_weight}
    return {name: values[name] for name in names}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _resolve(spec: str) -> Callable:
    import importlib

    module, _, name = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# The exit code of a helper that reported its error on its pipe before leaving: a rank that
# exits with it has spoken (if its words arrive after rank 0 stopped listening, it was a
# consequence: the rank whose collective it waited on timed out), never "died".
_REPORTED = 86


def _helper(rank: int, tp: int, port: int, conn, device: str, timeout_s: float, threads: int) -> None:
    """A helper rank's loop: commands from rank 0's pipe, until it closes or says stop."""
    # Ctrl-C reaches every process of the terminal's group: rank 0 handles it (the sweep's
    # safe stop, harness/interrupts.py) and stops the helpers; a helper's own traceback is noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:  # said before the rendezvous, which rank 0 would otherwise wait out for tp_timeout_s
        dev = rank_device(device, tp, rank)
        if dev.startswith("cuda"):
            torch.cuda.set_device(dev)
        conn.send(("ready",))
    except BaseException as exc:
        conn.send(("error", _one_line(exc)))
        os._exit(_REPORTED)
    dist.init_process_group(
        backend(device, tp),
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=tp,
        timeout=timedelta(seconds=timeout_s),
    )
    point = logits = pristine = targets = weight = where = last = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        kind = msg[0]
        try:
            if kind == "point":
                point = msg[1]
                inputs = make_inputs(point)
                logits = shard(inputs, point, rank).to(dev)
                pristine = logits.clone()
                targets, weight = inputs.targets.to(dev), inputs.class_weight
                weight = None if weight is None else weight.to(dev)
                start, stop = point.shards[rank]
                where = Shard(rank, tp, start, stop, point.num_classes, dist.group.WORLD, dev)
                del inputs
            elif kind == "call":
                _, spec, mode, backwards, count, names = msg
                fn = _resolve(spec)
                kwargs = option_kwargs(point, names, weight)
                run = functools.partial(rank_call, fn, logits, targets, where, kwargs, mode, backwards, count)
                if count:
                    last, peak = call_with_peak(run, torch.device(dev))
                    last.peak = peak
                else:
                    last = run()
                dist.barrier()
            elif kind == "fetch":
                wrote = not torch.equal(logits, pristine)
                if wrote:
                    logits.copy_(pristine)
                grad = None if last.grad is None else last.grad.detach().cpu()
                conn.send(("result", Result(last.loss.cpu(), grad, last.fwd, last.bwd, last.peak, wrote)))
            elif kind == "stop":
                os._exit(0)
        except BaseException as exc:  # reported, then this rank leaves: rank 0 sees it at once
            try:
                conn.send(("error", _one_line(exc)))
            finally:
                os._exit(_REPORTED)


def _broken_collective(message: str) -> bool:
    """A collective that failed because a peer went away or timed out (gloo's words)."""
    text = message.lower()
    return any(
        w in text for w in ("gloo", "connection closed", "connection reset", "timed out", "distbackenderror")
    )


_PRELOAD = ["torch", "torch.distributed", "harness.vocab_parallel_cross_entropy.ranks"]


def _context():
    """forkserver, its server importing torch and this family once: each helper is then a fork
    of a process with torch loaded (tens of milliseconds) rather than a fresh interpreter that
    imports it (2-3 s on 2 cores), and the fork is of a single-threaded server, never of this
    process with its thread pools and (on CUDA) its context. spawn where there is no forkserver."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class RankFailure(RuntimeError):
    """A helper rank raised, died or did not answer: the row's error names the rank."""


class Ranks:
    """The current group: at most one per process (torch.distributed's default group)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.procs: list = []
        self.conns: list = []
        self.point: Any = None
        self.where: Shard | None = None
        self.last: Result | None = None

    # -- lifetime -------------------------------------------------------------------------
    def ensure(self, point: Any) -> None:
        """A healthy group for `point`'s tp and device, its helpers holding `point`'s inputs."""
        key = (point.tp, point.device, point.tp_timeout_s)
        if key != self.key or not self.alive():
            self.stop()
            self._start(point)
        if self.point != point:
            self._send(("point", point))
            start, stop = point.shards[0]
            device = rank_device(point.device, point.tp, 0)
            self.where = Shard(0, point.tp, start, stop, point.num_classes, dist.group.WORLD, device)
            self.point = point

    def alive(self) -> bool:
        return dist.is_initialized() and all(p.is_alive() for p in self.procs)

    def _start(self, point: Any) -> None:
        port, ctx = _free_port(), _context()
        threads = torch.get_num_threads()
        for rank in range(1, point.tp):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_helper,
                args=(rank, point.tp, port, child, point.device, point.tp_timeout_s, threads),
                daemon=True,
                name=f"harness-rank-{rank}",
            )
            proc.start()
            child.close()
            environment.OWN_PROCESSES.add(proc.pid)  # its load is the measurement's, not others'
            self.procs.append(proc)
            self.conns.append(parent)
        self._await_ready(point.tp_timeout_s)
        try:
            dist.init_process_group(
                backend(point.device, point.tp),
                init_method=f"tcp://127.0.0.1:{port}",
                rank=0,
                world_size=point.tp,
                timeout=timedelta(seconds=point.tp_timeout_s),
            )
        except BaseException as exc:
            self.stop()
            raise RankFailure(
                f"the {point.tp} ranks did not meet within {point.tp_timeout_s:g} s: {_one_line(exc)}"
            ) from None
        self.key = (point.tp, point.device, point.tp_timeout_s)

    def _await_ready(self, timeout_s: float) -> None:
        """Each helper's word that it set up (its device), before the rendezvous: a helper that
        cannot is a one-line error naming its rank at once, not a rendezvous that times out."""
        deadline = time.monotonic() + timeout_s
        for rank, (proc, conn) in enumerate(zip(self.procs, self.conns), start=1):
            try:
                msg = conn.recv() if conn.poll(max(0.0, deadline - time.monotonic())) else None
            except (EOFError, OSError):
                proc.join(timeout=2.0)
                msg = ("error", f"died (exit code {proc.exitcode})")
            if msg != ("ready",):
                self.stop(graceful=False)
                why = f"did not start within {timeout_s:g} s" if msg is None else msg[1]
                raise RankFailure(f"rank {rank} could not start: {why}")

    def stop(self, graceful: bool = True) -> None:
        """Stop every helper (asked to, or at once after a fault; terminated, then killed if it
        does not go), and destroy the group."""
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            proc.join(timeout=2.0 if graceful else 0.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        environment.OWN_PROCESSES.difference_update(p.pid for p in self.procs)
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # a group broken by a dead peer: nothing left to tidy
                pass
        self.procs, self.conns, self.key, self.point, self.where, self.last = [], [], None, None, None, None

    # -- calls ----------------------------------------------------------------------------
    def _send(self, msg: tuple) -> None:
        for rank, conn in enumerate(self.conns, start=1):
            try:
                conn.send(msg)
            except (OSError, ValueError):
                raise self.failed(RankFailure(f"rank {rank} is gone")) from None

    def call(self, fn: Callable, spec: str, feed: Any, mode: str, backwards: int, count: bool) -> Result:
        """Rank 0's call, with every helper making its own at the same time."""
        self.ensure(feed.point)
        self._send(("call", spec, mode, backwards, count, feed.option_names))
        try:
            result = rank_call(fn, feed.logits, feed.targets, self.where, feed.kwargs, mode, backwards, count)
            dist.barrier()
        except BaseException as exc:
            raise self.failed(exc) from None
        self.last = result
        return result

    def fetch(self) -> list[Result]:
        """Every rank's last result, rank 0's first."""
        results = [self.last]
        self._send(("fetch",))
        for rank, conn in enumerate(self.conns, start=1):
            if not conn.poll(self.point.tp_timeout_s):
                raise self.failed(
                    RankFailure(f"rank {rank} did not answer within {self.point.tp_timeout_s:g} s")
                )
            kind, payload = conn.recv()
            if kind != "result":
                raise self.failed(RankFailure(f"rank {rank} raised {payload}"))
            results.append(payload)
        return results

    def failed(self, exc: BaseException) -> BaseException:
        """The exception a failed call becomes: a helper's own error (or death) when one
        raised or died, else rank 0's; the group is torn down either way."""
        # every helper's word: the first that is not a broken collective (the consequence of
        # another rank's fault) names the rank that failed first; else a rank still running and
        # silent is the one the others waited for; else a rank that died without a word
        said: dict[int, str] = {}
        ranks = dict(enumerate(zip(self.conns, self.procs), start=1))
        pending = set(ranks)
        until = time.monotonic() + 1.0  # a rank that failed has said so by then
        while pending:
            for rank in sorted(pending):
                conn, proc = ranks[rank]
                try:
                    if conn.poll(0):
                        kind, payload = conn.recv()
                        if kind == "error":
                            said[rank] = payload
                        pending.discard(rank)
                        continue
                except (EOFError, OSError):  # gone without a word
                    pending.discard(rank)
                    continue
                if proc.exitcode is not None and not conn.poll(0):
                    pending.discard(rank)
            if time.monotonic() > until:
                break
            time.sleep(0.01)
        died, silent = [], []
        for rank, (_, proc) in ranks.items():
            proc.join(timeout=0.1)
            if rank in said:
                continue
            if proc.exitcode not in (None, 0, _REPORTED):
                died.append(f"rank {rank} died (exit code {proc.exitcode})")
            elif proc.is_alive():
                silent.append(rank)
        own = [f"rank {r} raised {m}" for r, m in said.items() if not _broken_collective(m)]
        timeout = self.point.tp_timeout_s if self.point is not None else float("nan")
        waited = [
            f"rank {r} did not reach the collective within tp_timeout_s={timeout:g} s (stopped)"
            for r in silent
            if _broken_collective(str(exc))
        ]
        helper = (own or died or waited or [""])[0]
        self.stop(graceful=False)
        if (
            isinstance(exc, Exception)
            and not isinstance(exc, RankFailure)
            and not _broken_collective(str(exc))
        ):
            return exc  # rank 0's own error (the others' are then theirs, or its consequence)
        if helper:
            return RankFailure(helper)
        if isinstance(exc, (RankFailure, KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
            return exc
        if _broken_collective(str(exc)) or isinstance(exc, dist.DistBackendError):
            return RankFailure(f"a collective failed: {_one_line(exc)}")
        return exc


RANKS = Ranks()
atexit.register(RANKS.stop)
