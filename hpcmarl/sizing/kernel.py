"""The sizing model's discrete-event kernel: a clock with an event queue, processes as generators that yield
requests, the resources they share (a node's cores, a serial link, mailboxes, queue slots, a barrier), the machine
they run on (:class:`Machine`) and what a flow model returns (:class:`Prediction`)."""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Dict


# --------------------------------------------------------------------------------------------------
# a small discrete-event engine: processes are generators that yield requests
# --------------------------------------------------------------------------------------------------
class Sim:
    def __init__(self):
        self.now = 0.0
        self._q: list = []
        self._n = 0

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._q, (t, self._n, fn))
        self._n += 1

    def start(self, gen) -> None:
        self._resume(gen, None)

    def _resume(self, gen, value) -> None:
        try:
            req = gen.send(value)
        except StopIteration:
            return
        req(self, lambda v=None: self._resume(gen, v))

    def sleep(self, seconds: float):
        """A request: resume ``seconds`` later, using no CPU (an injected delay)."""
        def req(sim, k):
            sim.at(sim.now + max(0.0, seconds), k)
        return req

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        while self._q and self._q[0][0] <= until and not stop():
            self.now, _, fn = heapq.heappop(self._q)
            fn()


class Node:
    """Processor sharing: ``busy`` jobs on ``cores`` cores each progress at min(1, cores / demand) per second, where
    the demand counts every other of the node's ``ranks`` as ``wait_load`` of a core (it polls while it waits); slowed
    further by ``1 + (slowdown - 1) (min(busy, cores) - 1) / (cores - 1)`` (``slowdown`` with every core busy)."""

    def __init__(self, sim: Sim, cores: int, slowdown: float = 1.0, ranks: int = 0, wait_load: float = 0.0):
        self.sim, self.cores, self.slowdown, self.ranks, self.wait_load = sim, cores, slowdown, ranks, wait_load
        self.jobs: Dict[int, list] = {}  # id -> [remaining work, continuation]
        self._ids = 0
        self._t = 0.0
        self._token = 0
        self.busy_time = 0.0  # core-seconds used

    def _rate(self) -> float:
        if not self.jobs:
            return 0.0
        k, c = len(self.jobs), self.cores
        drag = 1.0 + (self.slowdown - 1.0) * (min(k, c) - 1) / (c - 1) if c > 1 else 1.0
        demand = k + self.wait_load * max(0, self.ranks - k)
        return min(1.0, c / demand) / drag

    def _advance(self) -> None:
        dt = self.sim.now - self._t
        if dt > 0 and self.jobs:
            r = self._rate()
            for j in self.jobs.values():
                j[0] -= dt * r
            self.busy_time += dt * min(len(self.jobs), self.cores)
        self._t = self.sim.now

    def _schedule(self) -> None:
        self._token += 1
        if not self.jobs:
            return
        token, r = self._token, self._rate()
        jid, job = min(self.jobs.items(), key=lambda kv: kv[1][0])
        self.sim.at(self.sim.now + max(0.0, job[0]) / r, lambda: self._finish(token))

    def _finish(self, token: int) -> None:
        if token != self._token:
            return
        self._advance()
        done = [jid for jid, j in self.jobs.items() if j[0] <= 1e-12]
        conts = [self.jobs.pop(jid)[1] for jid in done]
        self._schedule()
        for k in conts:
            k()

    def compute(self, work: float):
        def req(sim, k):
            self._advance()
            self._ids += 1
            self.jobs[self._ids] = [max(work, 0.0), k]
            self._schedule()
        return req


class Link:
    """A serial link (a learner's ingress): transfers queue and go one after the other."""

    def __init__(self, sim: Sim):
        self.sim, self.free_at, self.busy, self.bytes = sim, 0.0, 0.0, 0

    def send(self, latency: float, bw: float, nbytes: int):
        def req(sim, k):
            start = max(sim.now, self.free_at)
            dt = nbytes / bw
            self.free_at = start + dt
            self.busy += dt
            self.bytes += nbytes
            sim.at(self.free_at + latency, k)
        return req


class Mailbox:
    """Items put by one process, taken (in order) by another; ``get`` blocks while it is empty."""

    def __init__(self):
        self.items: list = []
        self.waiter = None

    def put(self, item) -> None:
        if self.waiter is not None:
            k, self.waiter = self.waiter, None
            k(item)
        else:
            self.items.append(item)

    def get(self):
        def req(sim, k):
            if self.items:
                item = self.items.pop(0)
                sim.at(sim.now, lambda: k(item))
            else:
                self.waiter = k
        return req


class Slots:
    """A learner's queue in the asynchronous flow: at most ``n`` unrolls (posted receives); a send waits for one."""

    def __init__(self, sim: Sim, n: int):
        self.sim, self.free, self.waiters = sim, n, []

    def acquire(self):
        def req(sim, k):
            if self.free > 0:
                self.free -= 1
                sim.at(sim.now, k)
            else:
                self.waiters.append(k)
        return req

    def release(self):
        if self.waiters:
            self.sim.at(self.sim.now, self.waiters.pop(0))
        else:
            self.free += 1


class Barrier:
    """``n`` parties; the last to arrive releases everybody ``duration`` seconds later (an all-reduce)."""

    def __init__(self, n: int, duration: float):
        self.n, self.duration, self.waiting = n, duration, []

    def wait(self):
        def req(sim, k):
            self.waiting.append(k)
            if len(self.waiting) == self.n:
                ks, self.waiting = self.waiting, []
                for kk in ks:
                    sim.at(sim.now + self.duration, kk)
        return req


@dataclass
class Machine:
    """The nodes and the transports. Defaults: shared memory ~5 GB/s; the network an InfiniBand HDR100-class link."""

    cores_per_node: int = 2
    ranks_per_node: int = 0  # 0 = every rank on one node
    placement: str = "block"  # ranks on nodes: "block" (Slurm's default: the first ranks_per_node ranks on node 1,
    # ...) or "cyclic" (round robin: rank r on node r mod nodes; srun --distribution=cyclic, mpirun --map-by node)
    shm_bw: float = 5e9  # bytes/s between ranks of one node
    shm_latency_s: float = 2e-6
    net_bw: float = 12.5e9  # bytes/s between nodes (100 Gb/s)
    net_latency_s: float = 2e-6
    allreduce_call_s: float = 2e-3  # fixed cost of one all-reduce call: Horovod negotiates every tensor in its
    # background cycle (HOROVOD_CYCLE_TIME); 1.8 ms measured on the 2-core test machine (10 calls per MAPPO update)
    poll_s: float = 5e-4  # a waiting rank notices a message this late on average

    def link(self, same_node: bool):
        return (self.shm_latency_s, self.shm_bw) if same_node else (self.net_latency_s, self.net_bw)


@dataclass
class Prediction:
    actors: int
    learners: int
    nodes: int
    env_steps_per_s: float
    updates_per_s: float
    ingress_bytes_per_s: float  # per learner
    ingress_utilisation: float  # fraction of time a learner's ingress link is busy (max over learners)
    lag_mean: float  # policy versions between the behaviour policy and the learner's at training
    actor_busy: float  # fraction of time an actor computes (mean)
    learner_busy: float  # fraction of time a learner computes (mean)
    cpu_load: float  # busy cores / cores, busiest node
    allreduce_share: float  # of a learner's time, waiting in all-reduces
    bottleneck: str
    detail: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"predicted: {self.env_steps_per_s:,.0f} env steps/s ({self.updates_per_s:.2f} updates/s) with "
                f"{self.actors} actors and {self.learners} learner(s) on {self.nodes} node(s)\n"
                f"  learner ingress {self.ingress_bytes_per_s / 1e6:,.1f} MB/s per learner "
                f"({self.ingress_utilisation:.0%} of its link); policy lag {self.lag_mean:.2f} versions\n"
                f"  busy: actors {self.actor_busy:.0%}, learners {self.learner_busy:.0%} (all-reduce "
                f"{self.allreduce_share:.0%} of a learner's time), busiest node's cores {self.cpu_load:.0%}\n"
                f"  bottleneck: {self.bottleneck}")


def ring_allreduce_s(m: Machine, learners: int, nbytes: int, same_node: bool) -> float:
    if learners <= 1:
        return 0.0
    lat, bw = m.link(same_node)
    return 2 * (learners - 1) * (lat + nbytes / (learners * bw)) + m.allreduce_call_s


def place(sim: Sim, m: Machine, ranks: int, busy_slowdown: float, wait_load: float):
    """The job's nodes: ``(how many, rank -> node as m.placement says, each node's cores as a Node)``."""
    per_node = m.ranks_per_node or ranks
    nodes = math.ceil(ranks / per_node)
    node_of = (lambda rank: rank % nodes) if m.placement == "cyclic" else (lambda rank: rank // per_node)
    on_node = [sum(node_of(r) == i for r in range(ranks)) for i in range(nodes)]
    return nodes, node_of, [Node(sim, m.cores_per_node, max(1.0, busy_slowdown), on_node[i], wait_load)
                            for i in range(nodes)]
