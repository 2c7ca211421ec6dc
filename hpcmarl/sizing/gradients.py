"""The sizing model's gradient flow (NIGT): its discrete-event round model (:func:`predict_gradients`, what
:func:`hpcmarl.sizing.predict` plays for a profile :func:`hpcmarl.sizing.measure` took of a NIGT config)."""
from __future__ import annotations

import math

import numpy as np

from hpcmarl.sizing.kernel import Machine, Mailbox, Prediction, Sim, place, ring_allreduce_s
from hpcmarl.sizing.profile import Profile


def predict_gradients(p: Profile, m: Machine, actors: int, learners: int, rounds: int = 60, seed: int = 0,
                      max_sim_s: float = 3600.0) -> Prediction:
    """The gradient flow (NIGT) played on the kernel: each actor collects batches of ``num_envs`` whole trajectories
    at the round's query point (compute and injected sleeps alternating per env step) and sends one gradient per
    trajectory once their policy gradients are computed; a query point of a new round arriving mid-batch abandons
    it (its env steps still count). The round closes by the profile's rule on the gradients of its own round
    (Rennala: M in all; Malenia: the harmonic-mean rule on the per-actor counts; allreduce: ceil(M / A) from every
    actor, each actor stopping at its quota); under a rule with shared counters, a learner not holding them (learner
    0) reaches them by a round trip. Then one all-reduce of the sums and counts across the learners, the NIGT step,
    the injected update cost, and the next query point goes out to every actor."""
    from hpcmarl.algos import aggregation

    rule, M = aggregation.get(p.aggregation), max(1, p.batch)
    ranks = actors + learners
    sim = Sim()
    nodes, node_of, cpus = place(sim, m, ranks, p.busy_slowdown, p.wait_load)
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1 + p.collect_cv ** 2)) if p.collect_cv > 0 else 0.0
    sleep_actor = [p.actor_sleep_s(a, actors) for a in range(actors)]
    q = rule.quota(M, actors)
    same = len({node_of(l) for l in range(learners)}) == 1
    ar = ring_allreduce_s(m, learners, p.allreduce_bytes + 8 * actors, same)
    arrived = [Mailbox() for _ in range(actors)]  # query points (round numbers) sent to each actor
    rnd = {"t": 0, "closed": False, "counts": np.zeros(actors, np.int64)}
    stats = {"rounds": 0, "steps": 0, "t0": None, "steps0": 0, "accepted": 0, "abandoned": 0, "busy": [0.0] * actors}
    warm = max(2, rounds // 5)
    T = max(1, p.unroll_length)
    slices = max(1, min(32, T, 4096 // actors))

    def link(a_rank, b_rank):
        return m.link(node_of(a_rank) == node_of(b_rank))

    def hand_out():
        for a in range(actors):
            lat, bw = link(a % learners, learners + a)
            sim.at(sim.now + lat + p.weight_bytes / bw + m.poll_s, (lambda a=a, t=rnd["t"]: arrived[a].put(t)))

    def end_round():
        node = cpus[node_of(0)]
        if learners > 1:
            yield sim.sleep(ar)
        yield node.compute(p.update_fixed_s + p.overhead_s)
        if p.update_delay_s > 0:
            yield sim.sleep(p.update_delay_s)
        stats["rounds"] += 1
        if stats["rounds"] == warm:
            stats["t0"], stats["steps0"] = sim.now, stats["steps"]
        rnd["t"] += 1
        rnd["closed"] = False
        rnd["counts"][:] = 0
        hand_out()

    def offer(a, t):
        if t != rnd["t"] or rnd["closed"]:
            return  # dropped: computed for a round that closed
        rnd["counts"][a] += 1
        stats["accepted"] += 1
        if rule.closed(rnd["counts"], M, actors):
            rnd["closed"] = True
            sim.start(end_round())

    def actor(a):
        rank, l = learners + a, a % learners
        node = cpus[node_of(rank)]
        t = yield arrived[a].get()
        made = 0
        while True:
            if arrived[a].items:  # a newer query point: take the newest
                t, made = arrived[a].items[-1], 0
                arrived[a].items.clear()
            if q and made >= q:  # synchronous aggregation: quota done, wait for the next round
                t, made = (yield arrived[a].get()), 0
                continue
            work = p.collect_s * (rng.lognormal(-sigma * sigma / 2, sigma) if sigma else 1.0)
            t0, done = sim.now, 0
            for i in range(slices):
                yield node.compute(work / slices)
                if sleep_actor[a] > 0:
                    yield sim.sleep(sleep_actor[a] / slices)
                done += 1
                if arrived[a].items:
                    break
            stats["steps"] += p.steps_per_unroll * done / slices
            if done < slices:  # abandoned: a new round's query point came mid-batch
                stats["abandoned"] += p.num_envs
                stats["busy"][a] += sim.now - t0
                continue
            yield node.compute(p.grad_s)
            stats["busy"][a] += sim.now - t0
            lat, bw = link(rank, l)
            delay = lat + p.grad_bytes / bw + m.poll_s
            if l != 0 and rule.shared_counters:  # the round counters on learner 0: a round trip
                delay += 2 * link(l, 0)[0] + m.poll_s
            for _ in range(p.num_envs if not q else min(p.num_envs, q - made)):
                sim.at(sim.now + delay, (lambda a=a, t=t: offer(a, t)))
                made += 1

    hand_out()
    for a in range(actors):
        sim.start(actor(a))
    sim.run(max_sim_s, stop=lambda: stats["rounds"] >= warm + rounds)
    if stats["t0"] is None or sim.now <= stats["t0"]:
        raise RuntimeError(f"the simulation did not reach {warm} rounds in {max_sim_s:.0f} simulated seconds")
    span = sim.now - stats["t0"]
    sps = (stats["steps"] - stats["steps0"]) / span
    total = sim.now
    actor_busy = float(np.mean(stats["busy"])) / total
    cpu_load = max(n.busy_time for n in cpus) / (total * m.cores_per_node)
    cands = {"actor compute (add actors, or cheaper env/inference)": actor_busy,
             "all-reduce between learners (fewer learners)": ar * rounds / span}
    if cpu_load > 0.9 and ranks / nodes > m.cores_per_node:
        cands["CPU cores (more ranks than cores on a node: fewer ranks per node)"] = cpu_load + 0.01
    return Prediction(actors, learners, nodes, sps, rounds / span, 0.0, 0.0, 0.0, actor_busy, 0.0, cpu_load,
                      ar * rounds / span, max(cands, key=cands.get),
                      {"simulated_s": total, "allreduce_per_update_s": ar,
                       "abandoned_per_round": stats["abandoned"] / max(1, stats["rounds"])})
