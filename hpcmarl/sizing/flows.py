"""The sizing model's flow models: the synchronous and asynchronous rollout flows played on the discrete-event
kernel (:mod:`hpcmarl.sizing.kernel`) with a node profile's costs (:mod:`hpcmarl.sizing.profile`), and the
prediction they give (env steps/s, ingress, lag, bottleneck)."""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from hpcmarl.sizing.kernel import Barrier, Link, Machine, Mailbox, Prediction, Sim, Slots, place, ring_allreduce_s
from hpcmarl.sizing.profile import ASYNC, GRADIENTS, SYNC, Profile


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
def predict(p: Profile, m: Machine, actors: int, learners: int, updates: int = 60, seed: int = 0,
            max_sim_s: float = 3600.0, num_envs: Optional[int] = None) -> Prediction:
    """Simulate ``updates`` learner updates (after a warm-up of a fifth as many) of ``actors`` actors served by
    ``learners`` learners (actor i -> learner i mod L; ranks 0..L-1 are the learners, as in hpcmarl's layout), ranks
    placed on nodes as ``m.placement`` says.
    The profile's injected costs are sleeps (no CPU): actor i's after its unroll's compute
    (:meth:`Profile.actor_sleep_s`), a learner's after its update's compute and all-reduces. ``num_envs``: env copies
    per actor, when not the profile's (:meth:`Profile.at_envs`)."""
    if actors < 1 or learners < 1:
        raise ValueError("need at least one actor and one learner")
    if p.flow == GRADIENTS:
        if num_envs is not None and num_envs != p.num_envs:
            raise ValueError("the gradient flow's profile is played at the env copies it was measured with")
        from hpcmarl.sizing.gradients import predict_gradients

        return predict_gradients(p, m, actors, learners, updates, seed, max_sim_s)
    if num_envs is not None:
        p = p.at_envs(num_envs)
    sleep_actor = [p.actor_sleep_s(a, actors) for a in range(actors)]
    ranks = actors + learners
    sim = Sim()
    nodes, node_of, cpus = place(sim, m, ranks, p.busy_slowdown, p.wait_load)
    rng = np.random.default_rng(seed)
    served = [[a for a in range(actors) if a % learners == l] for l in range(learners)]
    learners_same_node = len({node_of(l) for l in range(learners)}) == 1
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

    # an injected step delay is slept after every env step: the unroll's compute and sleep alternate (in up to 32
    # slices; fewer with thousands of actors, to keep the simulation quick), so actors that mostly sleep seldom compute
    # at the same time
    slices = max(1, min(32, p.unroll_length or 1, 4096 // actors))

    def collect(a, node):
        work, n = collect_work(), (slices if sleep_actor[a] > 0 else 1)
        for _ in range(n):
            yield node.compute(work / n)
            if sleep_actor[a] > 0:
                yield sim.sleep(sleep_actor[a] / n)

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
            if p.update_delay_s > 0:
                t2 = sim.now
                yield sim.sleep(p.update_delay_s)
                busy_learner[l] += sim.now - t2
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
            yield from collect(a, node)
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
            yield from collect(a, node)
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
