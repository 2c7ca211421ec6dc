"""The node profile of the sizing model: what one actor and one learner of a config cost on this node, measured in
one process without MPI (:func:`measure`; the actor is built as an actor rank builds it, :mod:`hpcmarl.actors`)."""
from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, field, replace
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from hpcmarl.flows import SIZING_MODELS

SYNC, ASYNC, GRADIENTS = SIZING_MODELS  # the flow models (a flow's `sizing`); a profile's `flow` is one of them


# --------------------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------------------
@dataclass
class Profile:
    """What one actor and one learner cost on this node (seconds on one core; sizes in bytes)."""

    env: str
    algo: str
    flow: str  # sync | async | gradients (NIGT: an "unroll" is one batch of num_envs whole trajectories)
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
    # injected costs (the config's; :func:`measure` times the real costs without them and adds them here): actor i
    # sleeps unroll_length x step_delay_s x h_i per unroll (h from `delay`, actors.delay), a learner update_delay_s
    # per update; sleeping ranks use no CPU
    unroll_length: int = 0  # T (0: unknown, an old profile; steps_per_unroll / num_envs)
    num_envs: int = 0  # E the costs above were measured at (0: unknown)
    step_delay_s: float = 0.0
    delay: Any = "equal"
    update_delay_s: float = 0.0
    # batched envs: [E, collect, env, inference seconds per step of all E copies] at the E values measured
    # (measure(envs=...)); at_envs(E) interpolates piecewise linearly in E (a + b E between two measured E, the end
    # segments' lines beyond them; one point: cost proportional to E)
    envs_curve: List[List[float]] = field(default_factory=list)
    parts: int = 1  # env.parts the actor's copies were stepped in (double-buffered sampling: env and policy overlap)
    # gradient flow (NIGT): the closing rule, M gradients per round, and the policy gradients of one batch of
    # trajectories (collect_s is its collection); grad_bytes is then one gradient message, allreduce_bytes the round's
    # sums (the per-actor counts come on top)
    aggregation: str = ""
    batch: int = 0
    grad_s: float = 0.0
    allreduce_bytes: int = 0

    def update_s(self, k: int) -> float:
        return self.update_fixed_s + k * self.update_per_unroll_s

    def actor_sleep_s(self, actor: int, actors: int) -> float:
        """Seconds actor ``actor`` of ``actors`` sleeps per unroll (``actors.step_delay_s`` x h_i per env step)."""
        if self.step_delay_s <= 0:
            return 0.0
        from hpcmarl.config import delay_factors

        T = self.unroll_length or self.steps_per_unroll // max(1, self.num_envs or 1)
        return T * self.step_delay_s * delay_factors(self.delay, max(actors, actor + 1))[actor]

    def with_delays(self, step_delay_s: float, update_delay_s: float, delay: Any = None) -> "Profile":
        return replace(self, step_delay_s=float(step_delay_s), update_delay_s=float(update_delay_s),
                       delay=self.delay if delay is None else delay)

    def step_cost(self, E: int, column: int = 1) -> float:
        """Seconds per step of ``E`` env copies: column 1 the whole collect (env + inference + the record), 2 the
        env, 3 inference; from ``envs_curve`` (or, without one, this profile's cost scaled in proportion to E)."""
        pts = sorted((float(r[0]), float(r[column])) for r in self.envs_curve)
        if not pts:
            T, E0 = self.unroll_length, self.num_envs
            if not (T and E0):
                raise ValueError("this profile does not know its unroll_length and num_envs (measured before they "
                                 "were recorded): measure it again")
            base = (self.collect_s, self.env_s, self.infer_s)[column - 1] / T
            return base * E / E0
        if len(pts) == 1:
            return pts[0][1] * E / pts[0][0]
        i = 1
        while i < len(pts) - 1 and pts[i][0] < E:
            i += 1
        (e0, c0), (e1, c1) = pts[i - 1], pts[i]
        c = c0 + (c1 - c0) * (E - e0) / (e1 - e0)
        return max(c, 1e-3 * min(c0, c1))

    def at_envs(self, E: int) -> "Profile":
        """This profile for ``E`` env copies per actor: collect, env and inference time from :meth:`step_cost`, the
        unroll's size and the learner's per-unroll cost in proportion to E (the fixed part of an update stays)."""
        E0 = self.num_envs or (self.steps_per_unroll // max(1, self.unroll_length))
        if E == E0:
            return self
        if E % self.parts:
            raise ValueError(f"{E} env copies do not split into the profile's env.parts={self.parts}")
        T = self.unroll_length
        if not T:
            raise ValueError("this profile does not know its unroll_length: measure it again")
        r = E / E0
        return replace(self, num_envs=E, steps_per_unroll=T * E, collect_s=T * self.step_cost(E, 1),
                       env_s=T * self.step_cost(E, 2), infer_s=T * self.step_cost(E, 3),
                       update_per_unroll_s=self.update_per_unroll_s * r, unroll_bytes=int(self.unroll_bytes * r))

    def for_config(self, cfg) -> "Profile":
        """This profile played for ``cfg``: its injected costs and env copies (:meth:`at_envs`). A profile measured
        for another env, algorithm, unroll length or ``env.parts`` is refused: its costs are not this config's."""
        want = {"env.name": (self.env, cfg.env.name), "algo.name": (self.algo, cfg.algo.name),
                "env.parts": (self.parts, cfg.env.parts)}
        if self.unroll_length and self.flow != GRADIENTS:  # 0: an old profile that did not record it (NIGT: none)
            want["algo.unroll_length"] = (self.unroll_length, cfg.algo.unroll_length)
        diff = [f"{k} {a} (config: {b})" for k, (a, b) in want.items() if a != b]
        if diff:
            raise ValueError(f"the node profile was measured with {', '.join(diff)}: measure this config "
                             f"(--predict without --profile, or --save-profile)")
        p = self.with_delays(cfg.actors.step_delay_s, cfg.learner.update_delay_s, cfg.actors.delay)
        if p.flow == GRADIENTS:  # the closing rule and M are the config's; the env copies must be the profile's
            if p.num_envs != cfg.env.num_envs:
                raise ValueError(f"the node profile was measured with env.num_envs {p.num_envs} (config: "
                                 f"{cfg.env.num_envs}): measure this config")
            return replace(p, aggregation=cfg.algo.aggregation, batch=int(cfg.algo.batch))
        return p.at_envs(cfg.env.num_envs) if p.num_envs and p.num_envs != cfg.env.num_envs else p

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "Profile":
        with open(path) as f:
            d = json.load(f)
        fields = cls.__dataclass_fields__
        missing = ([k for k, v in fields.items() if k not in d and v.default is MISSING] if isinstance(d, dict)
                   else ["all"])
        if missing:
            raise ValueError(f"{path}: not a node profile (missing {', '.join(missing)})")
        return cls(**{k: d[k] for k in fields if k in d})


def _measure_gradients(cfg, injected, batches: int, say) -> "Profile":
    """The gradient flow's node profile (NIGT): one actor's batches of whole trajectories (collection, then their
    policy gradients, timed apart), one NIGT step; ``injected``: the config with its injected costs."""
    import platform

    import torch

    from hpcmarl.actors import ActorPlan, make_actor
    from hpcmarl.algos.nigt import NIGT, trajectory_gradients
    from hpcmarl.comm.spec import GRAD_META

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        collector = make_actor(ActorPlan(cfg))
        policy, spec, E = collector.policy, collector.policy.spec, cfg.env.num_envs
        say(f"timing {batches} batches of {E} trajectories ({cfg.env.name}) and their policy gradients")
        collect, grads, steps = [], [], []
        for i in range(max(batches, 4) + 1):
            t0 = time.perf_counter()
            traj, _, lengths = collector.collect(lambda: False, cfg.seed + i)
            t1 = time.perf_counter()
            trajectory_gradients(policy.policies, spec, traj, cfg.algo.gamma)
            t2 = time.perf_counter()
            if i:  # the first one warms up
                collect.append(t1 - t0)
                grads.append(t2 - t1)
                steps.append(int(np.sum(lengths)))
        collector.venv.close()
        d = sum(int(p.numel()) for p in policy.params)
        flat = np.zeros(d)
        nigt = NIGT(flat, cfg.algo.lr, cfg.algo.momentum)
        t0 = time.perf_counter()
        for _ in range(20):
            nigt.step(np.ones(d))
        step_s = (time.perf_counter() - t0) / 20
        T = int(round(np.mean(steps) / E))
        n_groups = len(spec.groups)
        return Profile(
            env=cfg.env.name, algo=cfg.algo.name, flow=GRADIENTS, steps_per_unroll=int(round(np.mean(steps))),
            collect_s=float(np.mean(collect)), collect_cv=float(np.std(collect) / max(np.mean(collect), 1e-12)),
            env_s=0.0, infer_s=0.0, update_fixed_s=step_s, update_per_unroll_s=0.0, overhead_s=1e-3, grad_steps=1,
            unroll_bytes=0, weight_bytes=d * 4 + 64, grad_bytes=d * 4 + (len(GRAD_META) + n_groups) * 8,
            wait_load=wait_load(), host=platform.node(), measured_at=time.strftime("%Y-%m-%d %H:%M:%S"),
            unroll_length=T, num_envs=E, step_delay_s=float(injected.actors.step_delay_s), delay=injected.actors.delay,
            update_delay_s=float(injected.learner.update_delay_s), cores_measured=1,
            aggregation=cfg.algo.aggregation, batch=int(cfg.algo.batch), grad_s=float(np.mean(grads)),
            allreduce_bytes=d * 8, parts=int(cfg.env.parts))
    finally:
        torch.set_num_threads(threads)


def _actor(cfg):
    """Actor 0's sampler (env copies, inference policy, unroll spec), built as an actor rank builds it; no MPI."""
    from hpcmarl.actors import ActorPlan, make_sampler

    return make_sampler(ActorPlan(cfg))[0]


def _time_unrolls(sampler, n: int, warm: bool = True, keep: int = 0):
    """``n`` unrolls (after one to warm up, unless not ``warm``: allocations, the first forward pass) into two
    records used in turn, as an actor collects (a fresh record per unroll would add its first-touch page faults: 30 %
    of the time at 110 MB); returns the unrolls' meta rows, the seconds each took and copies of the first ``keep``."""
    ring = getattr(sampler, "_timing_ring", None)
    if ring is None:
        ring = sampler._timing_ring = [sampler.spec.alloc() for _ in range(2)]
        for r in ring:
            r.buf.fill(1)  # touch every page now
    metas, times, kept = [], [], []
    for i in range(n + 1 if warm else n):
        rec = ring[i % 2]
        t0 = time.perf_counter()
        sampler.collect(rec)
        if i or not warm:
            times.append(time.perf_counter() - t0)
            metas.append(rec["meta"].copy())
            if len(kept) < keep:
                kept.append(rec.copy())
    return metas, times, kept


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

    spawn = mp.get_context("spawn")
    barrier, results = spawn.Barrier(processes), spawn.Queue()
    procs = [spawn.Process(target=_busy_worker, args=(cfg, n, barrier, results), daemon=True) for _ in range(processes)]
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
    """The share of a core one rank uses while it polls for a message that does not come for ``seconds``: hpcmarl's
    wait loop (:class:`hpcmarl.comm.protocol.Backoff`: a test, then a sleep growing to 1 ms or 1% of the wait; the MPI
    test itself, a few microseconds, is left out so that this needs no MPI)."""
    from hpcmarl.comm.protocol import Backoff

    t0, c0 = time.perf_counter(), time.process_time()
    backoff = Backoff()
    while time.perf_counter() - t0 < seconds:
        backoff.wait()
    return float(min(1.0, (time.process_time() - c0) / (time.perf_counter() - t0)))


def real_costs(cfg):
    """A copy of ``cfg`` without the injected costs (``actors.step_delay_s``, ``learner.update_delay_s``)."""
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.actors.step_delay_s, cfg.learner.update_delay_s = 0.0, 0.0
    return cfg


def check_envs_split(cfg, envs: Sequence[int]) -> None:
    """Every number of env copies ``envs`` to time splits into the config's ``env.parts`` (else a ValueError)."""
    bad = [int(E) for E in envs if int(E) % cfg.env.parts]
    if bad:
        raise ValueError(f"env.parts={cfg.env.parts} must divide every number of env copies timed (not {bad})")


def step_costs(cfg, envs: Sequence[int], unrolls: int = 3, rounds: int = 1) -> List[List[float]]:
    """``[E, collect, env, inference seconds per step]`` of actor 0 of ``cfg`` (without injected costs) with E env
    copies, for each E of ``envs``: the median over ``unrolls`` unrolls after one to warm up (robust to another
    process's burst on a shared machine). ``rounds`` > 1: the unrolls are timed in that many rounds over every E in
    turn (all the samplers built first), so that this machine's drift while it measures moves every E alike."""
    import torch

    from hpcmarl.comm.spec import META_INDEX

    check_envs_split(cfg, envs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    samplers, T = [], cfg.algo.unroll_length
    times = {int(E): ([], [], []) for E in envs}
    try:
        for E in envs:
            c = real_costs(cfg)
            c.env.num_envs = int(E)
            samplers.append((int(E), _actor(c)))
            _time_unrolls(samplers[-1][1], 0)  # the warm-up unroll (a jitted env compiles here)
        per = [unrolls // rounds + (r < unrolls % rounds) for r in range(rounds)]
        for n in per:
            for E, sampler in samplers:
                metas, ts, _ = _time_unrolls(sampler, n, warm=False)
                times[E][0].extend(ts)
                times[E][1].extend(float(m[META_INDEX["t_env"]]) for m in metas)
                times[E][2].extend(float(m[META_INDEX["t_infer"]]) for m in metas)
    finally:
        for _, sampler in samplers:
            sampler.venv.close()
        torch.set_num_threads(threads)
    return [[E, *(float(np.median(times[E][i])) / T for i in range(3))] for E in times]


def measure(cfg, unrolls: int = 12, busy: int = -1, progress: Optional[Callable[[str], None]] = None,
            envs: Sequence[int] = ()) -> Profile:
    """Time one actor and one learner of ``cfg`` (one torch thread, the learner's device): ``unrolls`` unrolls
    collected alone, then with ``busy`` processes collecting at once (-1: one per core of this node, at most 32;
    0: skip), learner updates on 1, 2 and 4 unrolls (a straight line through the means), the unroll and weight sizes.
    Several seconds for the shipped configs. The real costs: the config's injected costs (``actors.step_delay_s``,
    ``learner.update_delay_s``) are not slept here but recorded in the profile, which adds them exactly. ``envs``:
    also time unrolls with these numbers of env copies (:func:`step_costs`: the profile's ``envs_curve``, for
    :meth:`Profile.at_envs`)."""
    import os
    import platform

    import torch

    from hpcmarl.algos import base as algos
    from hpcmarl.comm.spec import META_INDEX

    say = progress or (lambda s: None)
    check_envs_split(cfg, envs)  # before the timings, not after them
    injected = cfg
    cfg = real_costs(cfg)
    algo = algos.get(cfg.algo.name)
    if cfg.league.enabled:
        raise ValueError("league mode is not modelled (its league rank and seat games)")
    flow = algo.data_flow()
    if flow.sizing is None:
        raise ValueError(f"the {flow.name} flow is not modelled (its registration names no sizing model)")
    if flow.sizing == GRADIENTS:
        return _measure_gradients(cfg, injected, unrolls, say)
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
        metas, times, recs = _time_unrolls(sampler, max(unrolls, 6), keep=6)
        sampler.venv.close()
        t_env = [float(m[META_INDEX["t_env"]]) for m in metas]
        t_inf = [float(m[META_INDEX["t_infer"]]) for m in metas]
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
        if flow.sizing == SYNC and hasattr(c, "epochs") and hasattr(c, "minibatches"):
            grad_steps = c.epochs * c.minibatches
        elif hasattr(c, "epochs"):
            grad_steps = c.epochs
        else:
            grad_steps = getattr(c, "train_steps", 1)
        curve = [[E, float(np.median(times)) / T, float(np.median(t_env)) / T, float(np.median(t_inf)) / T]]
        if envs:
            say(f"timing unrolls with {', '.join(map(str, envs))} env copies")
            curve = sorted([r for r in curve if r[0] not in envs] + step_costs(cfg, envs, max(3, unrolls // 2)))
        return Profile(
            env=cfg.env.name, algo=cfg.algo.name, flow=flow.sizing, steps_per_unroll=T * E,
            collect_s=float(np.mean(times)), collect_cv=float(np.std(times) / max(np.mean(times), 1e-12)),
            env_s=float(np.mean(t_env)), infer_s=float(np.mean(t_inf)), update_fixed_s=icept,
            update_per_unroll_s=slope, overhead_s=overhead, grad_steps=int(grad_steps),
            unroll_bytes=int(recs[0].buf.nbytes), weight_bytes=int(flat.size * 4 + 64),
            grad_bytes=int((n_params + 1) * 4),
            batch_unrolls=int(getattr(c, "batch_unrolls", 1)), queue_size=int(getattr(c, "queue_size", 4)),
            push_every=int(getattr(c, "push_every", 1)), overlap=bool(cfg.actors.overlap), busy_slowdown=slow,
            cores_measured=max(1, procs), wait_load=wait_load(), host=platform.node(),
            measured_at=time.strftime("%Y-%m-%d %H:%M:%S"), unroll_length=T, num_envs=E,
            step_delay_s=float(injected.actors.step_delay_s), delay=injected.actors.delay,
            update_delay_s=float(injected.learner.update_delay_s), envs_curve=curve, parts=int(cfg.env.parts))
    finally:
        torch.set_num_threads(threads)
