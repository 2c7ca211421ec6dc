"""How gradients and query points travel in the gradient flow (:mod:`hpcmarl.roles.gradients`): a learner's
links to its actors (MPI ranks, or the in-process actor of serial mode) and the round-counter window on which
several learners agree when a round closes."""
from __future__ import annotations

import time
from typing import List

import numpy as np

from hpcmarl.actors import GradientMaker
from hpcmarl.algos.nigt import malenia_closed
from hpcmarl.comm import protocol, watchdog


# --------------------------------------------------------------------------------------------------
# learner: actor links
# --------------------------------------------------------------------------------------------------
class MPIGradLink:
    """An actor rank as seen by its learner in the gradient flow."""

    def __init__(self, ctx, rank: int, index: int, gspec):
        self.ctx, self.rank, self.index = ctx, rank, index
        self.rec = gspec.alloc()
        self.req = protocol.post_recv_gradient(ctx.world, rank, self.rec)
        self.send_req = None
        self.received = 0
        self.last = time.monotonic()  # when its last gradient came (its silence bounds the learner's wait)

    def hello(self):
        protocol.send_control(self.ctx.world, self.rank, {}, self.ctx.cfg.runtime.startup_timeout_s)
        self.last = time.monotonic()

    def wait_sent(self):
        if self.send_req is not None:
            protocol.wait_buffer(self.send_req, self.ctx.cfg.runtime.timeout_s,
                                 f"actor rank {self.rank} to take a query point")
            self.send_req = None

    def send_query(self, wrec, rnd: int):
        self.wait_sent()
        self.send_req = protocol.send_weights(self.ctx.world, self.rank, wrec, rnd)

    def poll(self):
        """The next gradient record, or None; call :meth:`rearm` once it has been handled."""
        if self.req.Test():
            self.received += 1
            self.last = time.monotonic()
            return self.rec
        return None

    def rearm(self):
        self.req = protocol.post_recv_gradient(self.ctx.world, self.rank, self.rec)

    def stop(self, wrec, rnd: int, preempted: bool) -> dict:
        self.wait_sent()

        def take() -> bool:
            if self.poll() is None:
                return False
            self.rearm()
            return True

        bye = protocol.stop_and_drain(self.ctx.world, self.rank, wrec, rnd, preempted, take, lambda: self.received,
                                      self.ctx.cfg.runtime.timeout_s)
        self.req.Cancel()
        self.req.Wait()
        return bye


class LocalGradLink:
    """Serial mode: the learner computes its own actor's gradients in-process, one batch per poll."""

    def __init__(self, ctx, gspec):
        self.ctx, self.rank, self.index = ctx, 0, 0
        self.maker = GradientMaker(ctx, 0)
        self.rec = gspec.alloc()
        self.queue: List = []
        self.quota = self.made = 0

    def hello(self):
        pass

    def wait_sent(self):
        pass

    def send_query(self, wrec, rnd: int):
        self.maker.policy.load(wrec["params"], rnd)
        self.maker.abandoned += len(self.queue)
        self.queue = []
        self.quota, self.made = int(wrec["meta"][2]), 0

    def poll(self):
        if not self.queue and not (self.quota and self.made >= self.quota):
            self.queue = self.maker.gradients(lambda: False)
        if not self.queue:
            return None
        self.maker.fill(self.rec, self.queue.pop(0))
        self.made += 1
        return self.rec

    def rearm(self):
        pass

    def stop(self, wrec, rnd: int, preempted: bool) -> dict:
        self.maker.collector.venv.close()
        return {"sent": 0, "abandoned": self.maker.abandoned + len(self.queue)}


# --------------------------------------------------------------------------------------------------
# learner: when does a round close (agreed across learners)
# --------------------------------------------------------------------------------------------------
class WindowGate:
    """Several learners, Rennala or Malenia: counters in an MPI one-sided window on learner 0.

    Slot 0 is Rennala's ticket counter: each gradient takes ``Fetch_and_op(+1)``; tickets below M
    (relative to the round's base) are accepted, so exactly M are, whatever the learners' timing.
    Slots 1..n count Malenia's accepted gradients per actor; a gradient is accepted while the
    harmonic-mean rule is not met. Counters only grow; each round's base is agreed in the all-reduce
    that ends the round (the sum of the tickets every learner drew), so no reset races a late ticket."""

    def __init__(self, comm, kind: str, n_actors: int):
        from mpi4py import MPI

        self.MPI = MPI
        self.kind, self.n = kind, n_actors
        with watchdog.guard("every learner to open the round-counter window"):
            self.win = MPI.Win.Allocate((n_actors + 1) * 8 if comm.Get_rank() == 0 else 0, 8, comm=comm)
            if comm.Get_rank() == 0:
                np.frombuffer(self.win.tomemory(), np.int64)[:] = 0
            comm.Barrier()
            self.win.Lock_all()  # MPI: passive-target epoch for the whole run
        self.base = np.zeros(n_actors + 1, np.int64)
        self.one = np.ones(1, np.int64)
        self.res = np.zeros(1, np.int64)
        self.buf = np.zeros(n_actors + 1, np.int64)
        self.M = self.drawn = 0

    def begin(self, M: int):
        self.M, self.drawn = M, 0

    def _slots(self) -> np.ndarray:
        with watchdog.guard("learner 0's round counters (one-sided get)"):
            self.win.Get([self.buf, self.MPI.INT64_T], 0, target=(0, self.n + 1, self.MPI.INT64_T))
            self.win.Flush(0)
        return self.buf - self.base

    def _fetch_add(self, slot: int) -> int:
        with watchdog.guard("learner 0's round counters (fetch-and-add)"):
            self.win.Fetch_and_op([self.one, self.MPI.INT64_T], [self.res, self.MPI.INT64_T], 0, slot, self.MPI.SUM)
            self.win.Flush(0)
        return int(self.res[0]) - int(self.base[slot])

    def closed(self) -> bool:
        s = self._slots()
        return s[0] >= self.M if self.kind == "rennala" else malenia_closed(s[1:], self.M)

    def offer(self, actor: int) -> bool:
        if self.kind == "rennala":
            self.drawn += 1
            return self._fetch_add(0) < self.M
        if malenia_closed(self._slots()[1:], self.M):
            return False
        self._fetch_add(1 + actor)
        return True

    def end(self, counts: np.ndarray, drawn: int):
        self.base[0] += drawn
        self.base[1:] += counts.astype(np.int64)

    def close(self):
        with watchdog.guard("every learner to close the round-counter window"):
            self.win.Unlock_all()
            self.win.Free()
