"""MPI role shells of the asynchronous rollout flow (MA-Trace): actors never wait for the learner.

    actor    steps its env copies with whatever weights it holds, sends an unroll (behaviour log-probs
             per agent, its policy version) from one of two send buffers and goes on; between unrolls
             it takes every WEIGHTS message that arrived (the latest version wins). It only waits
             when both of its sends are still pending (the learner's queue is full, ``queue_full:
             wait``: back-pressure).
    learner  keeps a bounded queue of unrolls (``algo.queue_size`` buffers, posted receives included);
             with ``queue_full: drop`` every actor always has a receive posted and an unroll arriving
             at a full queue is dropped (and counted). When ``algo.batch_unrolls`` unrolls are queued it
             trains on them (gradients all-reduced across learners), measures each unroll's policy lag
             (learner version - behaviour version) and pushes new weights every ``algo.push_every``
             updates without waiting for the actors (an actor still busy with the previous push gets
             the newest version when it takes it).
    stop     WEIGHTS with command STOP/PREEMPTED; the actor lets its pending sends finish and answers
             BYE {sent, discarded}; the learner drains that many unrolls.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np

from hpcmarl.algos import base as algos
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import META_INDEX, unroll_spec
from hpcmarl.models import checksum
from hpcmarl.roles.actor_work import AsyncActor, run_actor
from hpcmarl.roles.common import unroll_episodes
from hpcmarl.roles.links import ActorLink, LocalLink
from hpcmarl.roles.loop import LearnerSide, Round, run_learner
from hpcmarl.sampler import sleep_for
from hpcmarl.storage import schema

M = META_INDEX


# --------------------------------------------------------------------------------------------------
# actor
# --------------------------------------------------------------------------------------------------
def actor_main(ctx) -> None:
    run_actor(ctx, AsyncActor(ctx))


# --------------------------------------------------------------------------------------------------
# learner
# --------------------------------------------------------------------------------------------------
class UnrollQueue:
    """The learner's bounded queue of unrolls, filled from its actors' posted receives.

    ``capacity`` unrolls may wait to be trained on; in ``drop`` mode every actor keeps a receive
    posted and an unroll arriving at a full queue is dropped, otherwise an actor gets a receive only
    while a buffer is free (its synchronous send waits: back-pressure). Under MPI a receiver thread
    sweeps the links, so transfers progress while the learner trains (needs MPI_THREAD_MULTIPLE, and not
    Horovod across several learners; else the learner sweeps between updates); in serial mode a sweep collects
    the unroll in-process."""

    def __init__(self, links, pool, capacity: int, drop: bool, threaded: bool):
        self.links, self.free, self.capacity, self.drop = links, list(pool), capacity, drop
        self.items: collections.deque = collections.deque()
        self.dropped = 0
        self.cond = threading.Condition()
        self.error: Optional[BaseException] = None
        self.last = time.monotonic()
        self.stopping = False
        with self.cond:
            self._repost()
        self.thread = threading.Thread(target=self._run, name="hpcmarl-receiver", daemon=True) if threaded else None
        if self.thread is not None:
            self.thread.start()

    def _repost(self):
        for link in self.links:
            if link.posted is None and self.free:
                link.post(self.free.pop())

    def sweep(self) -> bool:
        got = False
        for link in self.links:
            rec = link.test()
            if rec is None:
                continue
            got = True
            with self.cond:
                if len(self.items) >= self.capacity:  # drop mode only: every actor keeps a receive posted
                    self.dropped += 1
                    self.free.append(rec)
                else:
                    self.items.append(rec)
                self.last = time.monotonic()
                self.cond.notify()
        with self.cond:
            self._repost()
        return got

    def _run(self):
        backoff = protocol.Backoff()
        try:
            while not self.stopping:
                if self.sweep():
                    backoff.reset()
                else:
                    backoff.wait()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which aborts the job
            with self.cond:
                self.error = e
                self.cond.notify()

    def take(self, k: int, timeout: float, idle) -> list:
        """Wait (bounded) until ``k`` unrolls are queued and pop the oldest ``k``; ``idle()`` runs while waiting."""
        while True:
            if self.thread is None:
                self.sweep()
            with self.cond:
                if self.error is not None:
                    raise RuntimeError(f"the unroll receiver failed: {self.error!r}") from self.error
                now = time.monotonic()
                for link in self.links:  # one silent actor is not hidden by the others' unrolls (checked on every
                    # take: with queue_full=drop the others can keep the queue full, so the learner never waits)
                    if link.posted is not None and now - link.since > timeout:
                        raise protocol.CommTimeout(f"timed out after {timeout:.0f}s waiting for an unroll from "
                                                   f"actor rank {link.rank} ({len(self.items)} of {k} queued)")
                if len(self.items) >= k:
                    return [self.items.popleft() for _ in range(k)]
                if now - self.last > timeout:
                    raise protocol.CommTimeout(f"timed out after {timeout:.0f}s waiting for unrolls "
                                               f"({len(self.items)} of {k} queued)")
                if self.thread is not None:
                    self.cond.wait(0.001)
            idle()

    def give_back(self, recs) -> None:
        """Buffers whose contents were used go back to the pool (and are posted again)."""
        with self.cond:
            self.free.extend(recs)
            if self.thread is None:
                self._repost()

    def close(self):
        self.stopping = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        with self.cond:
            self.items.clear()


class AsyncFlow(LearnerSide):
    """The asynchronous rollout flow in the learner loop: one round = ``algo.batch_unrolls`` unrolls from the
    queue -> one update (new weights pushed every ``algo.push_every`` updates, before the vote)."""

    def __init__(self, ctx):
        from mpi4py import MPI

        super().__init__(ctx)
        cfg, layout, algo, spec = ctx.cfg, ctx.layout, ctx.cfg.algo, ctx.env_spec
        self.tables = {"unrolls": schema.columns(schema.UNROLLS)}
        self.banner = f" (MA-Trace, correction {algo.correction}, queue {algo.queue_size}, {algo.queue_full} when full)"
        self.learner = algos.get(algo.name).make_learner(spec, algo, ctx.device, seed=cfg.seed + 7919 * ctx.rank,
                                                         init_seed=cfg.seed)
        uspec = unroll_spec(spec, algo.unroll_length, cfg.env.num_envs, algos.rnn_hidden(algo), cfg.env.parts)
        self.links = ([LocalLink(ctx)] if layout.serial
                      else [ActorLink(ctx, r, protocol.post_recv_unroll) for r in layout.actors_of(ctx.rank)])
        drop = algo.queue_full == "drop"
        self.pool = [uspec.alloc() for _ in range(algo.queue_size + (len(self.links) if drop else 0))]
        self.scratch = uspec.alloc()
        # a receiver thread sweeps the links, except beside Horovod's own MPI thread across learners: two threads
        # in MPI over TCP stalled a learner's collective (tests/cluster, MA-Trace with learners on 2 nodes)
        self.threaded = (not layout.serial and MPI.Query_thread() >= MPI.THREAD_MULTIPLE
                         and (self.coll.hvd is None or self.coll.size == 1))
        self.queue = None  # receives are posted once the actors are greeted
        self.used = []

    def load(self, arrays):
        self.learner.load_state_arrays(arrays)

    def hello(self):
        for link in self.links:
            link.hello({})

    def push(self):
        params = self.learner.policy_flat()
        for link in self.links:
            link.push(params, self.version)

    def begin(self):
        algo = self.algo
        self.queue = UnrollQueue(self.links, self.pool, algo.queue_size, algo.queue_full == "drop", self.threaded)
        self.push()

    def retry_pushes(self):
        for link in self.links:
            link.retry_push()

    def round(self) -> Round:
        coll, version = self.coll, self.version
        # a batch from the queue (actors keep stepping meanwhile)
        t0 = time.perf_counter()
        batch = self.queue.take(self.algo.batch_unrolls, self.ctx.cfg.runtime.timeout_s, self.retry_pushes)
        t1 = time.perf_counter()
        lags = [version - int(r["meta"][M["version"]]) for r in batch]
        coll.t_allreduce = 0.0
        stats = self.learner.update(batch, coll.reduce_grads)
        sleep_for(self.ctx.cfg.learner.update_delay_s)  # injected update cost (0: none), counted in time/update
        t2 = time.perf_counter()

        # bookkeeping out of the buffers, then they go back to the pool
        ep_rows = [row for r in batch for row in unroll_episodes(r)]
        local = {"env_steps": sum(r["meta"][M["env_steps"]] for r in batch), "episodes": len(ep_rows),
                 "unrolls": len(batch), "lag": sum(lags),
                 "stop": float(any(r["meta"][M["stop_requested"]] for r in batch)),
                 "t_wait_unrolls": t1 - t0, "t_update": t2 - t1, "t_allreduce": coll.t_allreduce,
                 "t_backpressure": sum(r["meta"][M["t_wait"]] for r in batch), "queue_dropped": self.queue.dropped,
                 "env_errors": sum(r["meta"][M["env_errors"]] for r in batch),
                 "stats": [stats.get(k, 0.0) for k in sorted(stats)]}
        lag_max = coll.max_small(np.array([max(lags)]))[0]
        self.used = [(int(r["meta"][M["actor"]]), int(r["meta"][M["version"]]), lag) for r, lag in zip(batch, lags)]
        self.queue.give_back(batch)  # MPI: posted again; nothing may read these buffers afterwards
        self.version += 1
        if self.version % self.algo.push_every == 0:
            self.push()
        tot = coll.sum_named(local)
        unrolls = max(1, tot["unrolls"])
        row = {"lag_mean": tot["lag"] / unrolls, "lag_max": lag_max, "queue_dropped": tot["queue_dropped"],
               "queue_length": len(self.queue.items), "updates_per_s": 1.0 / max(1e-9, (t2 - t0)),
               "time/wait_unrolls": tot["t_wait_unrolls"] / coll.size, "time/update": tot["t_update"] / coll.size,
               "time/allreduce": tot["t_allreduce"] / coll.size,
               "time/actor_backpressure": tot["t_backpressure"] / unrolls}
        for k, v in zip(sorted(stats), tot["stats"]):
            row[k] = v / coll.size
        return Round(int(tot["env_steps"]), int(tot["episodes"]), int(tot["env_errors"]), tot["stop"] > 0, row,
                     ep_rows)

    def rows(self, stop_reason, checkpoint_due):
        c = self.log.counters
        return {"unrolls": [(c["update"], a, v, lag, c["env_steps"], c["wall_time"]) for a, v, lag in self.used]}

    def save(self, log):
        log.save_checkpoint(checksum(np.concatenate([p.detach().cpu().numpy().ravel() for p in self.learner.params])),
                            self.learner.state_arrays, self.version)

    def shutdown(self, preempted):
        self.queue.close()
        return sum(link.stop(link.wrec, self.version, preempted, scratch=self.scratch)["discarded"]
                   for link in self.links)

    def summary(self, discarded):
        return f"{self.queue.dropped} unroll(s) dropped at a full queue"

    def close(self):
        self.coll.close()


def learner_main(ctx) -> None:
    run_learner(ctx, AsyncFlow(ctx))
