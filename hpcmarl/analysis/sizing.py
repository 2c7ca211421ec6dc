"""A sizing model for jobs larger than one node (``hpcmarl validate CONFIG --np N --predict``, ``tools/scale_model.py``).

From costs measured on the user's own node (:func:`measure`: one process, one core, no MPI, a few seconds), a small
discrete-event simulation (:func:`predict`) plays the job's layout -- A actors, L learners, ranks placed on nodes in
blocks as Slurm does by default -- and reports env steps/s, each learner's ingress load, the policy lag and the
bottleneck.

What the model assumes (and so what it leaves out):

- **CPU**: the ranks that compute on one node share its cores equally (processor sharing: k busy ranks on c cores
  each run at min(1, c/k) of full speed); a rank that waits for a message uses no CPU (hpcmarl's waits poll with
  sleeps, up to 1 ms late: ``Machine.poll_s``).
- **Messages** take ``latency + bytes / bandwidth``: shared memory within a node, the network across nodes. A learner
  receives its actors' unrolls one after the other (its ingress is one serial link); weights go out to every actor
  at once. Network contention between learners, NIC sharing and switch topology are not modelled.
- **All-reduce** (learners of one group, ``grad_steps`` per update, each a barrier): ring all-reduce,
  ``2 (L-1) (latency + bytes / (L bandwidth)) + allreduce_call_s`` per call.
- **Flows**: synchronous rollouts (MAPPO/IPPO/QMIX/VDN/MAST; ``actors.overlap`` lets an actor run one version
  ahead) and asynchronous rollouts (MA-Trace: a bounded queue per learner, ``batch_unrolls`` per update, weights
  every ``push_every`` updates, two sends in flight per actor). The gradient flow (NIGT) and league mode are not
  modelled.
"""
from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

ASYNC, SYNC = "async", "sync"


# --------------------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------------------
@dataclass
class Profile:
    """What one actor and one learner cost on this node (seconds on one core; sizes in bytes)."""

    env: str
    algo: str
    flow: str  # sync | async
    steps_per_unroll: int  # env steps in one unroll (unroll_length x num_envs)
    collect_s: float  # one unroll: env steps + inference + filling the record
    collect_cv: float  # its coefficient of variation over the measured unrolls
    env_s: float  # of collect_s: stepping the env copies
    infer_s: float  # of collect_s: the policy's forward passes
    update_fixed_s: float  # a learner update on k unrolls takes update_fixed_s + k * update_per_unroll_s
    update_per_unroll_s: float
    overhead_s: float  # the learner's bookkeeping per update (receive buffers, metrics, episode rows)
    grad_steps: int  # gradient steps (all-reduce calls) per update
    unroll_bytes: int
    weight_bytes: int
    grad_bytes: int  # one all-reduce: the flat gradient (+ the sample count)
    busy_slowdown: float = 1.0  # an unroll's time with every core of the node collecting / alone (memory bandwidth,
    # shared caches, SMT siblings, turbo): the model slows computing ranks by it in proportion to the busy cores
    cores_measured: int = 1  # how many processes collected at once to measure busy_slowdown
    wait_load: float = 0.0  # the share of a core a rank uses while it waits for a message (polling with sleeps)
    batch_unrolls: int = 1  # async flow: unrolls per update
    queue_size: int = 4  # async flow: unrolls a learner holds
    push_every: int = 1  # async flow: weights every this many updates
    overlap: bool = False  # sync flow: actors.overlap
    host: str = ""
    measured_at: str = ""

    def update_s(self, k: int) -> float:
        return self.update_fixed_s + k * self.update_per_unroll_s

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "Profile":
        with open(path) as f:
            d = json.load(f)
        fields = cls.__dataclass_fields__
        missing = [k for k, v in fields.items() if k not in d and v.default is MISSING] if isinstance(d, dict) else ["all"]
        if missing:
            raise ValueError(f"{path}: not a node profile (missing {', '.join(missing)})")
        return cls(**{k: d[k] for k in fields if k in d})


@dataclass
class Machine:
    """The nodes and the transports. Defaults: shared memory ~5 GB/s; the network an InfiniBand HDR100-class link."""

    cores_per_node: int = 2
    ranks_per_node: int = 0  # 0 = every rank on one node
    shm_bw: float = 5e9  # bytes/s between ranks of one node
    shm_latency_s: float = 2e-6
    net_bw: float = 12.5e9  # bytes/s between nodes (100 Gb/s)
    net_latency_s: float = 2e-6
    allreduce_call_s: float = 2e-3  # fixed cost of one all-reduce call: Horovod negotiates every tensor in its
    # background cycle (HOROVOD_CYCLE_TIME); 1.8 ms measured on the 2-core test machine (10 calls per MAPPO update)
    poll_s: float = 5e-4  # a waiting rank notices a message this late on average

    def link(self, same_node: bool):
        return (self.shm_latency_s, self.shm_bw) if same_node else (self.net_latency_s, self.net_bw)


def _actor(cfg):
    """Actor 0's sampler (env copies, inference policy, unroll spec), built as an actor rank builds it; no MPI."""
    import types

    from hpcmarl.roles.common import make_sampler

    return make_sampler(types.SimpleNamespace(cfg=cfg, start_update=0), 0, None)[0]


def _time_unrolls(sampler, n: int):
    """``n`` unrolls (after one to warm up: allocations, the first forward pass) and the seconds each took."""
    recs, times = [], []
    for i in range(n + 1):
        rec = sampler.spec.alloc()
        t0 = time.perf_counter()
        sampler.collect(rec)
        if i:
            times.append(time.perf_counter() - t0)
            recs.append(rec)
    return recs, times


def _busy_worker(cfg, n, barrier, results):
    import torch

    torch.set_num_threads(1)
    sampler = _actor(cfg)
    _time_unrolls(sampler, 1)
    barrier.wait()
    results.put(float(np.median(_time_unrolls(sampler, n)[1])))


def busy_slowdown(cfg, alone_s: float, processes: int, n: int = 8) -> float:
    """An unroll's time while ``processes`` processes collect at once (every core busy) over its time alone."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_busy_worker, args=(cfg, n, barrier, results), daemon=True) for _ in range(processes)]
    for q in procs:
        q.start()
    try:
        times = [results.get(timeout=600) for _ in procs]
    finally:
        for q in procs:
            q.join(timeout=10)
            if q.is_alive():
                q.terminate()
    return max(1.0, float(np.median(times)) / alone_s)


def wait_load(seconds: float = 0.5) -> float:
    """The share of a core one rank uses while it polls for a message that does not come: hpcmarl's wait loop (a
    test, then a sleep growing to 1 ms; the MPI test itself, a few microseconds, is left out so that this needs no
    MPI)."""
    t0, c0 = time.perf_counter(), time.process_time()
    sleep, polls = 0.0, 0
    while time.perf_counter() - t0 < seconds:
        polls += 1
        time.sleep(sleep)
        sleep = min(0.0002 if sleep == 0 else sleep * 1.5, 0.001)
    return float(min(1.0, (time.process_time() - c0) / (time.perf_counter() - t0)))


def measure(cfg, unrolls: int = 12, busy: int = -1, progress: Optional[Callable[[str], None]] = None) -> Profile:
    """Time one actor and one learner of ``cfg`` (one torch thread, the learner's device): ``unrolls`` unrolls
    collected alone, then with ``busy`` processes collecting at once (-1: one per core of this node, at most 32;
    0: skip), learner updates on 1, 2 and 4 unrolls (a straight line through the means), the unroll and weight sizes.
    Several seconds for the shipped configs."""
    import os
    import platform

    import torch

    from hpcmarl.algos import base as algos
    from hpcmarl.comm.spec import META_INDEX

    say = progress or (lambda s: None)
    algo = algos.get(cfg.algo.name)
    if algo.flow == "gradients":
        raise ValueError(f"algorithm {cfg.algo.name}: the gradient flow (NIGT) is not modelled")
    if cfg.league.enabled:
        raise ValueError("league mode is not modelled (its league rank and seat games)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sampler = _actor(cfg)
        venv, policy = sampler.venv, sampler.policy
        T, E = cfg.algo.unroll_length, cfg.env.num_envs
        device = torch.device("cuda" if cfg.learner.device.startswith("cuda") and torch.cuda.is_available() else "cpu")
        learner = algo.make_learner(venv.spec, cfg.algo, device, seed=cfg.seed, init_seed=cfg.seed)
        flat = learner.policy_flat()
        policy.load(flat, 0)
        say(f"timing {unrolls} unrolls of {T} steps x {E} env copies ({cfg.env.name})")
        recs, times = _time_unrolls(sampler, max(unrolls, 6))
        sampler.venv.close()
        t_env = [float(r["meta"][META_INDEX["t_env"]]) for r in recs]
        t_inf = [float(r["meta"][META_INDEX["t_infer"]]) for r in recs]
        for i, r in enumerate(recs):
            r["meta"][META_INDEX["actor"]] = i % 4
        procs = min(os.cpu_count() or 1, 32) if busy < 0 else busy
        slow = 1.0
        if procs > 1:
            say(f"timing unrolls with {procs} processes collecting at once (every core busy)")
            slow = busy_slowdown(cfg, float(np.median(times)), procs, n=max(8, unrolls // 2))
        # off-policy learners (registry: on_policy=False; QMIX, VDN) train only once their replay holds
        # learning_starts episodes: fill it first
        warm = 0
        while (not algo.on_policy and getattr(learner, "replay", None) is not None
               and learner.replay.size < getattr(cfg.algo, "learning_starts", 0) and warm < 200):
            learner.update(recs[:1], None, None, env_steps=0)
            warm += 1
        say("timing learner updates on 1, 2 and 4 unrolls")
        ks, upd = [1, 2, 4], []
        for k in ks:
            learner.update(recs[:k], None, None, env_steps=0)  # warm-up of this batch size
            reps = []
            for r in range(3):
                t0 = time.perf_counter()
                learner.update(recs[r:r + k], None, None, env_steps=0)
                reps.append(time.perf_counter() - t0)
            upd.append(float(np.median(reps)))
        slope, icept = np.polyfit(ks, upd, 1)
        slope = max(0.0, float(slope))
        icept = max(0.0, float(np.mean(upd) - slope * np.mean(ks)))
        # the learner loop's bookkeeping per update: a copy of the unroll (episode rows, RNG state) and ~1 ms for
        # metrics and HDF5 rows (1-2 ms per update measured on the 2-core test machine)
        t0 = time.perf_counter()
        for r in recs:
            r.copy()
        overhead = (time.perf_counter() - t0) / len(recs) + 1e-3
        n_params = sum(int(p.numel()) for p in learner.params)
        c = cfg.algo
        if algo.flow == "rollouts" and hasattr(c, "epochs") and hasattr(c, "minibatches"):
            grad_steps = c.epochs * c.minibatches
        elif hasattr(c, "epochs"):
            grad_steps = c.epochs
        else:
            grad_steps = getattr(c, "train_steps", 1)
        is_async = algo.flow == "rollouts_async"
        return Profile(
            env=cfg.env.name, algo=cfg.algo.name, flow=ASYNC if is_async else SYNC, steps_per_unroll=T * E,
            collect_s=float(np.mean(times)), collect_cv=float(np.std(times) / max(np.mean(times), 1e-12)),
            env_s=float(np.mean(t_env)), infer_s=float(np.mean(t_inf)), update_fixed_s=icept,
            update_per_unroll_s=slope, overhead_s=overhead, grad_steps=int(grad_steps),
            unroll_bytes=int(recs[0].buf.nbytes), weight_bytes=int(flat.size * 4 + 64), grad_bytes=int((n_params + 1) * 4),
            batch_unrolls=int(getattr(c, "batch_unrolls", 1)), queue_size=int(getattr(c, "queue_size", 4)),
            push_every=int(getattr(c, "push_every", 1)), overlap=bool(cfg.actors.overlap), busy_slowdown=slow,
            cores_measured=max(1, procs), wait_load=wait_load(), host=platform.node(),
            measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    finally:
        torch.set_num_threads(threads)


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


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
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


def predict(p: Profile, m: Machine, actors: int, learners: int, updates: int = 60, seed: int = 0,
            max_sim_s: float = 3600.0) -> Prediction:
    """Simulate ``updates`` learner updates (after a warm-up of a fifth as many) of ``actors`` actors served by
    ``learners`` learners (actor i -> learner i mod L; ranks 0..L-1 are the learners, as in hpcmarl's layout)."""
    if actors < 1 or learners < 1:
        raise ValueError("need at least one actor and one learner")
    ranks = actors + learners
    per_node = m.ranks_per_node or ranks
    nodes = math.ceil(ranks / per_node)
    sim = Sim()
    node_of = lambda rank: rank // per_node
    cpus = [Node(sim, m.cores_per_node, max(1.0, p.busy_slowdown), min(per_node, ranks - i * per_node), p.wait_load)
            for i in range(nodes)]
    rng = np.random.default_rng(seed)
    served = [[a for a in range(actors) if a % learners == l] for l in range(learners)]
    learners_same_node = nodes == 1 or per_node >= learners
    ar = ring_allreduce_s(m, learners, p.grad_bytes, learners_same_node) * p.grad_steps
    barrier = Barrier(learners, ar)
    ingress = [Link(sim) for _ in range(learners)]
    inbox = [Mailbox() for _ in range(learners)]
    arrived = [Mailbox() for _ in range(actors)]  # weights messages to each actor
    busy_actor = [0.0] * actors
    busy_learner = [0.0] * learners
    stats = {"updates": 0, "steps": 0, "lags": [], "t0": None, "steps0": 0, "ar_wait": 0.0}
    warm = max(2, updates // 5)
    sigma = math.sqrt(math.log(1 + p.collect_cv ** 2)) if p.collect_cv > 0 else 0.0

    def collect_work():
        return p.collect_s * (rng.lognormal(-sigma * sigma / 2, sigma) if sigma else 1.0)

    def link(src_rank, dst_rank):
        return m.link(node_of(src_rank) == node_of(dst_rank))

    def send_weights(l, v):
        for a in served[l]:
            lat, bw = link(l, learners + a)
            sim.at(sim.now + lat + p.weight_bytes / bw + m.poll_s, (lambda a=a: arrived[a].put(v)))

    def learner_proc(l):
        node = cpus[node_of(l)]
        if p.flow == SYNC:
            send_weights(l, 0)
        v = 0
        queue: list = []
        while True:
            if p.flow == SYNC:
                items = []
                for _ in served[l]:
                    items.append((yield inbox[l].get()))
                k = len(items)
            else:
                while len(queue) < p.batch_unrolls:
                    queue.append((yield inbox[l].get()))
                items, queue = queue[:p.batch_unrolls], queue[p.batch_unrolls:]
                k = len(items)
            work = p.update_s(k) + p.overhead_s
            t0 = sim.now
            yield node.compute(work)
            busy_learner[l] += sim.now - t0
            t1 = sim.now
            yield barrier.wait()
            if l == 0:
                stats["ar_wait"] += sim.now - t1
            for a, bv in items:
                stats["lags"].append(v - bv)
            v += 1
            stats["steps"] += k * p.steps_per_unroll
            if l == 0:
                stats["updates"] += 1
                if stats["updates"] == warm:
                    stats["t0"], stats["steps0"] = sim.now, stats["steps"]
            if p.flow == SYNC or v % p.push_every == 0:
                send_weights(l, v)
            if p.flow == ASYNC:
                for _ in items:  # the queue slots these unrolls held are free again
                    slots[l].release()

    slots = [Slots(sim, max(p.queue_size, p.batch_unrolls)) for _ in range(learners)]

    def transfer(a, l, bv):
        """Send an unroll through learner l's ingress, then it is in the learner's inbox."""
        yield ingress[l].send(*link(learners + a, l), p.unroll_bytes)
        inbox[l].put((a, bv))

    def sync_actor(a):
        rank, l = learners + a, a % learners
        node = cpus[node_of(rank)]
        lead = 1 if p.overlap else 0
        held, sent = -1, 0
        while True:
            while True:  # take the weights that arrived; wait while those held are too old
                if held < sent - lead or arrived[a].items:
                    held = yield arrived[a].get()
                else:
                    break
            t0 = sim.now
            yield node.compute(collect_work())
            busy_actor[a] += sim.now - t0
            if p.overlap:
                sim.start(transfer(a, l, held))
            else:
                yield from transfer(a, l, held)
            sent += 1

    def async_actor(a):
        rank, l = learners + a, a % learners
        node = cpus[node_of(rank)]
        pending: List[Mailbox] = []
        held = 0
        while True:
            while arrived[a].items:  # between unrolls the actor takes every weights message that arrived
                held = arrived[a].items.pop(0)
            bv = held
            t0 = sim.now
            yield node.compute(collect_work())
            busy_actor[a] += sim.now - t0
            done = Mailbox()

            def send(bv=bv, done=done):
                yield slots[l].acquire()
                yield from transfer(a, l, bv)
                done.put(1)
            sim.start(send())
            pending.append(done)
            if len(pending) >= 2:  # both send buffers in flight: wait for the older one
                yield pending.pop(0).get()

    for l in range(learners):
        sim.start(learner_proc(l))
    for a in range(actors):
        sim.start(sync_actor(a) if p.flow == SYNC else async_actor(a))
    sim.run(max_sim_s, stop=lambda: stats["updates"] >= warm + updates)
    if stats["t0"] is None or sim.now <= stats["t0"]:
        raise RuntimeError(f"the simulation did not reach {warm} updates in {max_sim_s:.0f} simulated seconds")
    span = sim.now - stats["t0"]
    sps = (stats["steps"] - stats["steps0"]) / span
    ups = updates / span
    total_time = sim.now
    ing_bytes = max(i.bytes for i in ingress) / total_time
    ing_util = max(i.busy for i in ingress) / total_time
    actor_busy = float(np.mean(busy_actor)) / total_time
    learner_busy = float(np.mean(busy_learner)) / total_time
    cpu_load = max(n.busy_time for n in cpus) / (total_time * m.cores_per_node)
    ar_share = stats["ar_wait"] / total_time
    lag = float(np.mean(stats["lags"])) if stats["lags"] else 0.0
    # the bottleneck: the resource closest to saturation
    cands = {"learner ingress (unroll bytes per learner; add learners or shrink unrolls)": ing_util,
             "all-reduce between learners (fewer/larger updates, or fewer learners)": ar_share,
             "learner compute (add learners, or fewer epochs)": learner_busy,
             "actor compute (add actors, or cheaper env/inference)": actor_busy}
    if cpu_load > 0.9 and (actors + learners) / nodes > m.cores_per_node:
        cands["CPU cores (more ranks than cores on a node: fewer ranks per node)"] = cpu_load + 0.01
    bottleneck = max(cands, key=cands.get)
    return Prediction(actors, learners, nodes, sps, ups, ing_bytes, ing_util, lag, actor_busy, learner_busy, cpu_load,
                      ar_share, bottleneck, {"simulated_s": total_time, "allreduce_per_update_s": ar})
