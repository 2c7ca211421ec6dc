"""One watchdog per rank: no wait outlives its bound, whatever call it is stuck in (no MPI import at module level).

Point-to-point waits poll with a deadline (:mod:`hpcmarl.comm.protocol`). Blocking calls cannot poll: collectives
(``bcast``, ``Barrier``, ``Allreduce``, Horovod's all-reduce), one-sided window epochs, a file write on a hung file
system. Such a call runs inside :func:`guard`; a daemon thread checks the open guards about twice a second and, when
one is older than its bound, prints one line naming the rank, its role and what it waited for, and aborts the whole
MPI job (``MPI_Abort`` from the watchdog thread: the job runs with ``MPI_THREAD_MULTIPLE``).

The bound of a guard is the phase's: ``runtime.startup_timeout_s`` until every rank agreed that startup succeeded,
``runtime.timeout_s`` after (:func:`set_phase`). Without :func:`install` (serial tools, unit tests) a guard costs
nothing and never fires.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from typing import Callable, Dict, Iterator, Optional, Tuple


class Watchdog:
    """The open guards of one rank and the thread that watches them.

    Args:
        who: how the one line names this rank, e.g. ``rank 3 (actor)``.
        abort: called once when a guard expires (the MPI job's abort; tests pass a recorder).
        startup_s: the bound during start-up.
        run_s: the bound after start-up.
        period: how often the thread looks (seconds).
    """

    def __init__(self, who: str, abort: Callable[[], None], startup_s: float, run_s: float, period: float = 0.5):
        self.who, self.abort = who, abort
        self.bounds = {"startup": float(startup_s), "run": float(run_s)}
        self.phase = "startup"
        self.open: Dict[int, Tuple[str, float, float]] = {}  # id -> (what, started, bound)
        self.ids = itertools.count()
        self.fired: Optional[str] = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.period = period
        self.thread = threading.Thread(target=self._run, name="hpcmarl-watchdog", daemon=True)
        self.thread.start()

    def bound(self) -> float:
        return self.bounds[self.phase]

    @contextlib.contextmanager
    def guard(self, what: str, bound: Optional[float] = None) -> Iterator[None]:
        gid = next(self.ids)
        with self.lock:
            self.open[gid] = (what, time.monotonic(), self.bound() if bound is None else float(bound))
        try:
            yield
        finally:
            with self.lock:
                self.open.pop(gid, None)

    def expired(self, now: Optional[float] = None) -> Optional[str]:
        """The line of the oldest expired guard (None while every guard is within its bound)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            late = [(started, what, bound) for what, started, bound in self.open.values() if now - started > bound]
        if not late:
            return None
        started, what, bound = min(late)
        return (f"hpcmarl: {self.who}: waited {now - started:.0f}s (bound {bound:.0f}s, {self.phase} phase) "
                f"for {what}; aborting the job")

    def _run(self) -> None:
        while not self.stopping.wait(self.period):
            line = self.expired()
            if line is not None:
                self.fired = line
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
                self.abort()
                return

    def stop(self) -> None:
        self.stopping.set()


_current: Optional[Watchdog] = None


def install(who: str, startup_s: float, run_s: float, abort: Callable[[], None]) -> Watchdog:
    """Start this rank's watchdog (the entry point does, once MPI is up, with ``abort`` ending the whole job)."""
    global _current
    if _current is not None:
        _current.stop()
    _current = Watchdog(who, abort, startup_s, run_s)
    return _current


def uninstall() -> None:
    global _current
    if _current is not None:
        _current.stop()
    _current = None


def set_phase(phase: str) -> None:
    """``startup`` or ``run``: which bound guards opened from now on get."""
    if _current is not None:
        _current.phase = phase


def guard(what: str, bound: Optional[float] = None):
    """A context manager around a blocking call; a no-op when no watchdog is installed."""
    return contextlib.nullcontext() if _current is None else _current.guard(what, bound)
