"""When a round of the gradient flow (:mod:`hpcmarl.roles.gradients`) closes: the round counters on which several
learners agree (a learner's links to its actors: :mod:`hpcmarl.roles.links`)."""
from __future__ import annotations

import numpy as np

from hpcmarl.algos import aggregation
from hpcmarl.comm import protocol, watchdog


# --------------------------------------------------------------------------------------------------
# learner: when does a round close (agreed across learners)
# --------------------------------------------------------------------------------------------------
class CounterGate:
    """Several learners, Rennala or Malenia: one set of round counters on learner 0, reached by messages.

    Every gradient a learner accepts is offered first: learner 0 decides and counts in one step, so exactly M
    Rennala tickets are accepted per round whatever the learners' timing, and Malenia accepts a gradient while the
    harmonic-mean rule over the per-actor counts is not met. Requests carry the round's sequence number; the first
    request of a new round resets the counters (no request of the previous round can follow it: every learner
    ended that round in the same all-reduce).

    A service thread on learner 0 answers the other learners on a communicator of its own, one request at a time
    (learner 0 itself goes through the same lock). Plain point-to-point messages work wherever the learners can
    talk at all: on one node and across nodes over TCP, where MPI one-sided windows need a transport with remote
    memory access (Open MPI's ``osc rdma`` gives ``MPI_ERR_WIN`` over TCP). One round trip per offered gradient,
    waited for by polling with sleeps (a blocking receive would spin a core). Whether the round closed, a learner
    learns from its last offer's answer, or from the notice learner 0 sends every other learner when a round
    closes (one message per round and learner, looked for without a round trip)."""

    TAG_REQUEST, TAG_REPLY, TAG_CLOSED = 1, 2, 3
    GET, OFFER = 0, 1

    def __init__(self, comm, rule, n_actors: int, timeout: float):
        import threading

        from mpi4py import MPI

        self.MPI = MPI
        self.rule, self.n, self.timeout = aggregation.get(rule), n_actors, timeout
        with watchdog.guard("every learner to open the round counters"):
            self.comm = comm.Dup()  # MPI: its own communicator, so no other message of the learners meets these
        self.lead = self.comm.Get_rank() == 0
        self.others = range(1, self.comm.Get_size())
        self.counters = np.zeros(n_actors, np.int64)  # (learner 0) gradients accepted this round per actor
        self.counted_round = -1
        self.noticed_round = -1  # (learner 0) the last round whose closing the others were told
        self.lock = threading.Lock()
        self.request = np.zeros(4, np.int64)  # [operation, round sequence number, M, actor]
        self.reply = np.zeros(2, np.int64)  # [accepted, closed]
        self.notice = np.zeros(1, np.int64)  # (the others) a round that closed
        self.notices = 0  # (the others) notices received
        self.closed_round = -1
        self.M = 0
        self.seq = -1  # rounds begun by this learner (the same on every learner)
        self.known = None  # the round's closed flag of the last offer, not yet looked at
        self.stopping = threading.Event()
        self.server = None
        if self.lead and self.comm.Get_size() > 1:
            self.server = threading.Thread(target=self._serve, name="hpcmarl-round-counters", daemon=True)
            self.server.start()

    def _apply(self, req: np.ndarray, out: np.ndarray) -> np.ndarray:
        op, seq, M, actor = (int(x) for x in req)
        rule, n = self.rule, self.n
        with self.lock:
            c = self.counters
            if seq > self.counted_round:
                c[:] = 0
                self.counted_round = seq
            ok = 0
            if op == self.OFFER and rule.accepts(c, c[actor], M, n):
                ok = 1
                c[actor] += 1
            closed = rule.closed(c, M, n)
            out[0], out[1] = ok, closed
            if closed and seq > self.noticed_round:  # tell the others once per round (small: sent eagerly)
                self.noticed_round = seq
                for r in self.others:
                    self.comm.Send([np.array([seq], np.int64), self.MPI.INT64_T], r, self.TAG_CLOSED)
        return out

    def _serve(self):
        """(learner 0) Answer requests until :meth:`close`; polls with a short backoff, so it costs no core."""
        MPI, comm = self.MPI, self.comm
        req, out, status = np.zeros(4, np.int64), np.zeros(2, np.int64), MPI.Status()
        backoff = protocol.Backoff(first=0.0001)
        while not self.stopping.is_set():
            if comm.Iprobe(MPI.ANY_SOURCE, self.TAG_REQUEST, status):
                src = status.Get_source()
                comm.Recv([req, MPI.INT64_T], src, self.TAG_REQUEST)
                comm.Send([self._apply(req, out), MPI.INT64_T], src, self.TAG_REPLY)
                backoff.reset()
            else:
                backoff.wait()

    def _call(self, op: int, actor: int = 0) -> np.ndarray:
        self.request[:] = (op, self.seq, self.M, actor)
        if self.lead:
            return self._apply(self.request, self.reply)
        MPI = self.MPI
        got = self.comm.Irecv([self.reply, MPI.INT64_T], 0, self.TAG_REPLY)
        sent = self.comm.Isend([self.request, MPI.INT64_T], 0, self.TAG_REQUEST)
        protocol.wait_buffer(sent, self.timeout, "learner 0 to take a request for the round counters")
        protocol.wait_buffer(got, self.timeout, "learner 0's round counters", max_sleep=0.0002)
        return self.reply

    def _take_notices(self, wait: bool = False) -> None:
        """(the others) Receive learner 0's notices of closed rounds that have arrived (``wait``: at least one)."""
        while wait or self.comm.Iprobe(0, self.TAG_CLOSED):
            req = self.comm.Irecv([self.notice, self.MPI.INT64_T], 0, self.TAG_CLOSED)
            protocol.wait_buffer(req, self.timeout, "learner 0's notice that a round closed")
            wait = False
            self.notices += 1
            self.closed_round = max(self.closed_round, int(self.notice[0]))

    def begin(self, M: int):
        self.M = M
        self.seq += 1
        self.known = None

    def closed(self) -> bool:
        if self.known is not None:  # the last offer's answer, not yet looked at: no round trip
            known, self.known = self.known, None
            if known:
                return True
        if self.lead:
            return bool(self._call(self.GET)[1])  # (no message: learner 0 holds the counters)
        self._take_notices()
        return self.closed_round >= self.seq

    def offer(self, actor: int) -> bool:
        ok, closed = self._call(self.OFFER, actor)
        self.known = bool(closed)
        return bool(ok)

    def close(self):
        if not self.lead:  # one notice per round begun: take those still on their way
            while self.notices < self.seq + 1:
                self._take_notices(wait=True)
        with watchdog.guard("every learner to close the round counters"):
            self.comm.Barrier()  # MPI: after it no learner asks any more
        self.stopping.set()
        if self.server is not None:
            self.server.join()
        self.comm.Free()
