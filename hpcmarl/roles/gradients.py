"""MPI role shells of the gradient flow (NIGT with Rennala / Malenia / synchronous aggregation).

Protocol per round t (compute lives in :mod:`hpcmarl.algos.nigt` and :class:`~hpcmarl.sampler.TrajectoryCollector`):

    learner -> actor   WEIGHTS (version = round t, quota, the query point x_t as float32)
    actor   -> learner GRADIENT (round t, g_H(tau, x_t), steps, returns), one per finished trajectory,
                       as long as the round lasts (or until its quota, for synchronous allreduce)
    learner            accepts gradients of round t until the round closes, drops every other one;
                       with several learners the closing is agreed through counters on learner 0,
                       reached by messages (Rennala: one ticket per gradient, exactly M tickets below
                       M are accepted; Malenia: per-actor counts, harmonic-mean rule); then one
                       all-reduce of [sums, per-actor counts] and the same NIGT step on
                       every learner
    actor              a WEIGHTS message of a new round arriving mid-trajectory abandons it
    stop               WEIGHTS with command STOP/PREEMPTED; the actor finishes its sends and answers
                       BYE {sent, abandoned}; the learner drains that many GRADIENT messages.

An actor's work without MPI (collector, gradient records) is built in :mod:`hpcmarl.actors`; the learner's links to
its actors in :mod:`hpcmarl.roles.links` (shared by every flow), the round counters in
:mod:`hpcmarl.roles.counter_gate`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from hpcmarl.algos import aggregation
from hpcmarl.algos.base import make_inference
from hpcmarl.algos.nigt import NIGT, LocalGate, Round
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import GRAD_INDEX, WEIGHT_INDEX, gradient_spec, weights_spec
from hpcmarl.models import assign_flat, checksum, flat_params
from hpcmarl.roles import loop
from hpcmarl.roles.actor_work import GradientActor, run_actor
from hpcmarl.roles.common import episode_row
from hpcmarl.roles.counter_gate import CounterGate
from hpcmarl.roles.links import ActorLink, LocalGradLink
from hpcmarl.roles.loop import LearnerSide, run_learner
from hpcmarl.sampler import sleep_for

G = GRAD_INDEX


# --------------------------------------------------------------------------------------------------
# actor
# --------------------------------------------------------------------------------------------------
def actor_main(ctx) -> None:
    run_actor(ctx, GradientActor(ctx))


# --------------------------------------------------------------------------------------------------
# learner
# --------------------------------------------------------------------------------------------------
class GradientFlow(LearnerSide):
    """The gradient flow in the learner loop: one round = one NIGT round (gradients computed at the query point
    x_t accepted until the round closes -> one all-reduce -> one NIGT step)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg, layout, algo, spec = ctx.cfg, ctx.layout, ctx.cfg.algo, ctx.env_spec
        torch.manual_seed(cfg.seed)
        self.template = make_inference(spec, algo)  # parameter layout + initial theta_0 (same seed on every learner)
        self.coll.broadcast_params(self.template.params)
        self.d = d = sum(p.numel() for p in self.template.params)
        self.nigt = NIGT(flat_params(self.template.params), algo.lr, algo.momentum)
        self.n = n = max(1, layout.actors)
        self.rule = rule = aggregation.get(algo.aggregation)
        gspec = gradient_spec(d, len(self.groups))
        if layout.serial:
            self.links = [LocalGradLink(ctx, gspec.alloc())]
        else:
            self.links = [ActorLink(ctx, r, protocol.post_recv_gradient, gspec.alloc())
                          for r in layout.actors_of(ctx.rank)]
        for link in self.links:
            link.post()  # a gradient receive stays posted for every actor (posted again once one was handled)
        self.mine = [link.index for link in self.links]
        self.gate = (CounterGate(ctx.learner_comm, rule, n, cfg.runtime.timeout_s)
                     if self.coll.size > 1 and rule.shared_counters
                     else LocalGate(rule, n, self.mine))
        self.cur = Round(rule, n, d, self.gate)
        self.accepted_tot = np.zeros(n, np.int64)
        self.dropped_tot = np.zeros(n, np.int64)
        self.banner = f" (NIGT, {rule.name} aggregation, {n} actor(s), M={algo.batch})"
        self.wrec = weights_spec(d).alloc()
        self.M = 0

    @property
    def version(self) -> int:
        return self.nigt.round

    def prepare(self, log):
        self.log = log  # theta_0 was shared when the flow was built; rounds are NIGT's own

    def load(self, arrays):
        self.nigt.load_state_arrays(arrays)
        if len(arrays.get("grads/accepted", [])) == self.n:
            self.accepted_tot[:] = arrays["grads/accepted"]
            self.dropped_tot[:] = arrays["grads/dropped"]

    def hello(self):
        for link in self.links:
            link.hello({})

    def handout(self):
        """The next query point x_t; actors start the round while we write logs."""
        nigt = self.nigt
        self.M = self.algo.init_batch if nigt.round == 0 else self.algo.batch
        for link in self.links:  # MPI: the shared buffer is rewritten only after every previous send finished
            link.wait_sent()
        self.wrec["params"][:] = nigt.query_point().astype(np.float32)
        self.wrec["meta"][WEIGHT_INDEX["quota"]] = self.rule.quota(self.M, self.n)
        for link in self.links:
            link.send(self.wrec, nigt.round)

    def round(self) -> loop.Round:
        nigt, cur, coll, d, n = self.nigt, self.cur, self.coll, self.d, self.n
        timeout = self.ctx.cfg.runtime.timeout_s
        # accept gradients computed at x_t until the round closes
        rnd = nigt.round
        t0 = time.perf_counter()
        cur.begin(rnd, self.M)
        ep_rows = []
        steps = abandoned = errors = 0
        stop_flag = 0.0
        q = int(self.wrec["meta"][WEIGHT_INDEX["quota"]])  # per-actor quota (a quota rule: allreduce), else 0
        backoff = protocol.Backoff()
        while True:
            got = False
            for link in self.links:
                rec = link.test()
                if rec is None:
                    continue
                got = True
                m = rec["meta"]
                a, length = int(m[G["actor"]]), int(m[G["length"]])
                steps += int(m[G["env_steps"]])
                abandoned += int(m[G["abandoned"]])
                errors += int(m[G["env_errors"]])
                stop_flag = max(stop_flag, m[G["stop_requested"]])
                if length:  # else a sign of life: no trajectory, no gradient
                    cur.offer(int(m[G["round"]]), a, rec["grad"])  # dropped unless computed for this open round
                    ep_rows.append(episode_row(a, 0, length, int(m[G["round"]]), m[len(G):]))
                link.post()
            if cur.closed():
                break
            if got:
                backoff.reset()
                continue
            # every actor the round still waits for is bounded on its own: one silent actor is not hidden by the
            # others' gradients (a Malenia round needs them all; Rennala's would go on without it for ever). An
            # actor that is only slow sends signs of life between its gradients (see hpcmarl.roles.actor_work.Outbox).
            now = time.monotonic()
            for link in self.links:
                awaited = not (q and cur.agg.counts[link.index] >= q)
                if awaited and now - link.since > timeout:
                    raise protocol.CommTimeout(
                        f"timed out after {timeout:.0f}s waiting for a gradient or a sign of life from actor rank "
                        f"{link.rank} (round {rnd}, {int(cur.agg.counts.sum())} gradients accepted so far)")
            backoff.wait()
        t1 = time.perf_counter()
        # one all-reduce: [sums, per-actor counts]; the same step everywhere
        coll.t_allreduce = 0.0
        tot = coll.allreduce_sum(np.concatenate([cur.agg.local_sum(), cur.agg.counts.astype(np.float64)]))
        counts = np.rint(tot[d:d + n]).astype(np.int64)
        g = cur.agg.combine(tot[:d], counts)
        t2 = time.perf_counter()
        d_norm = nigt.step(g)
        sleep_for(self.ctx.cfg.learner.update_delay_s)  # injected update cost (0: none), counted in time/update
        t_update = time.perf_counter() - t2
        if self.algo.check_every and nigt.round % self.algo.check_every == 0:
            cs = checksum(nigt.theta)
            hi_lo = coll.max_small(np.array([cs, -cs]))
            if hi_lo[0] != -hi_lo[1]:
                raise RuntimeError(f"learners hold different parameters after round {rnd} "
                                   f"(checksums {-hi_lo[1]} .. {hi_lo[0]})")
        small = coll.sum_named({"env_steps": steps, "episodes": len(ep_rows), "abandoned": abandoned,
                                "stop": stop_flag, "round_time": t1 - t0, "env_errors": errors,
                                "dropped": cur.dropped})
        dropped = np.rint(small["dropped"]).astype(np.int64)
        self.accepted_tot += counts
        self.dropped_tot += dropped
        row = {"round": rnd, "lag_mean": 0.0, "lag_max": 0.0, "round_time": small["round_time"] / coll.size,
               "time/allreduce": coll.t_allreduce, "time/update": t_update, "grads/accepted": int(counts.sum()),
               "grads/dropped": int(dropped.sum()), "grads/abandoned": int(small["abandoned"]),
               "grad_norm": float(np.linalg.norm(g)), "direction_norm": d_norm}
        for i in range(n):
            row[f"grads/actor-{i:05d}/accepted"] = int(self.accepted_tot[i])  # cumulative
            row[f"grads/actor-{i:05d}/dropped"] = int(self.dropped_tot[i])
        return loop.Round(int(small["env_steps"]), int(small["episodes"]), int(small["env_errors"]), small["stop"] > 0,
                          row, ep_rows, discarded=int(small["abandoned"]))

    def trained_params(self) -> list:
        """What :mod:`hpcmarl.roles.finite` checks: the flat parameter vector this shell updates."""
        return [self.nigt.theta]

    def named_params(self) -> dict:
        """The parameters under their checkpoint names (``model/policies.…``)."""
        assign_flat(self.template.params, self.nigt.theta.astype(np.float32))
        state = self.template.policies.state_dict()
        return {f"model/policies.{k}": v.detach().numpy().copy() for k, v in state.items()}

    def save(self, log):
        def arrays():
            out = self.named_params()
            out.update(self.nigt.state_arrays())
            out["grads/accepted"], out["grads/dropped"] = self.accepted_tot, self.dropped_tot
            return out

        log.save_checkpoint(checksum(self.nigt.theta), arrays, self.nigt.round)

    def shutdown(self, preempted):
        for link in self.links:
            link.wait_sent()
        abandoned = sum(link.stop(self.wrec, self.nigt.round, preempted)["abandoned"] for link in self.links)
        self.gate.close()
        return abandoned

    def summary(self, discarded):
        return (f"{self.nigt.round} NIGT rounds; gradients accepted per actor {self.accepted_tot.tolist()}, "
                f"dropped {self.dropped_tot.tolist()}")

    def close(self):
        self.coll.close()


def learner_main(ctx) -> None:
    run_learner(ctx, GradientFlow(ctx))
